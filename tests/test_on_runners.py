"""The instances job on real Beam runners, run the way users run it: the
``starcompactor instances`` command in a child process, one runner per
process (Beam's DirectRunner first tries a Prism server downloaded from
GitHub and keeps that failed server as the process's shared one, so
DirectRunner and PrismRunner never share a process here).

Two datasets, both masked with one fixed key file: the golden history
(tests/golden.py) and two cells with archived (shadow_) rows
(tests/datasets.py). Each is first run on the DirectRunner; then on

* the DirectRunner with ``--direct_running_mode=multi_processing
  --direct_num_workers=2``,
* ``--runner PrismRunner`` (Prism built once with go install, see
  pipeline/runners.py; nothing else is given on the command line),
* ``--runner DaskRunner`` on a Dask cluster the test starts (a ``dask
  scheduler`` and two ``dask worker`` processes, tests/dask_cluster.py), by
  its address, and on the cluster the command starts itself,

and every trace must equal the DirectRunner's row for row in every format,
with the same summary and manifest (counts, epoch, key fingerprint, rows
per format; not the cut, shard names or hashes); the golden trace must also
equal golden.EXPECTED_CSV. After each run no process of its session (prism,
SDK workers, Dask's scheduler and workers) may be left.

A run whose output loses rows (a Dask runner that drops what DoFns emit in
finish_bundle, as Beam's own does: tests/lossy_dask.py) fails, one line, no
files.

Flink (embedded ``[local]`` cluster, and a session cluster from PyPI's
apache-flink, tests/flink_cluster.py) needs Beam's Flink job server jar.
Given one (STARCOMPACTOR_FLINK_JOB_SERVER_JAR) or where Maven serves it,
both datasets run on Flink and compare like the others; elsewhere those
tests skip, saying why (tests/flink_jar.py), and what is tested instead is
the error users then get: one clear line (no traceback) naming the missing
artifact and how to supply it.

Also here: the job graph a portable runner receives, and the task graph
the Dask scheduler receives (tests/job_graph.py), hold neither the masking
key nor the database password, wherever they come from, and no drawn
per-run key.
"""
import base64
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import flink_jar
import golden
from conftest import READER, READER_PASSWORD
from dask_cluster import DaskCluster
from datasets import NovaDatabases, cells_with_archive
from flink_cluster import FlinkSessionCluster
from helpers import (read_avro, read_csv, read_jsonl, sort_records,
                     write_key_file)
from job_graph import dask_graph_text, pipeline_proto_text
from starcompactor.pipeline import runners
from starcompactor.pipeline.instances import InstancesJob
from starcompactor.transforms import mask
from starcompactor.transforms.schema import CSV_HEADER

FORMATS = 'csv,avro,jsonl'
RUN_TIMEOUT_S = 900

RUNNERS = {
    'direct': ['--runner', 'DirectRunner'],
    'direct-multiprocess': ['--runner', 'DirectRunner',
                            '--direct_running_mode=multi_processing',
                            '--direct_num_workers=2'],
    'prism': ['--runner', 'PrismRunner'],
    'dask-own-cluster': ['--runner', 'DaskRunner', '--dask_workers', '2'],
}

# Variables that would hand the child a secret other than the files given.
_SECRET_ENV = ('MYSQL_PWD', mask.KEY_ENV)


# --------------------------------------------------------------------------
# Running the command

def _summary(stdout):
    """The printed summary, without what may differ between two runs: the
    cut, the seconds, the files (their number is the runner's choice)."""
    return [re.sub(r' in [0-9.]+ s$', '', line)
            for line in stdout.splitlines()
            if not line.startswith(('starcompactor instances: cut ',
                                    '  wrote '))]


class Trace:
    """One run's output, read back in every format."""

    def __init__(self, prefix, run, seconds):
        self.prefix, self.run, self.seconds = prefix, run, seconds
        self.csv_headers, self.csv = read_csv(prefix)
        self.avro = sort_records(read_avro(prefix))
        self.jsonl = sort_records(read_jsonl(prefix))
        with open(f'{prefix}.manifest.json', encoding='utf-8') as f:
            manifest = json.load(f)
        rows_per_format = {}
        for shard in manifest['shards']:
            rows_per_format[shard['format']] = \
                rows_per_format.get(shard['format'], 0) + shard['rows']
        # What must not depend on the runner: the summary, and the manifest
        # but its cut and its shards' names and sha256 (rows per format).
        self.facts = {
            **{name: value for name, value in manifest.items()
               if name not in ('cut', 'shards')},
            'rows_per_format': rows_per_format,
            'summary': _summary(run.stdout),
        }


def _session_processes(sid):
    out = subprocess.run(['ps', '-eo', 'pid=,sid=,args='],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    left = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] == str(sid) and parts[0] != str(sid):
            left.append(line.strip())
    return left


def _environment(**extra):
    """This process's environment, but the secrets."""
    return {**{k: v for k, v in os.environ.items() if k not in _SECRET_ENV},
            **extra}


def starcompactor(args, timeout=RUN_TIMEOUT_S, env=None):
    """Run the command in its own session; (CompletedProcess, seconds).
    Fails if any process of that session outlives it."""
    env = env or _environment()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'starcompactor', 'instances', *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail(f'starcompactor {" ".join(args)} took over {timeout}s',
                    pytrace=False)
    seconds = time.monotonic() - start
    deadline = time.monotonic() + 10
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _session_processes(proc.pid)
    assert not left, f'left running after the command ended: {left}'
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                       stderr), seconds


def job_args(server, databases, key_file, password_file, out):
    return ['--mysql-host', server.host, '--mysql-port', str(server.port),
            '--mysql-user', READER, '--mysql-password-file', password_file,
            '--databases', ','.join(databases), '--output', str(out),
            '--formats', FORMATS, '--mask-key-file', key_file]


# --------------------------------------------------------------------------
# Fixtures: module-wide datasets and DirectRunner traces

@pytest.fixture(scope='module')
def databases(mariadb):
    dbs = NovaDatabases(mariadb)
    golden_db = dbs('golden')
    with mariadb.admin() as admin:
        golden.load(admin, golden_db)
    cells, *_ = cells_with_archive(mariadb, dbs)
    yield {'golden': [golden_db], 'cells': cells}
    dbs.drop()


@pytest.fixture(scope='module')
def key_file(tmp_path_factory):
    return write_key_file(tmp_path_factory.mktemp('key'),
                          golden.GOLDEN_KEY + b'\n')


@pytest.fixture(scope='module')
def command(mariadb, databases, key_file, password_file, tmp_path_factory):
    """command(dataset, runner_args, env=None) -> (CompletedProcess,
    seconds, out)."""
    def run(dataset, runner_args, env=None):
        name = runner_args[1].lower() if len(runner_args) > 1 else 'default'
        out = tmp_path_factory.mktemp(f'{name}-{dataset}') / 'trace'
        args = job_args(mariadb, databases[dataset], key_file, password_file,
                        out)
        return (*starcompactor(args + list(runner_args), env=env), out)
    return run


@pytest.fixture(scope='module')
def run_trace(command):
    """run_trace(runner, dataset) -> Trace; DirectRunner traces are kept."""
    kept = {}

    def run(runner, dataset, runner_args=None):
        if runner == 'direct' and dataset in kept:
            return kept[dataset]
        runner_args = runner_args or RUNNERS[runner]
        proc, seconds, out = command(dataset, runner_args)
        if proc.returncode != 0:
            pytest.fail(f'starcompactor on {runner_args} failed (exit '
                        f'{proc.returncode}):\n{proc.stderr[-4000:]}',
                        pytrace=False)
        assert 'Traceback' not in proc.stderr
        print(f'\n{runner} {dataset}: {seconds:.1f}s')
        trace = Trace(str(out), proc, seconds)
        if runner == 'direct':
            kept[dataset] = trace
        return trace
    return run


CELLS_ROWS = sorted([
    # uuid, event, start_sec, duration, vcpus
    ('c0c0c0c0-0000-4000-8000-000000000001',
     'conductor_schedule_and_build_instances', '1', '1', '1'),
    ('c1c1c1c1-0000-4000-8000-000000000001',
     'compute__do_build_and_run_instance', '3', '7', '2'),
    ('c1c1c1c1-0000-4000-8000-000000000002',
     'compute__do_build_and_run_instance', '0', '30', '4'),
    ('c1c1c1c1-0000-4000-8000-000000000002', 'compute_terminate_instance',
     '86390', '10', '4'),
])


def _check_expected(trace, dataset):
    assert trace.csv_headers == {tuple(CSV_HEADER)}
    if dataset == 'golden':
        assert trace.csv == golden.EXPECTED_CSV
        for table, (read, in_trace, left_out) in \
                golden.EXPECTED_COUNTS.items():
            assert trace.facts['source_rows'][table] == {
                'read': read, 'in_trace': in_trace, 'left_out': left_out}
    else:
        assert sorted((r[0], r[1], r[3], r[6], r[10])
                      for r in trace.csv) == CELLS_ROWS
        assert trace.facts['source_rows']['events']['read'] == 4
    n = len(trace.csv)
    assert trace.facts['trace_rows'] == n
    assert trace.facts['rows_per_format'] == {'csv': n, 'avro': n,
                                              'jsonl': n}


def _check_same(trace, direct):
    assert trace.csv_headers == direct.csv_headers
    assert trace.csv == direct.csv
    assert trace.avro == direct.avro
    assert trace.jsonl == direct.jsonl
    assert trace.facts == direct.facts


# --------------------------------------------------------------------------
# DirectRunner, multi-processing DirectRunner, Prism

@pytest.mark.runners
@pytest.mark.parametrize('dataset', ['golden', 'cells'])
def test_direct_runner_trace(run_trace, dataset):
    _check_expected(run_trace('direct', dataset), dataset)


@pytest.mark.runners
@pytest.mark.parametrize('dataset', ['golden', 'cells'])
@pytest.mark.parametrize('runner', ['direct-multiprocess', 'prism',
                                    'dask-own-cluster'])
def test_runner_trace_equals_direct(run_trace, runner, dataset):
    direct = run_trace('direct', dataset)
    trace = run_trace(runner, dataset)
    _check_same(trace, direct)
    _check_expected(trace, dataset)
    # It ran where it says: Prism's job service, or two SDK worker processes
    # (the Dask cluster's processes are checked gone by starcompactor()).
    if runner == 'prism':
        assert 'PrismRunner: pipeline done' in trace.run.stderr
    elif runner == 'direct-multiprocess':
        assert trace.run.stderr.count('Python sdk harness starting') == 2


# --------------------------------------------------------------------------
# Dask

@pytest.fixture(scope='module')
def dask_cluster(tmp_path_factory):
    """A scheduler and two worker processes; they read the password and the
    key from the files the command names, as workers on other machines
    would (no secret in their environment)."""
    with DaskCluster(str(tmp_path_factory.mktemp('dask-cluster')), workers=2,
                     env=_environment()) as cluster:
        yield cluster


@pytest.mark.runners
@pytest.mark.parametrize('dataset', ['golden', 'cells'])
def test_dask_cluster_trace_equals_direct(run_trace, dask_cluster, dataset):
    direct = run_trace('direct', dataset)
    before = dask_cluster.tasks_run_per_worker()
    trace = run_trace('dask-cluster', dataset, [
        '--runner', 'DaskRunner',
        f'--dask_client_address={dask_cluster.address}'])
    _check_same(trace, direct)
    _check_expected(trace, dataset)
    # It ran on that cluster, on both of its workers.
    after = dask_cluster.tasks_run_per_worker()
    assert all(after[worker] > before[worker] for worker in after), after
    assert 'Receive client connection' in dask_cluster.scheduler_log()


@pytest.mark.runners
def test_run_that_loses_rows_fails(command):
    """Beam's DaskRunner drops what DoFns emit in finish_bundle, where its
    file sinks emit the shards they wrote: every shard is lost and empty
    ones are written instead. The rows written do not match the trace's
    rows, so the run fails and leaves nothing."""
    tests = os.path.dirname(os.path.abspath(__file__))
    proc, _, out = command('golden',
                           ['--runner', 'lossy_dask.LossyDaskRunner'],
                           env=_environment(PYTHONPATH=tests))
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines()
             if line.startswith('starcompactor')]
    assert lines == [
        f'starcompactor: error: the run does not add up '
        f'({len(golden.EXPECTED_CSV)} trace rows made, but the csv files '
        f'hold 0): the runner lost data; nothing was written'], proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not os.listdir(os.path.dirname(out)), 'files left behind'


# --------------------------------------------------------------------------
# Flink

def _free_port():
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


FLINK_EMBEDDED = ['--runner', 'FlinkRunner', '--parallelism=2']


def _flink_session_args(port):
    return ['--runner', 'FlinkRunner', f'--flink_master=localhost:{port}',
            '--parallelism=2']


@pytest.mark.runners
@pytest.mark.parametrize('cluster', ['embedded', 'session'])
def test_flink_without_job_server_is_one_clear_line(command, monkeypatch,
                                                    cluster):
    # With a session cluster's address the command must fail before it
    # would contact it: none is started.
    runner_args = (FLINK_EMBEDDED if cluster == 'embedded'
                   else _flink_session_args(_free_port()))
    monkeypatch.delenv(runners.FLINK_JAR_ENV, raising=False)
    if flink_jar.maven_serves_job_server():
        pytest.skip('Maven serves Beam\'s Flink job server here: no error '
                    'to show')
    proc, _, out = command('golden', runner_args)
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("starcompactor: error: Beam's Flink job server "
                           f'{runners.flink_job_server_coordinates()} '), line
    assert 'is not served by the Maven repository' in line, line
    assert '--flink_job_server_jar' in line, line
    assert runners.FLINK_JAR_ENV in line, line
    assert not os.listdir(os.path.dirname(out)), 'files left behind'


@pytest.mark.runners
def test_flink_embedded(run_trace):
    flink_jar.skip_without_job_server_jar()
    for dataset in ('golden', 'cells'):
        trace = run_trace('flink', dataset, FLINK_EMBEDDED)
        _check_same(trace, run_trace('direct', dataset))
        _check_expected(trace, dataset)


@pytest.mark.runners
def test_flink_session_cluster(run_trace, tmp_path):
    flink_jar.skip_without_job_server_jar()
    port = _free_port()
    with FlinkSessionCluster(slots=2, rest_port=port,
                             state_dir=tmp_path / 'cluster'):
        for dataset in ('golden', 'cells'):
            trace = run_trace('flink', dataset, _flink_session_args(port))
            _check_same(trace, run_trace('direct', dataset))
            _check_expected(trace, dataset)


# --------------------------------------------------------------------------
# What a runner receives: no secret in the job graph or the task graph

RUNNER_ARGS = {
    'prism': ['--runner', 'PrismRunner'],
    # Nothing is sent: no scheduler needs to be there.
    'dask': ['--runner', 'DaskRunner',
             '--dask_client_address=tcp://127.0.0.1:8786'],
}
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
GRAPH_KEY = b'graph-test-key-' + b'5f3a9c0e7b1d4e2f8a6c'   # 35 bytes


def _encodings(secret: bytes):
    return {'raw': secret, 'hex': secret.hex().encode(),
            'HEX': secret.hex().upper().encode(),
            'base64': base64.b64encode(secret)}


def _build(server, databases, tmp_path, *extra, runner='prism',
           after_init=None):
    """The instances pipeline for the runner's options (nothing run)."""
    argv = runners.prepare_runner_options(
        ['--mysql-host', server.host, '--mysql-port', str(server.port),
         '--mysql-user', READER, '--databases', databases['golden'][0],
         '--output', str(tmp_path / 'trace'), *extra, *RUNNER_ARGS[runner]])
    options = PipelineOptions(argv)
    pipeline = beam.Pipeline(options=options)
    job = InstancesJob(options, now=NOW)
    if after_init:
        after_init()
    job.build(pipeline)
    return pipeline, options, job


def _leaks(text, secrets_):
    return [f'{name} ({form})' for name, secret in secrets_.items()
            for form, encoded in _encodings(secret).items()
            if encoded in text]


def _sent(pipeline, options, runner):
    """Prism's job graph and options, or the Dask scheduler's task graph."""
    return (pipeline_proto_text(pipeline, options) if runner == 'prism'
            else dask_graph_text(pipeline))


@pytest.mark.parametrize('runner', ['prism', 'dask'])
@pytest.mark.parametrize('password_from', ['file', 'MYSQL_PWD'])
@pytest.mark.parametrize('key_from', ['file', mask.KEY_ENV])
def test_job_graph_holds_no_secret(mariadb, databases, password_file, tmp_path,
                                   monkeypatch, key_from, password_from,
                                   runner):
    for var in _SECRET_ENV:
        monkeypatch.delenv(var, raising=False)
    extra = []
    if key_from == 'file':
        key = tmp_path / 'graph.key'
        key.write_bytes(GRAPH_KEY + b'\n')
        key.chmod(0o600)
        extra += ['--mask-key-file', str(key)]
    else:
        monkeypatch.setenv(mask.KEY_ENV, GRAPH_KEY.decode())
    if password_from == 'file':
        extra += ['--mysql-password-file', password_file]
    else:
        monkeypatch.setenv('MYSQL_PWD', READER_PASSWORD)
    pipeline, options, job = _build(mariadb, databases, tmp_path, *extra,
                                    runner=runner)
    assert job.spec.key_source.kind == ('file' if key_from == 'file'
                                        else 'env')
    text = _sent(pipeline, options, runner)
    if runner == 'prism':
        assert b'PrismRunner' in text              # the options are in it
    assert databases['golden'][0].encode() in text  # and the graph's data
    assert not _leaks(text, {'key': GRAPH_KEY,
                             'password': READER_PASSWORD.encode()})


@pytest.mark.parametrize('runner', ['prism', 'dask'])
def test_secret_search_would_catch_a_secret(mariadb, databases, password_file,
                                            tmp_path, monkeypatch, runner):
    """Control: the same search finds a secret put into the graph, as a
    Create's element or inside a pickled function."""
    monkeypatch.setenv(mask.KEY_ENV, GRAPH_KEY.decode())
    for secret in (GRAPH_KEY, READER_PASSWORD.encode()):
        pipeline, options, _ = _build(mariadb, databases, tmp_path,
                                      '--mysql-password-file', password_file,
                                      runner=runner)
        _ = pipeline | 'Oops' >> beam.Create([secret])
        assert _leaks(_sent(pipeline, options, runner),
                      {'s': secret}) == ['s (raw)']

        pipeline, options, _ = _build(mariadb, databases, tmp_path,
                                      '--mysql-password-file', password_file,
                                      runner=runner)
        hexed = secret.hex()
        _ = (pipeline | 'One' >> beam.Create([1])
             | 'Oops' >> beam.Map(lambda x, s=hexed: (x, s)))
        assert _leaks(_sent(pipeline, options, runner),
                      {'s': secret}) == ['s (hex)']


def _applied_transforms(pipeline):
    stack = [pipeline.transforms_stack[0]]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.parts)


def test_random_key_is_drawn_at_run_time_not_in_the_graph(
        mariadb, databases, password_file, tmp_path, monkeypatch):
    for var in _SECRET_ENV:
        monkeypatch.delenv(var, raising=False)
    drawn = []
    marker = b'drawn-key-marker-0123456789abcdef'   # what a draw would give

    def token_bytes(n):
        drawn.append(n)
        return marker[:n]
    monkeypatch.setattr(mask.secrets, 'token_bytes', token_bytes)
    # Validating the options may draw a key and drop it (load_key checks
    # every key source alike); building the graph must not draw one.
    pipeline, options, job = _build(mariadb, databases, tmp_path,
                                    '--mysql-password-file', password_file,
                                    after_init=drawn.clear)
    assert job.spec.key_source == mask.KeySource('random')
    assert drawn == [], 'a key was drawn while building the graph'
    text = pipeline_proto_text(pipeline, options)
    assert not _leaks(text, {'marker': marker[:mask.KEY_BYTES]})

    labels = {t.full_label: t for t in _applied_transforms(pipeline)}
    assert any(label.endswith('/LoadOrDrawKey') for label in labels)
    key_step = next(label for label in labels
                    if label.endswith('/WhereTheKeyIs'))
    creates = {label: t.transform.values for label, t in labels.items()
               if isinstance(t.transform, beam.Create)}
    assert list(creates[key_step]) == [mask.KeySource('random')]
    for label, values in creates.items():
        blobs = [v for v in values if isinstance(v, (bytes, bytearray))
                 and len(v) >= mask.MIN_KEY_BYTES]
        assert not blobs, f'{label} holds a {len(blobs[0])}-byte payload'
    # And the proto names the step the key is loaded or drawn in.
    proto = pipeline.to_runner_api()
    assert any(t.unique_name.endswith('/LoadOrDrawKey')
               for t in proto.components.transforms.values())
    # Nor does translating it for Dask draw one.
    assert not _leaks(dask_graph_text(pipeline),
                      {'marker': marker[:mask.KEY_BYTES]})
    assert drawn == [], 'a key was drawn while making the Dask task graph'


# --------------------------------------------------------------------------
# --setup_file ./setup.py (remote runners build an sdist and install it)

def test_setup_file_sdist_installs_on_workers(tmp_path):
    """Dataflow (and Flink with PROCESS/DOCKER workers) build an sdist of
    setup.py and pip-install it on each worker; setup.py reads
    requirements.txt, so the sdist must carry it (MANIFEST.in)."""
    import shutil
    import tarfile
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = tmp_path / 'src'
    # The checkout as Beam sees it, without what git and runs add.
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(
        '.git', '.venv', '.pytest_cache', '__pycache__', '*.egg-info', 'out'))
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir',
                    str(tmp_path / 'dist')], cwd=src, check=True,
                   capture_output=True)
    [sdist] = (tmp_path / 'dist').iterdir()
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / 'worker')
    [unpacked] = (tmp_path / 'worker').iterdir()
    # What pip runs on the worker first: setup.py's metadata.
    proc = subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info'],
                          cwd=unpacked, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    requires = next(unpacked.glob('*.egg-info')) / 'requires.txt'
    assert 'apache-beam' in requires.read_text()
    assert (unpacked / 'synth' / 'sql' / 'nova_cell.sql').is_file()
