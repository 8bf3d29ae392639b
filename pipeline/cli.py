"""``starcompactor`` command line: one subcommand per job."""
import argparse
import logging
import os
import signal
import sys
import threading

from starcompactor.pipeline.errors import UserError

DEBUG_ENV = 'STARCOMPACTOR_DEBUG'
DEMO_DUMP = os.path.join(os.path.dirname(__file__), 'demo',
                         'nova-demo.sql.gz')

USAGE = """usage: starcompactor COMMAND [OPTIONS]

commands:
  demo        trace and report of the bundled demo history (no server)
  instances   extract the instance-event trace from Nova databases
  verify      check a trace's files for raw identities and the key
  report      statistics and plots of a trace (HTML and JSON)
  synth       write a synthetic Nova history (MySQL or a dump file)

Run 'starcompactor COMMAND --help' for its options."""


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


_interrupted = threading.Event()


def _on_interrupt(signum, frame):
    """Ctrl-C. Remembered: Beam reports a KeyboardInterrupt raised inside a
    running step as that step's failure (a RuntimeError)."""
    _interrupted.set()
    raise KeyboardInterrupt


def _thread_failed(args, default=threading.excepthook):
    """After Ctrl-C, Beam's threads fail too (e.g. 'run_worker' on its
    worker process's exit): the one line of main() tells it all."""
    if not _interrupted.is_set():
        default(args)


def handle_interrupts():
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


def _instances(argv):
    from starcompactor.pipeline import instances
    from starcompactor.pipeline.options import (
        InstancesOptions, NovaSourceOptions)
    parser = argparse.ArgumentParser(
        prog='starcompactor instances',
        description='Extract an anonymized instance-event trace from Nova.',
        epilog='Any Apache Beam pipeline option (--runner, '
               '--direct_num_workers, --direct_running_mode, ...) is accepted '
               'too.')
    NovaSourceOptions._add_argparse_args(parser)
    InstancesOptions._add_argparse_args(parser)
    parser.parse_known_args(argv)   # --help, and errors in our own options
    instances.run(argv)


def _synth(argv):
    from starcompactor import synth
    synth.run(synth.argument_parser().parse_args(argv))


def _demo(argv):
    """The main job on its embedded default: the bundled synthetic history
    (a mysqldump file made by ``starcompactor synth``), then its report."""
    from starcompactor import report
    from starcompactor.pipeline import instances
    parser = argparse.ArgumentParser(
        prog='starcompactor demo',
        description='Trace and report of the bundled demo Nova history.')
    parser.add_argument('--output', default=os.path.join('out', 'demo',
                                                         'trace'))
    args, beam_args = parser.parse_known_args(argv)
    instances.run(['--dump', DEMO_DUMP, '--output', args.output,
                   '--overwrite', '--formats', 'csv,avro,jsonl', *beam_args])
    report.main([args.output])


def _report(argv):
    from starcompactor import report
    report.main(argv)


def _verify(argv):
    from apache_beam.options.pipeline_options import PipelineOptions
    from starcompactor.pipeline import leaks, shards, sources
    from starcompactor.pipeline.options import NovaSourceOptions
    from starcompactor.transforms import mask
    parser = argparse.ArgumentParser(
        prog='starcompactor verify',
        description='Check every file of a trace for raw identities of the '
                    'source and for the masking key; exit 1 on any hit.')
    parser.add_argument('prefix', help='the trace, as given to --output')
    parser.add_argument('--mask-key-file', dest='mask_key_file',
                        help='the key the trace was masked with, if one was '
                             f'supplied (or ${mask.KEY_ENV})')
    NovaSourceOptions._add_argparse_args(parser)
    args, _ = parser.parse_known_args(argv)
    paths = shards.find(args.prefix)
    if not paths:
        raise UserError(f'no trace files at {args.prefix}')
    source_flags = [a for a in argv if a != args.prefix]
    source = sources.nova_source(PipelineOptions(source_flags))
    try:
        found = leaks.check(paths, source,
                            mask.key_source_for(args.mask_key_file))
    except mask.MaskKeyError as e:
        raise UserError(str(e))
    for leak in found[:20]:
        print(f'LEAK {leak}')
    if found:
        raise UserError(f'{len(found)} leaks in {len(paths)} files')
    print(f'verify: {len(paths)} files checked, no raw identity and no key '
          f'found')


COMMANDS = {'demo': _demo, 'instances': _instances, 'verify': _verify,
            'synth': _synth, 'report': _report}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    configure_logging()
    handle_interrupts()
    try:
        COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        print(f'starcompactor: error: {e}', file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print('starcompactor: interrupted; no trace written', file=sys.stderr)
        return 130
    except Exception as e:   # a failed run: one line (set DEBUG for more)
        if _interrupted.is_set():
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
