"""Apache Beam's portable runners (Prism, Flink) made usable offline.

Beam's Python SDK finds its runner binaries by downloading them from GitHub
(Prism) or from Beam's own HTTPS repository (the Flink job server jar). Where
only the package registries are reachable, both fail. This module resolves
them through the ordinary clients instead, once, into a user cache:

* Prism: ``go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam>``
  through the Go module proxy, into ``<cache>/prism-<beam>/prism``. Beam's
  PrismRunner takes ``--prism_location=<that binary>`` as is (a local path
  that is not a zip is used directly, nothing is downloaded).
* Flink: ``mvn dependency:copy`` of
  ``org.apache.beam:beam-runners-flink-<minor>-job-server:<beam>:jar``
  into ``<cache>/``; Beam's FlinkRunner starts it with ``java -jar``.

The cache is ``~/.cache/starcompactor/runners`` unless
``STARCOMPACTOR_RUNNER_CACHE`` names another directory.

``prepare_runner_options(argv)`` is the entry point for the CLI: it returns
argv with the runner's location options filled in. Anything that cannot be
resolved raises ``UserError`` with a one-line message.

Also here: ``pipeline_proto_text(pipeline)``, the bytes a portable runner is
sent (graph, pickled functions decompressed, pipeline options), for tests to
search for secrets; and ``FlinkSessionCluster``, a standalone Flink session
cluster (one JobManager, one TaskManager) on this machine, assembled from
PyPI's ``apache-flink`` and ``apache-flink-libraries`` (Maven Central does not
serve ``flink-dist``).

Run ``python -m starcompactor.pipeline.runners --help`` for the command line.

Caveats (Beam 2.77):

* Beam stops a runner's server (prism, the Flink job server JVM) only at
  interpreter exit, not when the pipeline is done. Prism is one shared
  server per process; Flink starts a new JVM per pipeline. One pipeline per
  process (the CLI) leaves nothing behind.
* Beam's DirectRunner first tries Prism, downloading it from GitHub; offline
  that fails and it falls back to its own runners, but the failed Prism job
  server stays as the process's shared one, so a later PrismRunner pipeline
  in the *same* process ignores --prism_location and fails trying to
  download. Run PrismRunner in a process that ran no DirectRunner pipeline,
  or add --experiments=disable_prism_server_singleton (a server per
  pipeline, each left until exit).
* Maven Central as reachable here serves no Beam 2.77 Java artifact at all
  (not even beam-sdks-java-core), so the Flink job server cannot be resolved
  on this network: prepare_runner_options raises RunnerUnavailable unless
  --flink_job_server_jar or STARCOMPACTOR_FLINK_JOB_SERVER_JAR is given.
"""

import base64
import binascii
import bz2
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from apache_beam.version import __version__ as BEAM_VERSION

from starcompactor.pipeline.errors import UserError

# Flink minors Beam publishes job servers for (Beam's FlinkRunnerOptions).
try:
    from apache_beam.options.pipeline_options import FlinkRunnerOptions
    PUBLISHED_FLINK_VERSIONS = tuple(FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)
except (ImportError, AttributeError):  # pragma: no cover - older Beam
    PUBLISHED_FLINK_VERSIONS = ('1.19', '1.20')

# 1.20 is Flink's long-term-support 1.x line. Override with --flink_version
# or STARCOMPACTOR_FLINK_VERSION.
DEFAULT_FLINK_VERSION = '1.20'

# Newest patch release of each minor on PyPI (apache-flink), for the
# session cluster. STARCOMPACTOR_FLINK_DIST_VERSION overrides.
FLINK_DIST_VERSIONS = {
    '1.19': '1.19.3',
    '1.20': '1.20.5',
    '2.0': '2.0.2',
    '2.1': '2.1.3',
    '2.2': '2.2.1',
}

PRISM_PACKAGE = 'github.com/apache/beam/sdks/v2/go/cmd/prism'

_FLINK_NAMES = ('flinkrunner', 'flink',
                'apache_beam.runners.portability.flink_runner.flinkrunner')
_PRISM_NAMES = ('prismrunner', 'prism',
                'apache_beam.runners.portability.prism_runner.prismrunner')

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


def _check_flink_version(flink_version: str) -> None:
    if flink_version not in PUBLISHED_FLINK_VERSIONS:
        raise UserError(
            f'Flink {flink_version} has no Beam {BEAM_VERSION} job server; '
            f'choose one of {", ".join(PUBLISHED_FLINK_VERSIONS)}')


def flink_job_server_jar(flink_version: str = DEFAULT_FLINK_VERSION,
                         beam_version: str = BEAM_VERSION) -> str:
    """Path to Beam's Flink job server jar, resolved through Maven once."""
    _check_flink_version(flink_version)
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

def _option_value(argv, name):
    """(present, value) of --name / --name=value / --name value in argv."""
    flag = '--' + name
    for i, arg in enumerate(argv):
        if arg == flag:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith('--'):
                return True, nxt
            return True, None
        if arg.startswith(flag + '='):
            return True, arg[len(flag) + 1:]
    return False, None


def runner_kind(argv) -> str:
    """'flink', 'prism' or '' for the --runner in argv."""
    present, runner = _option_value(argv, 'runner')
    name = (runner or '').strip().lower() if present else ''
    if name in _FLINK_NAMES:
        return 'flink'
    if name in _PRISM_NAMES:
        return 'prism'
    return ''


def prepare_runner_options(argv):
    """argv with what Beam's Flink or Prism runner needs to run offline.

    --runner FlinkRunner|flink: unless given, --flink_job_server_jar (resolved
    through Maven, or STARCOMPACTOR_FLINK_JOB_SERVER_JAR), --flink_version
    matching it, --flink_master=[local] and --environment_type=LOOPBACK.
    --runner PrismRunner|prism: unless given, --prism_location (built with go
    install) and --environment_type=LOOPBACK. Other runners: argv unchanged.
    Raises UserError when the runner cannot be had."""
    argv = list(argv)
    kind = runner_kind(argv)
    if not kind:
        return argv
    added = []
    if kind == 'flink':
        has_version, version = _option_value(argv, 'flink_version')
        version = version or os.environ.get('STARCOMPACTOR_FLINK_VERSION') \
            or DEFAULT_FLINK_VERSION
        _check_flink_version(version)
        if not _option_value(argv, 'flink_job_server_jar')[0]:
            jar = os.environ.get('STARCOMPACTOR_FLINK_JOB_SERVER_JAR')
            if jar:
                if not os.path.isfile(jar):
                    raise UserError('STARCOMPACTOR_FLINK_JOB_SERVER_JAR: no '
                                    f'such file {jar}')
            else:
                jar = flink_job_server_jar(version)
            added.append(f'--flink_job_server_jar={jar}')
        if not has_version:
            added.append(f'--flink_version={version}')
        if not _option_value(argv, 'flink_master')[0]:
            added.append('--flink_master=[local]')
    else:
        if not _option_value(argv, 'prism_location')[0]:
            added.append(f'--prism_location={prism_binary()}')
    if not _option_value(argv, 'environment_type')[0]:
        added.append('--environment_type=LOOPBACK')
    return argv + added


# --------------------------------------------------------------------------
# What a portable runner is sent

_B64_RUN = re.compile(rb'[A-Za-z0-9+/]{24,}={0,2}')


def _unpickled_payloads(data: bytes):
    """Decompressed bodies of Beam's pickled payloads (base64 of bz2 or
    zlib) found anywhere in data, so a secret inside a pickled DoFn, coder
    or side input can be found by a plain substring search."""
    for match in _B64_RUN.finditer(data):
        run = match.group()
        run = run[:len(run) - len(run) % 4] if not run.endswith(b'=') else run
        try:
            raw = base64.b64decode(run, validate=True)
        except (binascii.Error, ValueError):
            continue
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                yield decompress(raw)
                break
            except (OSError, ValueError, zlib.error, EOFError):
                continue


def pipeline_proto_text(pipeline, options=None) -> bytes:
    """Everything a portable runner receives for this pipeline, as bytes to
    search: the Runner API graph (serialized), every pickled payload in it
    decompressed, and the pipeline options as PortableRunner encodes them
    for the job service. With --environment_type=LOOPBACK the SDK worker
    is this process, so nothing else leaves it for the runner."""
    from apache_beam.runners.portability.portable_runner import \
        JobServiceHandle

    proto = pipeline.to_runner_api().SerializeToString()
    parts = [proto]
    parts.extend(_unpickled_payloads(proto))
    opts = options if options is not None else getattr(pipeline, '_options',
                                                       None)
    if opts is not None:
        struct = JobServiceHandle.encode_pipeline_options(
            opts.get_all_options(retain_unknown_options=True))
        parts.append(struct.SerializeToString())
    return b'\n'.join(parts)


# --------------------------------------------------------------------------
# Flink session cluster from PyPI

def _flink_dist_version(flink_version: str) -> str:
    explicit = os.environ.get('STARCOMPACTOR_FLINK_DIST_VERSION')
    if explicit:
        return explicit
    try:
        return FLINK_DIST_VERSIONS[flink_version]
    except KeyError:
        raise UserError(f'no known Flink release for {flink_version}: set '
                        'STARCOMPACTOR_FLINK_DIST_VERSION')


def flink_home(flink_version: str = DEFAULT_FLINK_VERSION) -> str:
    """A Flink distribution (bin/, conf/, lib/, opt/, plugins/) assembled
    once from PyPI's apache-flink (bin scripts, conf) and
    apache-flink-libraries (jars), downloaded with pip into a temp dir;
    nothing is installed into any venv."""
    release = _flink_dist_version(flink_version)
    cache = runner_cache_dir()
    home = cache / f'flink-{release}'
    if (home / 'lib' / f'flink-dist-{release}.jar').is_file() and \
            (home / 'bin' / 'jobmanager.sh').is_file():
        return str(home)
    with _locked(cache, f'flink-{release}'), \
            tempfile.TemporaryDirectory(dir=cache, prefix='.pip-') as tmp:
        if (home / 'lib' / f'flink-dist-{release}.jar').is_file():
            return str(home)
        cmd = [sys.executable, '-m', 'pip', 'download', '--quiet',
               '--no-deps', '-d', tmp, f'apache-flink=={release}',
               f'apache-flink-libraries=={release}']
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=_MVN_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise UserError(f'pip could not download apache-flink {release}: '
                            f'{_last_line(proc.stdout or "")}')
        staging = Path(tmp) / 'home'
        unpack = Path(tmp) / 'unpack'
        for archive in Path(tmp).iterdir():
            if archive.suffix in ('.whl', '.gz', '.zip'):
                shutil.unpack_archive(
                    str(archive), str(unpack),
                    'zip' if archive.suffix == '.whl' else None)
        deps = next(unpack.glob('apache_flink_libraries-*/deps'), None)
        pyflink = unpack / 'pyflink'
        if deps is None or not (pyflink / 'bin').is_dir():
            raise UserError(f'apache-flink {release} from PyPI has no '
                            'bin/ or lib/ to build a Flink home from')
        staging.mkdir()
        for sub in ('lib', 'opt', 'plugins'):
            if (deps / sub).is_dir():
                shutil.copytree(deps / sub, staging / sub)
        shutil.copytree(pyflink / 'bin', staging / 'bin')
        shutil.copytree(pyflink / 'conf', staging / 'conf')
        for jar in (deps / 'bin').glob('*.jar'):
            shutil.copy2(jar, staging / 'bin')
        for script in (staging / 'bin').iterdir():
            script.chmod(0o755)
        (staging / 'log').mkdir()
        if home.exists():
            shutil.rmtree(home)
        os.replace(staging, home)
    return str(home)


class FlinkSessionCluster:
    """A standalone Flink session cluster on localhost: one JobManager and
    one TaskManager with `slots` task slots, each its own daemon process
    started by Flink's own bin scripts, REST on `rest_port`.

        with FlinkSessionCluster(slots=2) as cluster:
            ... --runner FlinkRunner --flink_master=cluster.master ...

    Pid and log files live in `state_dir` (default <cache>/flink-cluster),
    so stop() ends exactly the processes start() began."""

    def __init__(self, flink_version=DEFAULT_FLINK_VERSION, slots=2,
                 rest_port=8081, state_dir=None, process_memory='1600m'):
        self.flink_version = flink_version
        self.slots = slots
        self.rest_port = rest_port
        self.state_dir = Path(state_dir or runner_cache_dir() / 'flink-cluster')
        self.process_memory = process_memory
        self.home = None

    @property
    def master(self) -> str:
        return f'localhost:{self.rest_port}'

    def _env(self):
        if self.home is None:
            self.home = flink_home(self.flink_version)
        conf = self.state_dir / 'conf'
        conf.mkdir(parents=True, exist_ok=True)
        for f in Path(self.home, 'conf').iterdir():
            if f.name != 'config.yaml':
                shutil.copy2(f, conf / f.name)
        self._write_config(Path(self.home, 'conf', 'config.yaml'),
                           conf / 'config.yaml')
        (self.state_dir / 'log').mkdir(exist_ok=True)
        return {**os.environ, 'FLINK_HOME': self.home,
                'FLINK_CONF_DIR': str(conf),
                'FLINK_PID_DIR': str(self.state_dir),
                'FLINK_LOG_DIR': str(self.state_dir / 'log')}

    def _write_config(self, src: Path, dst: Path):
        import yaml
        config = yaml.safe_load(src.read_text()) or {}

        def put(dotted, value):
            node = config
            *parents, leaf = dotted.split('.')
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        put('taskmanager.numberOfTaskSlots', self.slots)
        put('parallelism.default', self.slots)
        put('rest.port', self.rest_port)
        put('rest.address', 'localhost')
        put('rest.bind-address', 'localhost')
        put('jobmanager.memory.process.size', self.process_memory)
        put('taskmanager.memory.process.size', self.process_memory)
        dst.write_text(yaml.safe_dump(config, sort_keys=False))

    def _script(self, name, action, env):
        proc = subprocess.run([os.path.join(self.home, 'bin', name), action],
                              env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise UserError(f'{name} {action} failed: '
                            f'{_last_line(proc.stdout or "")}')
        return proc.stdout

    def overview(self):
        import json
        url = f'http://localhost:{self.rest_port}/overview'
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())

    def start(self, timeout=60.0):
        if not shutil.which('java'):
            raise UserError('java not found: a Flink cluster needs a JDK')
        env = self._env()
        self._script('jobmanager.sh', 'start', env)
        self._script('taskmanager.sh', 'start', env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError,
                                     urllib.error.URLError):
                info = self.overview()
                if info.get('slots-total', 0) >= self.slots:
                    return self
            time.sleep(0.5)
        self.stop()
        raise UserError(f'Flink cluster on {self.master} did not offer '
                        f'{self.slots} slots within {timeout:.0f}s; logs in '
                        f'{self.state_dir / "log"}')

    def pids(self):
        found = []
        for f in self.state_dir.glob('flink-*.pid'):
            found += [int(p) for p in f.read_text().split() if p.isdigit()]
        return found

    def stop(self):
        if self.home is None and not self.pids():
            return
        env = self._env()
        for name in ('taskmanager.sh', 'jobmanager.sh'):
            with contextlib.suppress(UserError, subprocess.TimeoutExpired):
                self._script(name, 'stop', env)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# Command line

def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        prog='python -m starcompactor.pipeline.runners',
        description='Resolve Beam runner binaries into the starcompactor '
                    'runner cache, or run a local Flink session cluster.')
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('prism', help='build Prism once; print its path')
    flink = sub.add_parser('flink-jar', help='resolve the Flink job server '
                           'jar once; print its path')
    flink.add_argument('--flink_version', default=DEFAULT_FLINK_VERSION)
    cluster = sub.add_parser('flink-cluster', help='start/stop/status of a '
                             'local Flink session cluster')
    cluster.add_argument('action', choices=('start', 'stop', 'status'))
    cluster.add_argument('--flink_version', default=DEFAULT_FLINK_VERSION)
    cluster.add_argument('--slots', type=int, default=2)
    cluster.add_argument('--rest_port', type=int, default=8081)
    args = parser.parse_args(argv)
    try:
        if args.command == 'prism':
            print(prism_binary())
        elif args.command == 'flink-jar':
            print(flink_job_server_jar(args.flink_version))
        else:
            c = FlinkSessionCluster(args.flink_version, slots=args.slots,
                                    rest_port=args.rest_port)
            if args.action == 'start':
                c.start()
                print(f'Flink {c.overview().get("flink-version")} session '
                      f'cluster on {c.master} ({args.slots} slots), pids '
                      f'{c.pids()}')
            elif args.action == 'stop':
                c.stop()
            else:
                try:
                    print(c.overview())
                except OSError:
                    print('not running')
                    return 1
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
