"""Command-line options of ``starcompactor instances``, as Beam options.

Any standard Beam option (``--runner``, ``--direct_num_workers``, ...) may be
given beside them. No option carries a secret: the database password and the
masking key are read from files or the environment, never from arguments.
"""
import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from starcompactor.pipeline.sinks import DEFAULT_FORMATS
from starcompactor.transforms.mask import HMAC_SHA256, KEY_ENV, MASK_METHODS
from starcompactor.transforms.baremetal import INSTANCE_TYPES, VM
from starcompactor.transforms.nodes import (
    DEFAULT_NODE_PROPERTIES, RACK_PROPERTY)
from starcompactor.transforms.schema import TRACE_FORMATS, V02


def whole_number(text):
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number '
                                         f'(0, 1, 2, ...)')
    return value


def positive_number(text):
    """argparse type: an integer >= 1."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not 1 or more')
    return value


def positive_rate(text):
    """argparse type: a number > 0 (requests per second)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number above 0')
    return value


class NovaSourceOptions(PipelineOptions):
    """Where Nova's tables come from, and which rows of them."""

    @classmethod
    def _add_argparse_args(cls, parser):
        source = parser.add_argument_group('source: Nova databases')
        source.add_argument('--mysql-host', dest='mysql_host',
                            default='127.0.0.1', help='MySQL/MariaDB server')
        source.add_argument('--mysql-port', dest='mysql_port', type=int,
                            default=3306, help='its port')
        source.add_argument('--mysql-user', dest='mysql_user', default='root',
                            help='a user allowed to SELECT the Nova tables')
        source.add_argument(
            '--mysql-password-file', dest='mysql_password_file',
            help='file holding the password; else $MYSQL_PWD, else the '
                 '[client] section of ~/.my.cnf')
        source.add_argument(
            '--databases',
            help='comma-separated Nova cell databases, e.g. '
                 'nova_cell0,nova_cell1 (default: nova; with --dump, every '
                 'database in the dump)')
        source.add_argument(
            '--dump', nargs='+', metavar='FILE',
            help='read mysqldump/mariadb-dump files (plain, .gz, .bz2, .xz) '
                 'instead of a server')
        source.add_argument(
            '--audit-dir', dest='audit_dirs', action='append',
            metavar='DIR',
            help='read the audit-table exports (openstack_audit.audit_nova_'
                 '*.parquet) in DIR instead of a server, the rows as of the '
                 'cut; once per Nova database (repeatable)')
        source.add_argument(
            '--no-archived', dest='archived', action='store_false',
            help='skip the shadow_ tables (rows moved there by '
                 'nova-manage db archive_deleted_rows)')
        source.add_argument(
            '--start', help='only events starting at or after this '
                            'ISO-8601 time (UTC unless a zone is given)')
        source.add_argument('--end', help='only events starting before this '
                                          'ISO-8601 time')
        api = parser.add_argument_group(
            'source: the Nova compute API (Keystone v3; credentials from '
            'the OS_* environment unless --osrc or --os-cloud)')
        api.add_argument('--api', action='store_true',
                         help='read servers, actions and events (for hosts: '
                              'hypervisors and services) through the '
                              'compute API instead of the databases')
        api.add_argument('--osrc', metavar='FILE',
                         help='openrc file to take OS_* variables from (read, '
                              'not run)')
        api.add_argument('--os-cloud', dest='os_cloud', metavar='NAME',
                         help='cloud in clouds.yaml ($OS_CLIENT_CONFIG_FILE, '
                              './, ~/.config/openstack/, /etc/openstack/)')
        api.add_argument('--api-page-size', dest='api_page_size',
                         type=positive_number, default=1000,
                         help='servers (actions, hypervisors) per listing '
                              'page; the cloud may cap it (Nova\'s default '
                              'max_limit is 1000)')
        api.add_argument('--api-concurrency', dest='api_concurrency',
                         type=positive_number, default=16,
                         help='requests in flight per worker (lower it, or '
                              'set --api-rate, to spare a busy cloud)')
        api.add_argument('--api-rate', dest='api_rate', type=positive_rate,
                         help='at most this many new requests per second '
                              'per worker')


class InstancesOptions(PipelineOptions):
    """What the instance-event trace looks like and where it goes."""

    @classmethod
    def _add_argparse_args(cls, parser):
        trace = parser.add_argument_group('trace')
        trace.add_argument('--output', help='prefix of the files written, '
                                            'e.g. out/trace')
        trace.add_argument(
            '--formats', default=','.join(DEFAULT_FORMATS),
            help='comma-separated, of csv, avro, jsonl, parquet')
        trace.add_argument('--overwrite', action='store_true',
                           help='replace a trace already at --output')
        trace.add_argument('--num-shards', dest='num_shards',
                           type=whole_number, default=0,
                           help='files per format (0: let the runner decide)')
        trace.add_argument(
            '--epoch', help='ISO-8601 time that *_SEC count from (default: '
                            'the earliest event start in the trace)')
        trace.add_argument(
            '--mask-method', dest='mask_method', default=HMAC_SHA256,
            choices=MASK_METHODS,
            help="'none' writes raw identities: for debugging only")
        trace.add_argument(
            '--mask-key-file', dest='mask_key_file',
            help=f'file holding the masking key (else ${KEY_ENV}, else a '
                 f'random key drawn for this run and never stored)')
        trace.add_argument('--mask-uuid', dest='mask_uuid',
                           action='store_true',
                           help='mask instance uuids too')
        trace.add_argument(
            '--no-leak-check', dest='leak_check', action='store_false',
            help='skip the check, after writing, that a sample of the trace '
                 'holds no raw identity and not the key')
        trace.add_argument(
            '--buckets', type=whole_number, default=0,
            help='hash buckets of the join (0: from the data size)')
        # nargs='?': an option given without values is a one-line UserError
        # (InstancesJob), as an empty entry is.
        trace.add_argument(
            '--exclude-users', dest='exclude_users', nargs='?', const='',
            metavar='U1,U2',
            help='leave out the instances of these users (raw user_id '
                 'values of Nova\'s instances table), counted as '
                 'excluded_user')
        trace.add_argument(
            '--exclude-projects', dest='exclude_projects', nargs='?',
            const='', metavar='P1,P2',
            help='leave out the instances of these projects (raw '
                 'project_id values), counted as excluded_project')
        trace.add_argument(
            '--trace-format', dest='trace_format', default=V02,
            choices=TRACE_FORMATS,
            help='the published format: v0.2 (MEMORY_MB, DISK_GB, VCPUS; '
                 'hosts: RACK and capacities) or v0.3 (one PROPERTIES '
                 'column, a JSON object, instead)')


class BareMetalOptions(PipelineOptions):
    """Bare-metal clouds: Nova with the Ironic driver, reserved through
    Blazar."""

    @classmethod
    def _add_argparse_args(cls, parser):
        bare = parser.add_argument_group(
            'bare metal (Nova with Ironic, Blazar reservations)')
        bare.add_argument(
            '--instance-type', dest='instance_type', default=VM,
            choices=INSTANCE_TYPES,
            help='baremetal: the physical host of an instance is its Ironic '
                 'node (instances.node); auto: per instance, by its compute '
                 "node's hypervisor_type ('ironic')")
        bare.add_argument(
            '--ironic-database', dest='ironic_database', metavar='NAME',
            help="Ironic's database (on the server, or in the dumps): the "
                 'host table is then the Ironic nodes')
        bare.add_argument(
            '--blazar-database', dest='blazar_database', metavar='NAME',
            help="Blazar's database: each bare-metal instance's lease (v0.3 "
                 "PROPERTIES), the nodes' capabilities")
        bare.add_argument(
            '--properties', default=','.join(DEFAULT_NODE_PROPERTIES),
            metavar='P1,P2',
            help='node capabilities (Blazar property names) whose changes '
                 'are UPDATE events and which v0.3 PROPERTIES hold; '
                 f'{RACK_PROPERTY} is published as rack, an index')


class HostsOptions(PipelineOptions):
    """What only the host (machine) event trace needs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        hosts = parser.add_argument_group('host trace')
        hosts.add_argument(
            '--rack-regex', dest='rack_regex',
            help='regular expression on the host name whose first group (or '
                 'whole match) is the rack; RACK is its index among the '
                 'sorted distinct racks')


_UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}


def duration(text):
    """argparse type: a duration above 0, ``30s``, ``10m``, ``1h``, ``1d``
    (a bare number: seconds) -> seconds."""
    number, unit = text[:-1], text[-1:]
    if unit.isdigit():
        number, unit = text, 's'
    try:
        seconds = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        seconds = 0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a duration such as 30s, 10m, 1h or 1d')
    return seconds


def stop_rule(text):
    """argparse type: a duration (``duration``) or ``N-events``; kept as
    written (``pipeline.follow`` reads it)."""
    count, _, unit = text.partition('-')
    if unit == 'events':
        positive_number(count)
    else:
        duration(text)
    return text


class FollowOptions(PipelineOptions):
    """``instances --follow``: the trace kept up to date, window by window."""

    @classmethod
    def _add_argparse_args(cls, parser):
        follow = parser.add_argument_group(
            'following the databases (instances --follow)')
        follow.add_argument(
            '--follow', action='store_true',
            help='keep polling the databases and write the trace window by '
                 'window (a streaming pipeline); needs --state, --epoch and '
                 'a mask key (--mask-key-file or $STARCOMPACTOR_MASK_KEY); '
                 '--output is then a folder')
        follow.add_argument(
            '--state', metavar='DIR',
            help='folder holding where the poll is, saved each time a '
                 'window is written; a run resumes from it')
        follow.add_argument(
            '--poll-interval', dest='poll_interval', type=duration,
            default=60.0, metavar='DURATION',
            help='time between polls once the history is read, e.g. 10s')
        follow.add_argument(
            '--window', type=duration, default=3600.0, metavar='DURATION',
            help='length of a window, e.g. 1m, 1h, 1d: one set of files each')
        follow.add_argument(
            '--stop-after', dest='stop_after', type=stop_rule,
            metavar='DURATION|N-events',
            help='end the run this long after its first poll, or once this '
                 'many trace rows are made (default: run until interrupted)')
        follow.add_argument(
            '--since', metavar='ISO',
            help='with a new --state: only events finished after this time '
                 '(e.g. the cut of a batch trace); default: the whole history')
        follow.add_argument(
            '--overlap', type=duration, default=30.0, metavar='DURATION',
            help='how late a commit may come and still be read (ids are '
                 'read again for this long) and land in its window')
        follow.add_argument(
            '--poll-batch', dest='poll_batch', type=positive_number,
            default=50_000, metavar='N',
            help='event ids read per poll and database while the history '
                 'is read')
