"""``starcompactor synth``: a synthetic history into MySQL, a dump file or
audit-table exports."""
from starcompactor.pipeline.arguments import StrictParser
from starcompactor.pipeline.errors import UserError
from starcompactor.synth.audit_writer import TRIGGERS_AT, write_audit
from starcompactor.synth.baremetal import (
    EVENTS_PER_INSTANCE as BAREMETAL_EVENTS_PER_INSTANCE, BareMetalHistory)
from starcompactor.synth.baremetal_writer import (
    load_baremetal_mysql, write_baremetal_dump)
from starcompactor.synth.dump_writer import write_dump
from starcompactor.synth.model import DEFAULT_CELLS, instances_for_events
from starcompactor.synth.mysql_loader import load_mysql


def argument_parser():
    parser = StrictParser(
        prog='starcompactor synth',
        description='Write a synthetic, deterministic Nova history (cell '
                    'databases with instances, actions and events, live and '
                    'archived) into MySQL/MariaDB, a mysqldump file or '
                    'audit-table exports.')
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument('--instances', type=int, help='instances to create')
    size.add_argument('--events', type=int,
                      help='about this many events (instances are derived)')
    parser.add_argument('--seed', type=int, default=0,
                        help='the same seed gives the same history')
    parser.add_argument('--start', default='2015-09-01',
                        help='start of the history (ISO date, UTC)')
    parser.add_argument('--days', type=float, default=365,
                        help='length of the history in days')
    parser.add_argument('--cells', default=','.join(DEFAULT_CELLS),
                        help='cell databases, cell0 first; they are dropped '
                             'and recreated')
    parser.add_argument(
        '--baremetal', action='store_true',
        help='a bare-metal cloud instead: Nova with Ironic nodes, reserved '
             'through Blazar (databases ironic and blazar besides the '
             'cells; see synth/baremetal.py)')
    parser.add_argument('--archive-fraction', type=float, default=0.5,
                        help='instances deleted in this first fraction of '
                             'the span are archived into shadow_ tables')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--dump', help='write FILE.sql or FILE.sql.gz')
    target.add_argument('--mysql-host', help='load into this server')
    target.add_argument(
        '--audit-dir', metavar='DIR',
        help='write audit-table exports (openstack_audit.audit_nova_'
             '*.parquet), as MySQL triggers and a back-fill record the '
             'history, into DIR/<cell database>/')
    parser.add_argument(
        '--audit-triggers-at', dest='audit_triggers_at', type=float,
        default=TRIGGERS_AT,
        help='with --audit-dir: the triggers and the back-fill came at this '
             'fraction of the span; what happened before is back-filled')
    parser.add_argument('--mysql-port', type=int, default=3306,
                        help='port of the server')
    parser.add_argument('--mysql-user', default='root',
                        help='a user allowed to create databases')
    parser.add_argument('--mysql-password-file',
                        help='file holding the password (else MYSQL_PWD or '
                             '~/.my.cnf)')
    return parser


def main(argv):
    """``starcompactor synth ARGS``."""
    return run(argument_parser().parse_strict(argv))


def run(args):
    """Run ``starcompactor synth`` with parsed ``args``; prints a summary."""
    if not args.days > 0:
        raise UserError('--days must be > 0')
    if not 0 <= args.archive_fraction <= 1:
        raise UserError('--archive-fraction must be within 0..1')
    if not 0 <= args.audit_triggers_at <= 1:
        raise UserError('--audit-triggers-at must be within 0..1')
    options = dict(seed=args.seed, start=args.start, days=args.days,
                   cells=[c.strip() for c in args.cells.split(',')
                          if c.strip()],
                   archive_fraction=args.archive_fraction)
    if args.events is not None:
        if args.events < 0:
            raise UserError('--events must be >= 0')
        instances = (args.events // BAREMETAL_EVENTS_PER_INSTANCE
                     if args.baremetal
                     else instances_for_events(args.events, **options))
    else:
        instances = args.instances
        if instances < 0:
            raise UserError('--instances must be >= 0')
    if args.baremetal:
        result, where = _baremetal(args, instances, options)
    elif args.dump:
        result = write_dump(args.dump, instances, **options)
        where = args.dump
    elif args.audit_dir:
        result = write_audit(args.audit_dir, instances,
                             triggers_at=args.audit_triggers_at, **options)
        where = f'{args.audit_dir} as audit exports'
    else:
        result, where = _load_server(
            args, lambda connection: load_mysql(connection, instances,
                                                **options))
    print(f'synth: wrote {result.summary(where)}')
    return result


def _baremetal(args, instances, options):
    """A bare-metal cloud, into a dump or a server; (result, where)."""
    if args.audit_dir:
        raise UserError('--baremetal writes a dump or a server; audit '
                        'exports hold Nova tables only')
    history = BareMetalHistory(instances, **options)
    if args.dump:
        return write_baremetal_dump(args.dump, history), args.dump
    return _load_server(
        args, lambda connection: load_baremetal_mysql(connection, history))


def _load_server(args, load):
    """``load(connection)`` on the server the arguments name; (result,
    where)."""
    # Imported here: the MySQL source's package loads Beam, which a dump
    # does not need.
    import pymysql
    from starcompactor.pipeline.sources.mysql_connection import (
        MySQLConnection)
    server = MySQLConnection(host=args.mysql_host, port=args.mysql_port,
                             user=args.mysql_user,
                             password_file=args.mysql_password_file)
    try:
        connection = pymysql.connect(
            host=server.host, port=server.port, user=server.user,
            password=server.password(), charset='utf8mb4',
            connect_timeout=server.connect_timeout, local_infile=True,
            autocommit=True)
    except pymysql.err.MySQLError as e:
        raise server.error(e) from None
    try:
        return load(connection), server.describe()
    except pymysql.err.MySQLError as e:
        raise server.error(e) from None
    finally:
        connection.close()
