"""``starcompactor`` command line: one subcommand per job."""
import logging
import os
import signal
import sys
import threading

from starcompactor import __version__
from starcompactor.pipeline.arguments import StrictParser, did_you_mean
from starcompactor.pipeline.errors import UserError, interrupted

DEBUG_ENV = 'STARCOMPACTOR_DEBUG'
DEMO_DUMP = os.path.join(os.path.dirname(__file__), 'demo',
                         'nova-demo.sql.gz')

USAGE = """usage: starcompactor COMMAND [OPTIONS]

commands:
  demo        trace and report of the bundled demo history (no server)
  instances   extract the instance-event trace from Nova databases
  hosts       extract the host (machine) event trace from Nova databases
  trace       both tables, instance and host events, in one run, one key
  verify      check a trace's files for raw identities and the key
  report      statistics and plots of a trace (HTML and JSON)
  synth       write a synthetic Nova history (MySQL or a dump file)

Run 'starcompactor COMMAND --help' for its options, 'starcompactor
--version' for the versions."""


class _Quiet(logging.Filter):
    """Beam warns at import about Google Cloud clients nobody here uses, and
    logs a worker's failure with its traceback before the run raises it: the
    CLI reports that failure itself, in one line."""

    def filter(self, record):
        if 'apitools not found' in record.getMessage():
            return False
        if record.name.startswith('apache_beam') and record.exc_info:
            record.exc_info, record.exc_text = None, None
            return record.levelno < logging.ERROR
        return True


def _on_interrupt(signum, frame):
    """Ctrl-C. Remembered: Beam reports a KeyboardInterrupt raised inside a
    running step as that step's failure (a RuntimeError)."""
    interrupted.set()
    raise KeyboardInterrupt


def _thread_failed(args, default=threading.excepthook):
    """After Ctrl-C, Beam's threads fail too (e.g. 'run_worker' on its
    worker process's exit): the one line of main() tells it all."""
    if not interrupted.is_set():
        default(args)


def handle_interrupts():
    interrupted.clear()     # a new command (tests run several in a process)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
        threading.excepthook = _thread_failed


def configure_logging():
    # Before Beam is imported: its import-time warning would otherwise
    # configure the root logger its own way.
    logging.basicConfig(level=logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Quiet())
    logging.getLogger('starcompactor').setLevel(logging.INFO)


def _instances_parser(prog='starcompactor instances'):
    from starcompactor.pipeline.options import (
        BareMetalOptions, InstancesOptions, NovaSourceOptions)
    parser = StrictParser(
        prog=prog,
        description='Extract an anonymized instance-event trace from Nova.',
        epilog='Any Apache Beam pipeline option (--runner, '
               '--direct_num_workers, --direct_running_mode, ...) is accepted '
               'too.')
    NovaSourceOptions._add_argparse_args(parser)
    InstancesOptions._add_argparse_args(parser)
    BareMetalOptions._add_argparse_args(parser)
    return parser


def _instances(argv):
    from starcompactor.pipeline import follow, instances, runners
    from starcompactor.pipeline.options import FollowOptions
    runners.load_runner_options(argv)
    parser = _instances_parser()
    FollowOptions._add_argparse_args(parser)
    args = parser.parse_strict(argv, beam_options=True)
    if args.follow:
        if (args.trace_format, args.instance_type) != ('v0.2', 'vm') or \
                args.blazar_database or args.ironic_database:
            raise UserError('--follow writes v0.2 traces of virtual '
                            'machines: drop --trace-format, --instance-type '
                            'and the Ironic and Blazar databases')
        follow.run(argv)
        return
    follow.refuse_follow_options(args)
    instances.run(argv)


def _hosts(argv):
    from starcompactor.pipeline import hosts, runners
    from starcompactor.pipeline.options import HostsOptions
    runners.load_runner_options(argv)
    parser = _instances_parser('starcompactor hosts')
    parser.description = ('Extract an anonymized host (machine) event trace '
                          'from Nova: one database, or a series of dumps.')
    HostsOptions._add_argparse_args(parser)
    parser.parse_strict(argv, beam_options=True)
    hosts.run(argv)


def _trace(argv):
    from starcompactor.pipeline import runners, trace
    from starcompactor.pipeline.options import HostsOptions
    runners.load_runner_options(argv)
    parser = _instances_parser('starcompactor trace')
    parser.description = ('Extract both tables of an anonymized trace, '
                          'instance events and host (machine) events, in '
                          'one run under one masking key: PREFIX-instances '
                          'and PREFIX-hosts.')
    HostsOptions._add_argparse_args(parser)
    parser.parse_strict(argv, beam_options=True)
    trace.run(argv)


def _synth(argv):
    from starcompactor import synth
    synth.main(argv)


def _demo(argv):
    """The main job on its embedded default: the bundled synthetic history
    (a mysqldump file made by ``starcompactor synth``), then its report."""
    from starcompactor import report
    from starcompactor.pipeline import instances, runners, shards
    runners.load_runner_options(argv)
    parser = StrictParser(
        prog='starcompactor demo',
        description='Trace and report of the bundled demo Nova history '
                    '(replaces the trace of an earlier demo at --output).',
        epilog='Any Apache Beam pipeline option is accepted too.')
    parser.add_argument('--output', default=os.path.join('out', 'demo',
                                                         'trace'),
                        help='prefix of the files written')
    parser.parse_strict(argv, beam_options=True)
    args, beam_args = parser.parse_known_args(argv)
    if shards.find(args.output):
        print(f'starcompactor demo: replacing the trace at {args.output}',
              file=sys.stderr)
    instances.run(['--dump', DEMO_DUMP, '--output', args.output,
                   '--overwrite', '--formats', 'csv,avro,jsonl', *beam_args])
    report.main([args.output])


def _report(argv):
    from starcompactor import report
    report.main(argv)


def _verify(argv):
    from apache_beam.options.pipeline_options import PipelineOptions
    from starcompactor.pipeline import leaks, shards, sources
    from starcompactor.pipeline.hosts import HostsJob
    from starcompactor.pipeline.instances import InstancesJob
    from starcompactor.pipeline.options import NovaSourceOptions
    from starcompactor.transforms import mask
    parser = StrictParser(
        prog='starcompactor verify',
        description='Check every file of a trace for raw identities of the '
                    'source it was made from, and for the masking key; exit '
                    '1 on any hit.')
    parser.add_argument('prefix', help='the trace, as given to --output '
                                       '(of instances --follow: its folder)')
    parser.add_argument('--mask-key-file', dest='mask_key_file',
                        help='the key the trace was masked with, if one was '
                             f'supplied (or ${mask.KEY_ENV})')
    NovaSourceOptions._add_argparse_args(parser)
    parser.add_argument('--ironic-database', metavar='NAME',
                        help="Ironic's database (bare metal): look for its "
                             'node uuids too')
    parser.add_argument('--blazar-database', metavar='NAME',
                        help="Blazar's database (bare metal): look for its "
                             'hosts\' node uuids and its lease ids too')
    args = parser.parse_strict(argv)
    if not (args.dump or args.databases or args.api or args.audit_dirs):
        raise UserError('verify compares a trace with the source it was made '
                        'from: give --dump FILE..., --databases DB,... '
                        '(with --mysql-host, --mysql-user, ...), --api or '
                        '--audit-dir DIR')
    # A folder of instances --follow: the files of its windows.
    paths = shards.find(args.prefix) or [
        path for _, path in shards.window_files(args.prefix)]
    if not paths:
        raise UserError(f'no trace files at {args.prefix} '
                        f'({args.prefix}{shards.SHARD_TEMPLATE}.csv, ...)')
    key_source = mask.key_source_for(args.mask_key_file)
    try:
        key = None if key_source.kind == 'random' else mask.load_key(
            key_source)
    except mask.MaskKeyError as e:
        raise UserError(str(e))
    # The trace's kind says which source tables hold its identities.
    jobs = (InstancesJob, HostsJob)
    kinds = {table: job for job in jobs for table in job.trace_tables}
    source_tables = kinds[shards.trace_table(paths, list(kinds))].source_tables
    source_flags = [a for a in argv if a != args.prefix]
    raw = set()
    for source in sources.identity_sources(PipelineOptions(source_flags),
                                           source_tables):
        identities = source.raw_identities()
        if not identities:     # e.g. a misspelled database in a dump
            raise UserError(f'{source.about()} holds no identity to look '
                            f'for: check the database names given')
        raw |= identities
    found = leaks.find_leaks(paths, raw, key)
    for leak in found[:20]:
        print(f'LEAK {leak}')
    if found:
        raise UserError(f'{len(found)} leaks in {len(paths)} files')
    print(f'verify: {len(paths)} files checked, no raw identity and no key '
          f'found')


COMMANDS = {'demo': _demo, 'instances': _instances, 'hosts': _hosts,
            'trace': _trace,
            'verify': _verify,
            'synth': _synth, 'report': _report}


def _version():
    from importlib.metadata import version
    return (f'starcompactor {__version__} (apache-beam {version("apache-beam")},'
            f' Python {sys.version.split()[0]})')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == '--version':
        print(_version())
        return 0
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    if argv[0] not in COMMANDS:
        print(f'starcompactor: error: unknown command {argv[0]!r}'
              f'{did_you_mean(argv[0], COMMANDS)}', file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    configure_logging()
    handle_interrupts()
    try:
        COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        # One write: a runner's log thread may still be writing lines.
        sys.stderr.write(f'{e.command}: error: {e}\n')
        return e.exit_status
    except KeyboardInterrupt:
        print('starcompactor: interrupted; no trace written', file=sys.stderr)
        return 130
    except Exception as e:   # a failed run: one line (set DEBUG for more)
        if interrupted.is_set():
            print('starcompactor: interrupted; no trace written',
                  file=sys.stderr)
            return 130
        if os.environ.get(DEBUG_ENV):
            raise
        first_line = (str(e).strip().splitlines() or [''])[0]
        print(f'starcompactor: error: the run failed: {type(e).__name__}: '
              f'{first_line} (set {DEBUG_ENV}=1 for the traceback)',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
