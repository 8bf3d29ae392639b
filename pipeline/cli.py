"""``starcompactor`` command line: one subcommand per job."""
import argparse
import logging
import sys

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.options import InstancesOptions

USAGE = """usage: starcompactor COMMAND [OPTIONS]

commands:
  instances   extract the instance-event trace from Nova databases

Run 'starcompactor COMMAND --help' for its options."""


def _instances(argv):
    parser = argparse.ArgumentParser(
        prog='starcompactor instances',
        description='Extract an anonymized instance-event trace from Nova.',
        epilog='Any Apache Beam pipeline option (--runner, '
               '--direct_num_workers, --direct_running_mode, ...) is accepted '
               'too.')
    InstancesOptions._add_argparse_args(parser)
    parser.parse_known_args(argv)   # --help, and errors in our own options
    from starcompactor.pipeline import instances
    instances.run(argv)


COMMANDS = {'instances': _instances}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    logging.basicConfig(level=logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('starcompactor').setLevel(logging.INFO)
    try:
        COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        print(f'starcompactor: error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('starcompactor: interrupted; no trace written', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
