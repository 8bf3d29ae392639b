"""What a user sees for bad input: one line naming the problem in the
user's terms, exit status 2 (command line) or 1 (input), and nothing
written; and what every run leaves behind (only its trace)."""
import os
import subprocess
import sys

import pytest

from starcompactor.pipeline.cli import DEMO_DUMP


def starcompactor(*args, tmp_path):
    """The command as users run it, with a private TMPDIR to inspect."""
    temp = tmp_path / 'tmp'
    temp.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, '-m', 'starcompactor', *map(str, args)],
        env=dict(os.environ, TMPDIR=str(temp)), capture_output=True,
        text=True, timeout=300)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, names in os.walk(folder)
                  for name in names + dirs)


def error_lines(run):
    return [line for line in run.stderr.splitlines() if line.strip()]


MISSPELLED = [
    ('instances', ['--dump', DEMO_DUMP, '--output', '{out}/trace',
                   '--epoh', '2015-09-17T00:00:00Z'], '--epoh', '--epoch'),
    ('instances', ['--dump', DEMO_DUMP, '--output', '{out}/trace',
                   '--mask-uiud'], '--mask-uiud', '--mask-uuid'),
    ('instances', ['--dump', DEMO_DUMP, '--output', '{out}/trace',
                   '--direct_num_worker=2'], '--direct_num_worker',
     '--direct_num_workers'),
    ('instances', ['--dump', DEMO_DUMP, '--output', '{out}/trace',
                   '--runner', 'DaskRunner', '--dask_worker', '2'],
     '--dask_worker', '--dask_workers'),
    ('demo', ['--output', '{out}/trace', '--ouptut', 'x'], '--ouptut',
     '--output'),
    ('verify', ['{out}/trace', '--dump', DEMO_DUMP, '--mask-key-fil', 'k'],
     '--mask-key-fil', '--mask-key-file'),
    ('report', ['{out}/trace', '--htm', '{out}/r.html'], '--htm', '--html'),
    ('synth', ['--events', '100', '--dump', '{out}/nova.sql', '--sede', '3'],
     '--sede', '--seed'),
]


@pytest.mark.parametrize('command, args, option, meant', MISSPELLED,
                         ids=[m[2] for m in MISSPELLED])
def test_a_misspelled_option_is_an_error_naming_it_and_nothing_is_written(
        tmp_path, command, args, option, meant):
    out = tmp_path / 'out'
    out.mkdir()
    run = starcompactor(command, *(a.format(out=out) for a in args),
                        tmp_path=tmp_path)
    assert run.returncode == 2, run.stderr
    assert error_lines(run) == [
        f'starcompactor {command}: error: unknown option {option} '
        f'(did you mean {meant}?)']
    assert files_under(out) == []
    assert files_under(tmp_path / 'tmp') == []


BAD_INPUT = [
    (['instances', '--dump', '{out}/README.sql', '--output', '{out}/a/b/t'],
     1, 'starcompactor: error: {out}/README.sql is not a MySQL dump: no '
        'CREATE TABLE or INSERT INTO of a Nova table'),
    (['instances', '--dump', DEMO_DUMP, '--databases', 'nova_cell9',
      '--output', '{out}/a/b/t'], 1,
     'starcompactor: error: database nova_cell9 is not in '),
    (['instances', '--dump', DEMO_DUMP, '--output', '{out}/t', '--epoch',
      'yesterday'], 1,
     "starcompactor: error: --epoch 'yesterday' is not an ISO-8601 time "
     "such as 2015-09-17T00:00:00Z or 2015-09-17"),
    (['instances', '--dump', DEMO_DUMP, '--output', '/etc/hostname/t'], 1,
     'starcompactor: error: cannot write the trace into folder '
     '/etc/hostname: /etc/hostname is a file'),
    (['instances', '--dump', DEMO_DUMP, '--output', '/etc/hostname/a/t'], 1,
     'starcompactor: error: cannot write the trace into folder '
     '/etc/hostname/a: /etc/hostname is a file'),
    (['instances', '--dump', DEMO_DUMP, '--output', '/proc/1/t'], 1,
     'starcompactor: error: cannot write the trace into folder /proc/1: '),
    (['instances', '--dump', DEMO_DUMP, '--output', '{out}/t', '--buckets',
      '-3'], 2,
     "starcompactor instances: error: argument --buckets: '-3' is not a "
     "whole number (0, 1, 2, ...)"),
    (['instances', '--dump', DEMO_DUMP, '--output', '{out}/t',
      '--num-shards', 'two'], 2,
     "starcompactor instances: error: argument --num-shards: 'two' is not "
     "a whole number (0, 1, 2, ...)"),
    (['instances', '--dump', DEMO_DUMP, '--output', '{out}/t', '--runner',
      'DaskRunner', '--dask_client_address', 'tcp://127.0.0.1:1',
      '--dask_connection_timeout', '2'], 1,
     'starcompactor: error: cannot reach the Dask scheduler: Timed out '
     'trying to connect to tcp://127.0.0.1:1 after 2 s'),
    (['verify', '{out}/t'], 1,
     'starcompactor: error: verify compares a trace with the source it was '
     'made from: give --dump FILE..., --databases DB,... (with '
     '--mysql-host, --mysql-user, ...), --api or --audit-dir DIR'),
    (['verify', '{out}/t', '--dump', DEMO_DUMP], 1,
     'starcompactor: error: no trace files at {out}/t '
     '({out}/t-SSSSS-of-NNNNN.csv, ...)'),
    (['bogus'], 2, "starcompactor: error: unknown command 'bogus'"),
    (['instnces'], 2, "starcompactor: error: unknown command 'instnces' "
                      "(did you mean instances?)"),
]


@pytest.mark.parametrize('args, status, message', BAD_INPUT,
                         ids=[' '.join(a[:1] + a[-2:]) for a, *_ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_problem(tmp_path, args, status,
                                                  message):
    out = tmp_path / 'out'
    out.mkdir()
    readme = os.path.join(os.path.dirname(__file__), '..', 'README.md')
    with open(readme) as f, open(out / 'README.sql', 'w') as saved:
        saved.write(f.read())
    run = starcompactor(*(a.format(out=out) for a in args),
                        tmp_path=tmp_path)
    assert run.returncode == status, run.stderr
    assert 'Traceback' not in run.stderr
    first = [line for line in error_lines(run)
             if not line.startswith(('INFO ', 'WARNING '))][0]
    assert first.startswith(message.format(out=out)), run.stderr
    assert files_under(out) == ['README.sql']


def test_unknown_command_also_prints_the_usage(tmp_path):
    run = starcompactor('bogus', tmp_path=tmp_path)
    assert error_lines(run)[1] == 'usage: starcompactor COMMAND [OPTIONS]'


def test_version_names_starcompactor_and_beam(tmp_path):
    import starcompactor as package
    from importlib.metadata import version
    run = starcompactor('--version', tmp_path=tmp_path)
    assert run.returncode == 0
    assert run.stdout.startswith(
        f'starcompactor {package.__version__} (apache-beam '
        f'{version("apache-beam")}, Python ')


def test_help_shows_the_defaults(tmp_path):
    run = starcompactor('instances', '--help', tmp_path=tmp_path)
    assert run.returncode == 0
    text = ' '.join(run.stdout.split())
    for shown in ('(default: 127.0.0.1)', '(default: 3306)',
                  '(default: root)', '(default: csv,avro)',
                  '(default: hmac-sha256)', '(default: 0)'):
        assert shown in text


def test_a_run_leaves_only_its_trace_and_no_temporary_folders(tmp_path):
    out = tmp_path / 'out'
    run = starcompactor('instances', '--dump', DEMO_DUMP, '--output',
                        out / 'trace', '--formats', 'csv', tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    assert files_under(out) == ['trace-00000-of-00001.csv',
                                'trace.manifest.json']
    assert files_under(tmp_path / 'tmp') == []


def test_the_start_up_line_says_in_words_what_is_read(tmp_path):
    run = starcompactor('instances', '--dump', DEMO_DUMP, '--output',
                        tmp_path / 'trace', '--formats', 'csv',
                        tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    start = next(line for line in run.stderr.splitlines()
                 if 'reading' in line)
    assert start.startswith('INFO starcompactor: reading dump '
                            'nova-demo.sql.gz'), start
    assert '{' not in start and 'splits of' not in start


def test_the_demo_runs_from_a_fresh_folder_with_its_relative_output(tmp_path):
    """The quick start: ``starcompactor demo`` in an empty folder writes
    ``out/demo/trace-*`` there (a relative prefix, as users type it)."""
    run = subprocess.run([sys.executable, '-m', 'starcompactor', 'demo'],
                         cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    written = files_under(tmp_path / 'out' / 'demo')
    for fmt in ('csv', 'avro', 'jsonl'):
        assert f'trace-00000-of-00001.{fmt}' in written
    assert 'trace.manifest.json' in written
    assert not [name for name in written if '.writing-' in name]
