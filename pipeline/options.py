"""Command-line options of ``starcompactor instances``, as Beam options.

Any standard Beam option (``--runner``, ``--direct_num_workers``, ...) may be
given beside them. No option carries a secret: the database password and the
masking key are read from files or the environment, never from arguments.
"""
import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from starcompactor.pipeline.sinks import DEFAULT_FORMATS
from starcompactor.transforms.mask import HMAC_SHA256, KEY_ENV, MASK_METHODS


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
                         help='read servers, actions and events through the '
                              'compute API instead of the databases')
        api.add_argument('--osrc', metavar='FILE',
                         help='openrc file to take OS_* variables from (read, '
                              'not run)')
        api.add_argument('--os-cloud', dest='os_cloud', metavar='NAME',
                         help='cloud in clouds.yaml ($OS_CLIENT_CONFIG_FILE, '
                              './, ~/.config/openstack/, /etc/openstack/)')
        api.add_argument('--api-page-size', dest='api_page_size',
                         type=positive_number, default=1000,
                         help='servers (and actions) per listing page; the '
                              'cloud may cap it (Nova\'s default max_limit '
                              'is 1000)')
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
            help='comma-separated, of csv, avro, jsonl')
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
