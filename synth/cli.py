"""``starcompactor synth``: a synthetic history into MySQL or a dump file."""
from starcompactor.pipeline.arguments import StrictParser
from starcompactor.pipeline.errors import UserError
from starcompactor.synth.dump_writer import write_dump
from starcompactor.synth.model import DEFAULT_CELLS, instances_for_events
from starcompactor.synth.mysql_loader import load_mysql


def argument_parser():
    parser = StrictParser(
        prog='starcompactor synth',
        description='Write a synthetic, deterministic Nova history (cell '
                    'databases with instances, actions and events, live and '
                    'archived) into MySQL/MariaDB or a mysqldump file.')
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
    parser.add_argument('--archive-fraction', type=float, default=0.5,
                        help='instances deleted in this first fraction of '
                             'the span are archived into shadow_ tables')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--dump', help='write FILE.sql or FILE.sql.gz')
    target.add_argument('--mysql-host', help='load into this server')
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
    options = dict(seed=args.seed, start=args.start, days=args.days,
                   cells=[c.strip() for c in args.cells.split(',')
                          if c.strip()],
                   archive_fraction=args.archive_fraction)
    if args.events is not None:
        if args.events < 0:
            raise UserError('--events must be >= 0')
        instances = instances_for_events(args.events, **options)
    else:
        instances = args.instances
        if instances < 0:
            raise UserError('--instances must be >= 0')
    if args.dump:
        result = write_dump(args.dump, instances, **options)
        where = args.dump
    else:
        result, where = _load_server(args, instances, options)
    print(f'synth: wrote {result.summary(where)}')
    return result


def _load_server(args, instances, options):
    """``load_mysql`` on the server the arguments name; (result, where)."""
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
        return load_mysql(connection, instances, **options), \
            server.describe()
    except pymysql.err.MySQLError as e:
        raise server.error(e) from None
    finally:
        connection.close()
