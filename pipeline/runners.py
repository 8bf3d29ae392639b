"""Apache Beam's portable runners (Prism, Flink) made usable offline, and
``--runner DaskRunner`` mapped to this project's Dask runner.

Beam's Python SDK finds its runner binaries by downloading them from GitHub
(Prism) or from Beam's own HTTPS repository (the Flink job server jar). Where
only the package registries are reachable, both fail. This module resolves
them through the ordinary clients instead, once, into a user cache
(``~/.cache/starcompactor/runners``, or ``STARCOMPACTOR_RUNNER_CACHE``):

* Prism: ``go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam>``
  through the Go module proxy; Beam's PrismRunner takes the binary as
  ``--prism_location`` and uses it as is.
* Flink: ``mvn dependency:copy`` of
  ``org.apache.beam:beam-runners-flink-<minor>-job-server:<beam>:jar``;
  Beam's FlinkRunner starts it with ``java -jar``. Maven Central as reachable
  here serves no Beam runner artifact, so FlinkRunner needs
  ``--flink_job_server_jar`` or ``STARCOMPACTOR_FLINK_JOB_SERVER_JAR``.

``prepare_runner_options(argv)`` is the entry point: it returns argv with the
runner's location options filled in, or raises a one-line ``UserError``.
``DaskRunner`` (or Beam's own, by its full name) becomes
``pipeline.dask_runner.DaskRunner``, which fixes Beam's translation.
``python -m starcompactor.pipeline.runners prism|flink-jar`` resolves one
ahead of time.

Caveats (Beam 2.77):

* Beam stops a runner's server (prism, the Flink job server JVM) only at
  interpreter exit, not when the pipeline is done. One pipeline per process
  (the CLI) leaves nothing behind.
* Beam's DirectRunner first tries Prism, downloading it from GitHub; offline
  that fails and it falls back to its own runners, but the failed Prism job
  server stays as the process's shared one, so a later PrismRunner pipeline
  in the *same* process ignores --prism_location and fails trying to
  download. Run PrismRunner in a process that ran no DirectRunner pipeline,
  or add --experiments=disable_prism_server_singleton (a server per
  pipeline, each left until exit).
"""

import argparse
import contextlib
import fcntl
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions, StandardOptions)
from apache_beam.version import __version__ as BEAM_VERSION

from starcompactor.pipeline.arguments import beam_option_parser
from starcompactor.pipeline.errors import UserError

# 1.20 is Flink's long-term-support 1.x line (Beam's default is its newest).
DEFAULT_FLINK_VERSION = '1.20'

FLINK_JAR_ENV = 'STARCOMPACTOR_FLINK_JOB_SERVER_JAR'

PRISM_PACKAGE = 'github.com/apache/beam/sdks/v2/go/cmd/prism'

_FLINK_RUNNER = 'apache_beam.runners.portability.flink_runner.FlinkRunner'
_PRISM_RUNNER = 'apache_beam.runners.portability.prism_runner.PrismRunner'
_BEAM_DASK_RUNNER = 'apache_beam.runners.dask.dask_runner.DaskRunner'
DASK_RUNNER = 'starcompactor.pipeline.dask_runner.DaskRunner'

# Resolution can take minutes (a 200+ MB jar, a Go build); a hung one must
# not hang the CLI forever.
_MVN_TIMEOUT_S = 1800
_GO_TIMEOUT_S = 1800


class RunnerUnavailable(UserError):
    """The runner's artifact is not served by the reachable registry.

    Distinct from a missing tool (mvn, go, java) or a broken network: the
    registry answered, and it has no such artifact."""


# --------------------------------------------------------------------------
# Cache

def runner_cache_dir() -> Path:
    """The cache directory (created): STARCOMPACTOR_RUNNER_CACHE or
    ~/.cache/starcompactor/runners."""
    path = Path(os.environ.get('STARCOMPACTOR_RUNNER_CACHE')
                or Path.home() / '.cache' / 'starcompactor' / 'runners')
    path = path.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot create runner cache {path}: {e.strerror}')
    return path


@contextlib.contextmanager
def _locked(cache: Path, name: str):
    """One resolver at a time per artifact (concurrent CLI runs, pytest -n)."""
    with open(cache / f'.{name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _last_line(text: str, pattern: str = None) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if pattern:
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[0]
    return lines[-1] if lines else '(no output)'


def _clean_mvn(line: str) -> str:
    line = re.sub(r'\x1b\[[0-9;]*m', '', line)
    return re.sub(r'^\[ERROR\]\s*', '', line).strip()


# --------------------------------------------------------------------------
# Flink job server

def flink_job_server_coordinates(flink_version: str = DEFAULT_FLINK_VERSION,
                                 beam_version: str = BEAM_VERSION) -> str:
    return (f'org.apache.beam:beam-runners-flink-{flink_version}-job-server:'
            f'{beam_version}:jar')


def flink_job_server_jar(flink_version: str = DEFAULT_FLINK_VERSION,
                         beam_version: str = BEAM_VERSION) -> str:
    """Path to Beam's Flink job server jar, resolved through Maven once."""
    if not shutil.which('java'):
        raise UserError('java not found: FlinkRunner needs a Java 11+ runtime '
                        '(install a JDK, e.g. openjdk-17-jre-headless)')
    cache = runner_cache_dir()
    artifact = f'beam-runners-flink-{flink_version}-job-server'
    jar = cache / f'{artifact}-{beam_version}.jar'
    if jar.is_file() and jar.stat().st_size > 0:
        return str(jar)
    mvn = shutil.which('mvn')
    if not mvn:
        raise UserError('mvn not found: install Maven or pass '
                        '--flink_job_server_jar')
    coords = flink_job_server_coordinates(flink_version, beam_version)
    with _locked(cache, artifact):
        if jar.is_file() and jar.stat().st_size > 0:
            return str(jar)
        with tempfile.TemporaryDirectory(dir=cache,
                                         prefix='.mvn-') as tmp:
            cmd = [mvn, '-q', '-B', 'dependency:copy',
                   f'-Dartifact={coords}', f'-DoutputDirectory={tmp}']
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      timeout=_MVN_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                raise UserError(f'mvn timed out resolving {coords}; pass '
                                '--flink_job_server_jar')
            got = Path(tmp) / f'{artifact}-{beam_version}.jar'
            if proc.returncode != 0 or not got.is_file():
                out = proc.stdout or ''
                if 'Could not find artifact' in out or \
                        'Unable to find artifact' in out:
                    raise RunnerUnavailable(
                        f'Beam\'s Flink job server {coords} is not served by '
                        'the Maven repository: pass --flink_job_server_jar=PATH '
                        '(or set STARCOMPACTOR_FLINK_JOB_SERVER_JAR)')
                detail = _clean_mvn(_last_line(out, r'ERROR'))
                raise UserError(f'mvn could not resolve {coords}: {detail}; '
                                'pass --flink_job_server_jar')
            os.replace(got, jar)
    return str(jar)


# --------------------------------------------------------------------------
# Prism

def prism_binary(beam_version: str = BEAM_VERSION) -> str:
    """Path to Beam's Prism runner binary, built once with go install."""
    cache = runner_cache_dir()
    bindir = cache / f'prism-{beam_version}'
    binary = bindir / 'prism'
    if binary.is_file() and os.access(binary, os.X_OK):
        return str(binary)
    if '.dev' in beam_version:
        raise UserError(f'Beam {beam_version} is a development build with no '
                        'released Prism: pass --prism_location')
    go = shutil.which('go')
    if not go:
        raise UserError('go not found: install Go (1.21+) or pass '
                        '--prism_location')
    with _locked(cache, f'prism-{beam_version}'):
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
        tmpbin = Path(tempfile.mkdtemp(dir=cache, prefix='.prism-'))
        env = {**os.environ, 'GOBIN': str(tmpbin), 'CGO_ENABLED': '0',
               # never let go fetch a toolchain of its own (not reachable)
               'GOTOOLCHAIN': os.environ.get('GOTOOLCHAIN', 'local')}
        cmd = [go, 'install', f'{PRISM_PACKAGE}@v{beam_version}']
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  env=env, timeout=_GO_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmpbin, ignore_errors=True)
            raise UserError(f'go install {PRISM_PACKAGE}@v{beam_version} '
                            'timed out; pass --prism_location')
        built = tmpbin / 'prism'
        if proc.returncode != 0 or not built.is_file():
            shutil.rmtree(tmpbin, ignore_errors=True)
            detail = _last_line(proc.stdout or '')
            if re.search(r'unknown revision|not found|invalid version',
                         proc.stdout or ''):
                raise RunnerUnavailable(
                    f'Prism v{beam_version} is not served by the Go module '
                    f'proxy ({detail}); pass --prism_location')
            raise UserError(f'go install of Prism v{beam_version} failed: '
                            f'{detail}; pass --prism_location')
        bindir.mkdir(exist_ok=True)
        os.replace(built, binary)
        shutil.rmtree(tmpbin, ignore_errors=True)
    return str(binary)


# --------------------------------------------------------------------------
# Options

def _runner_class(name: str) -> str:
    """The class Beam's create_runner picks for --runner name (its rule),
    where DaskRunner is this project's."""
    if name == _BEAM_DASK_RUNNER:
        return DASK_RUNNER
    known = {path.rsplit('.', 1)[-1].lower(): path
             for path in (*StandardOptions.ALL_KNOWN_RUNNERS, DASK_RUNNER)}
    return known.get(name.lower(), known.get(name.lower() + 'runner', name))


def _given_runner(argv) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--runner', default=StandardOptions.DEFAULT_RUNNER)
    return _runner_class(parser.parse_known_args(argv)[0].runner)


def load_runner_options(argv):
    """Beam knows a runner's options (--dask_client_address, ...) once the
    runner's module is imported: the Dask runner's is, for a Dask run only
    (importing Dask takes 0.3 s). Call before parsing argv strictly."""
    if _given_runner(argv) == DASK_RUNNER:
        try:
            importlib.import_module(DASK_RUNNER.rsplit('.', 1)[0])
        except ImportError:
            raise UserError("--runner DaskRunner needs Dask: pip install "
                            "'starcompactor[dask]'") from None


def _given_or_resolved_flink_jar(flink_version: str) -> str:
    jar = os.environ.get(FLINK_JAR_ENV)
    if not jar:
        return flink_job_server_jar(flink_version)
    if not os.path.isfile(jar):
        raise UserError(f'{FLINK_JAR_ENV}: no such file {jar}')
    return jar


def prepare_runner_options(argv):
    """argv with what Beam's Flink or Prism runner needs to run offline.

    --runner FlinkRunner: --flink_version=1.20, --flink_master=[local],
    --environment_type=LOOPBACK and, unless argv has one,
    --flink_job_server_jar (STARCOMPACTOR_FLINK_JOB_SERVER_JAR, else resolved
    through Maven). --runner PrismRunner: --environment_type=LOOPBACK and,
    unless argv has one, --prism_location (built with go install).
    --runner DaskRunner: this project's (``dask_runner``). Other runners:
    argv unchanged. What argv gives itself is kept and wins.
    Raises UserError when the runner cannot be had or a Beam option in argv
    is malformed."""
    argv = list(argv)
    parser = beam_option_parser()
    parser.set_defaults(flink_version=DEFAULT_FLINK_VERSION)
    options = parser.parse_known_args(argv)[0]
    runner = _runner_class(options.runner or StandardOptions.DEFAULT_RUNNER)
    if runner == DASK_RUNNER:
        load_runner_options(argv)
        return [*argv, f'--runner={DASK_RUNNER}']   # the last one counts
    if runner == _FLINK_RUNNER:
        added = [f'--flink_version={DEFAULT_FLINK_VERSION}',
                 '--flink_master=[local]']
        if options.flink_job_server_jar is None:
            jar = _given_or_resolved_flink_jar(options.flink_version)
            added.append(f'--flink_job_server_jar={jar}')
    elif runner == _PRISM_RUNNER:
        added = ([] if options.prism_location is not None
                 else [f'--prism_location={prism_binary()}'])
    else:
        return argv
    # Before argv: Beam keeps an option's last value, so argv's own win.
    return ['--environment_type=LOOPBACK', *added, *argv]


# --------------------------------------------------------------------------
# Command line

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m starcompactor.pipeline.runners',
        description='Resolve a Beam runner binary into the starcompactor '
                    'runner cache; print its path.')
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('prism', help='build Prism with go install')
    flink = sub.add_parser('flink-jar', help='fetch the Flink job server jar '
                           'with mvn')
    flink.add_argument('--flink_version', default=DEFAULT_FLINK_VERSION,
                       choices=FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)
    args = parser.parse_args(argv)
    try:
        if args.command == 'prism':
            print(prism_binary())
        else:
            print(flink_job_server_jar(args.flink_version))
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return e.exit_status
    return 0


if __name__ == '__main__':
    sys.exit(main())
