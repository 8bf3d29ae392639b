"""Beam's portable runners, for real: Prism (built from the Go module proxy)
and Flink (job server jar given or from Maven; embedded [local] cluster or
a standalone session cluster from PyPI's apache-flink, tests/flink_cluster.py).

Each pipeline runs in a child Python process, so the runner's own server
(prism, or the Flink job server's JVM) ends with it, as it does after a CLI
run: Beam stops job servers only at interpreter exit. The tests check with
ps that none is left behind.

A missing tool (go, java, mvn) fails the test with a one-line message; it
never skips. The Flink pipelines skip, saying why, where no job server jar
can be had (tests/flink_jar.py).

    python tests/test_runners.py run OUT_PREFIX [BEAM ARGS...]

runs the test pipeline once, outside pytest.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions, PipelineOptions, PortableOptions)

import flink_jar
from flink_cluster import FlinkSessionCluster
from job_graph import pipeline_proto_text
from starcompactor.pipeline import runners
from starcompactor.pipeline.errors import UserError

HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------
# The pipeline: pyarrow.Table elements, CoGroupByKey on an int key, a
# singleton side input, a text file write.

def _tables():
    return [
        pa.table({'k': [1, 2, 2, 3], 'v': [1.5, 2.0, 3.0, 4.0]}),
        pa.table({'k': [2, 3, 4, 4], 'v': [5.0, 6.0, 7.0, 8.5]}),
    ]


def _split_by_key(table):
    import pyarrow.compute as pc
    for key in sorted(set(table.column('k').to_pylist())):
        yield int(key), table.filter(pc.equal(table.column('k'), key))


def _format(joined, factor):
    key, groups = joined
    tables = list(groups['rows'])
    rows = sum(t.num_rows for t in tables)
    total = sum(sum(t.column('v').to_pylist()) for t in tables) * factor
    names = ','.join(sorted(groups['names'])) or '-'
    kinds = ','.join(sorted({type(t).__name__ for t in tables})) or '-'
    return f'{key}\t{rows}\t{total:.2f}\t{names}\t{kinds}'


def build_pipeline(p, out_prefix):
    tables = p | 'Tables' >> beam.Create(_tables())
    keyed = tables | 'SplitByKey' >> beam.FlatMap(_split_by_key)
    names = p | 'Names' >> beam.Create(
        [(1, 'one'), (2, 'two'), (2, 'deux'), (3, 'three'), (5, 'five')])
    factor = p | 'Factor' >> beam.Create([10])
    joined = {'rows': keyed, 'names': names} | 'Join' >> beam.CoGroupByKey()
    lines = joined | 'Format' >> beam.Map(
        _format, factor=beam.pvalue.AsSingleton(factor))
    lines | 'Write' >> beam.io.WriteToText(out_prefix, file_name_suffix='.txt')


EXPECTED = [
    '1\t1\t15.00\tone\tTable',
    '2\t3\t100.00\tdeux,two\tTable',
    '3\t2\t100.00\tthree\tTable',
    '4\t2\t155.00\t-\tTable',
    '5\t0\t0.00\tfive\t-',
]


def run_pipeline(out_prefix, beam_args):
    options = PipelineOptions(beam_args)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, out_prefix)


def read_output(out_prefix):
    files = sorted(glob.glob(out_prefix + '*.txt'))
    assert files, f'no output files for {out_prefix}'
    lines = []
    for f in files:
        with open(f) as fh:
            lines += fh.read().splitlines()
    return sorted(lines)


# --------------------------------------------------------------------------
# Helpers

def _require(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(f'{", ".join(missing)} not found on PATH: the runner '
                    'tests need Go (Prism) and Java 17 + Maven (Flink)',
                    pytrace=False)


def _prepare(argv):
    """prepare_runner_options, failing (never skipping) on a missing tool."""
    try:
        return runners.prepare_runner_options(argv)
    except UserError as e:
        pytest.fail(str(e), pytrace=False)


def _options_of(argv):
    return dict(a.split('=', 1) for a in argv if '=' in a)


def _processes_matching(needle):
    out = subprocess.run(['ps', '-eo', 'pid=,args='], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return [ln.strip() for ln in out.splitlines()
            if needle in ln and 'ps -eo' not in ln]


def _run_child(out_prefix, beam_args, timeout=600):
    """Run the pipeline in a child python; return its wall time in s."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, HERE, 'run', out_prefix, *beam_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        tail = '\n'.join(proc.stdout.splitlines()[-40:])
        pytest.fail(f'pipeline on {beam_args} failed '
                    f'(exit {proc.returncode}):\n{tail}', pytrace=False)
    return elapsed


@pytest.fixture(scope='module')
def direct_output(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('direct') / 'out')
    elapsed = _run_child(out, ['--runner=DirectRunner'])
    lines = read_output(out)
    assert lines == EXPECTED
    return lines, elapsed


def _free_port():
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Option preparation (no runner started)

def test_other_runners_untouched():
    argv = ['--runner', 'DirectRunner', '--flink_master=x']
    assert runners.prepare_runner_options(argv) == argv
    assert runners.prepare_runner_options([]) == []


def test_flink_options_with_given_jar(tmp_path, monkeypatch):
    jar = tmp_path / 'js.jar'
    jar.write_bytes(b'jar')
    monkeypatch.setenv(runners.FLINK_JAR_ENV, str(jar))
    assert runners.prepare_runner_options(['--runner', 'flink']) == [
        '--environment_type=LOOPBACK',
        f'--flink_version={runners.DEFAULT_FLINK_VERSION}',
        '--flink_master=[local]', f'--flink_job_server_jar={jar}',
        '--runner', 'flink']


@pytest.mark.parametrize('runner', [
    'FlinkRunner', 'flink', 'Flink',
    'apache_beam.runners.portability.flink_runner.FlinkRunner'])
def test_flink_runner_named_as_beam_names_it(tmp_path, monkeypatch, runner):
    jar = tmp_path / 'js.jar'
    jar.write_bytes(b'jar')
    monkeypatch.setenv(runners.FLINK_JAR_ENV, str(jar))
    argv = runners.prepare_runner_options(['--runner', runner])
    assert _options_of(argv)['--flink_job_server_jar'] == str(jar)


@pytest.mark.parametrize('runner', [
    'DaskRunner', 'dask', 'apache_beam.runners.dask.dask_runner.DaskRunner'])
def test_dask_runner_is_the_projects(runner):
    """Beam's own DaskRunner loses data (pipeline/dask_runner.py): every
    name of it runs the project's, whose options are then known."""
    argv = ['--runner', runner, '--dask_client_address=tcp://h:8786']
    prepared = runners.prepare_runner_options(argv)
    assert prepared[:-1] == argv
    options = PipelineOptions(prepared).get_all_options()
    assert options['runner'] == 'starcompactor.pipeline.dask_runner.DaskRunner'
    assert options['address'] == 'tcp://h:8786'


def test_flink_options_given_win_as_beam_parses_them():
    argv = runners.prepare_runner_options([
        '--runner=FlinkRunner', '--flink_job_server_jar', '/j.jar',
        '--flink_version', '1.19', '--flink_master=localhost:8081',
        '--environment_type=EXTERNAL'])
    options = PipelineOptions(argv)
    flink = options.view_as(FlinkRunnerOptions)
    assert (flink.flink_job_server_jar, flink.flink_version,
            flink.flink_master) == ('/j.jar', '1.19', 'localhost:8081')
    assert options.view_as(PortableOptions).environment_type == 'EXTERNAL'


def test_flink_jar_resolved_for_the_flink_version_given(monkeypatch):
    monkeypatch.delenv(runners.FLINK_JAR_ENV, raising=False)
    resolved = []

    def flink_job_server_jar(flink_version):
        resolved.append(flink_version)
        return f'/cache/{flink_version}.jar'
    monkeypatch.setattr(runners, 'flink_job_server_jar', flink_job_server_jar)
    argv = runners.prepare_runner_options(
        ['--runner', 'FlinkRunner', '--flink_version=1.19'])
    assert resolved == ['1.19']
    assert PipelineOptions(argv).view_as(FlinkRunnerOptions).flink_version \
        == '1.19'


def test_flink_missing_tools_are_one_line_user_errors(tmp_path, monkeypatch):
    monkeypatch.setenv('STARCOMPACTOR_RUNNER_CACHE', str(tmp_path / 'c'))
    monkeypatch.delenv(runners.FLINK_JAR_ENV, raising=False)
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    monkeypatch.setenv('PATH', str(bindir))
    with pytest.raises(UserError, match=r'^java not found'):
        runners.prepare_runner_options(['--runner', 'FlinkRunner'])
    (bindir / 'java').symlink_to('/bin/true')
    with pytest.raises(UserError) as e:
        runners.prepare_runner_options(['--runner', 'FlinkRunner'])
    assert str(e.value) == ('mvn not found: install Maven or pass '
                            '--flink_job_server_jar')


def test_flink_bad_inputs_are_one_line_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"^argument --flink_version: invalid "
                       r"choice: '1\.7' \(choose from '1\.19', "):
        runners.prepare_runner_options(['--runner', 'flink',
                                        '--flink_version=1.7'])
    monkeypatch.setenv(runners.FLINK_JAR_ENV, str(tmp_path / 'none.jar'))
    with pytest.raises(UserError) as e:
        runners.prepare_runner_options(['--runner', 'flink'])
    assert str(e.value) == (f'{runners.FLINK_JAR_ENV}: no such file '
                            f'{tmp_path / "none.jar"}')


def test_prism_missing_go_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv('STARCOMPACTOR_RUNNER_CACHE', str(tmp_path))
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(UserError, match=r'^go not found: install Go'):
        runners.prepare_runner_options(['--runner', 'PrismRunner'])
    # A given --prism_location needs no Go.
    assert runners.prepare_runner_options(
        ['--runner', 'prism', '--prism_location', '/p']) == [
        '--environment_type=LOOPBACK', '--runner', 'prism',
        '--prism_location', '/p']


# --------------------------------------------------------------------------
# What the runner is sent

def test_pipeline_proto_text_exposes_pickled_closures():
    secret = 'hunter2-' + 'x' * 12

    def tag(x, s=secret):
        return x, s
    p = beam.Pipeline(options=PipelineOptions(
        ['--runner=DirectRunner', '--job_name=visible-job-name']))
    _ = p | beam.Create([1]) | beam.Map(tag)
    raw = p.to_runner_api().SerializeToString()
    # Pickled functions are compressed: a plain search of the proto misses.
    assert secret.encode() not in raw
    text = pipeline_proto_text(p)
    assert secret.encode() in text
    assert b'visible-job-name' in text  # the options the runner gets

    clean = beam.Pipeline(options=PipelineOptions(['--runner=DirectRunner']))
    _ = clean | beam.Create([1]) | beam.Map(lambda x: (x, 'public'))
    assert secret.encode() not in pipeline_proto_text(clean)


# --------------------------------------------------------------------------
# Real runners

@pytest.mark.runners
def test_prism_runner_matches_direct(tmp_path, direct_output):
    _require('go')
    t0 = time.monotonic()
    argv = _prepare(['--runner', 'PrismRunner'])
    resolve_s = time.monotonic() - t0
    binary = _options_of(argv)['--prism_location']
    assert os.access(binary, os.X_OK)
    out = str(tmp_path / 'out')
    elapsed = _run_child(out, argv)
    assert read_output(out) == direct_output[0]
    assert not _processes_matching(binary), 'prism still running'
    print(f'\nprism: resolve {resolve_s:.1f}s, pipeline {elapsed:.1f}s '
          f'(direct {direct_output[1]:.1f}s)')


@pytest.mark.runners
def test_flink_embedded_matches_direct(tmp_path, direct_output):
    _require('java')
    flink_jar.skip_without_job_server_jar()
    argv = _prepare(['--runner', 'FlinkRunner', '--parallelism=2'])
    jar = _options_of(argv)['--flink_job_server_jar']
    out = str(tmp_path / 'out')
    elapsed = _run_child(out, argv)
    assert read_output(out) == direct_output[0]
    assert not _processes_matching(jar), 'Flink job server still running'
    print(f'\nflink [local]: pipeline {elapsed:.1f}s '
          f'(direct {direct_output[1]:.1f}s)')


@pytest.mark.runners
def test_flink_session_cluster_starts_and_stops(tmp_path):
    """A JobManager and a TaskManager (2 slots) as daemons from PyPI's
    apache-flink; no job server jar needed."""
    _require('java')
    with FlinkSessionCluster(slots=2, rest_port=_free_port(),
                             state_dir=tmp_path) as cluster:
        info = cluster.overview()
        assert info['taskmanagers'] == 1 and info['slots-total'] == 2
        pids = cluster.pids()
        assert len(pids) == 2
    left = [pid for pid in pids if os.path.exists(f'/proc/{pid}')]
    assert not left, f'Flink daemons still running: {left}'


@pytest.mark.runners
def test_flink_session_cluster_matches_direct(tmp_path, direct_output):
    _require('java')
    flink_jar.skip_without_job_server_jar()
    with FlinkSessionCluster(slots=2, rest_port=_free_port(),
                             state_dir=tmp_path / 'cluster') as cluster:
        argv = _prepare(['--runner', 'FlinkRunner',
                         f'--flink_master={cluster.master}',
                         '--parallelism=2'])
        out = str(tmp_path / 'out')
        elapsed = _run_child(out, argv)
    assert read_output(out) == direct_output[0]
    print(f'\nflink session: pipeline {elapsed:.1f}s')


if __name__ == '__main__':
    if len(sys.argv) >= 3 and sys.argv[1] == 'run':
        run_pipeline(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
