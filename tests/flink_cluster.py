"""A standalone Flink session cluster on this machine, for the Flink tests
and benchmarks/flink_cluster.sh: one JobManager and one TaskManager, each a
daemon started by Flink's own bin scripts. Flink comes from PyPI
(apache-flink and apache-flink-libraries, assembled once in the runner
cache): Maven Central serves no flink-dist.

    python tests/flink_cluster.py start|status|stop [--slots N]
        [--rest_port P] [--flink_version 1.20]
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from starcompactor.pipeline.runners import (
    DEFAULT_FLINK_VERSION, runner_cache_dir)

# Newest patch release of each minor Beam has a job server for, on PyPI.
FLINK_RELEASES = {
    '1.19': '1.19.3',
    '1.20': '1.20.5',
    '2.0': '2.0.2',
    '2.1': '2.1.3',
    '2.2': '2.2.1',
}

_PIP_TIMEOUT_S = 1800


def _last_line(text):
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else '(no output)'


def flink_home(flink_version=DEFAULT_FLINK_VERSION):
    """A Flink distribution (bin/, conf/, lib/, opt/, plugins/) assembled
    once from PyPI's apache-flink (bin scripts, conf) and
    apache-flink-libraries (jars), downloaded with pip into a temp dir;
    nothing is installed into any venv."""
    release = FLINK_RELEASES[flink_version]
    cache = runner_cache_dir()
    home = cache / f'flink-{release}'
    if (home / 'lib' / f'flink-dist-{release}.jar').is_file():
        return str(home)
    with tempfile.TemporaryDirectory(dir=cache, prefix='.pip-') as tmp:
        proc = subprocess.run(
            [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
             '-d', tmp, f'apache-flink=={release}',
             f'apache-flink-libraries=={release}'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=_PIP_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f'pip could not download apache-flink '
                               f'{release}: {_last_line(proc.stdout)}')
        unpack = Path(tmp) / 'unpack'
        for archive in Path(tmp).iterdir():
            if archive.suffix in ('.whl', '.gz', '.zip'):
                shutil.unpack_archive(
                    archive, unpack,
                    'zip' if archive.suffix == '.whl' else None)
        deps = next(unpack.glob('apache_flink_libraries-*/deps'), None)
        pyflink = unpack / 'pyflink'
        if deps is None or not (pyflink / 'bin').is_dir():
            raise RuntimeError(f'apache-flink {release} from PyPI has no '
                               'bin/ or lib/ to build a Flink home from')
        staging = Path(tmp) / 'home'
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
        # Fails (and the staging copy goes with tmp) if another process put
        # a complete home there first.
        with contextlib.suppress(OSError):
            os.replace(staging, home)
    return str(home)


class FlinkSessionCluster:
    """A standalone Flink session cluster on localhost: one JobManager and
    one TaskManager with `slots` task slots, REST on `rest_port`.

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
    def master(self):
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

    def _write_config(self, src, dst):
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
            raise RuntimeError(f'{name} {action} failed: '
                               f'{_last_line(proc.stdout)}')

    def overview(self):
        url = f'http://localhost:{self.rest_port}/overview'
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())

    def start(self, timeout=60.0):
        if not shutil.which('java'):
            raise RuntimeError('java not found: a Flink cluster needs a JDK')
        env = self._env()
        self._script('jobmanager.sh', 'start', env)
        self._script('taskmanager.sh', 'start', env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError,
                                     urllib.error.URLError):
                if self.overview().get('slots-total', 0) >= self.slots:
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f'Flink cluster on {self.master} did not offer '
                           f'{self.slots} slots within {timeout:.0f}s; logs '
                           f'in {self.state_dir / "log"}')

    def pids(self):
        found = []
        for f in self.state_dir.glob('flink-*.pid'):
            found += [int(p) for p in f.read_text().split() if p.isdigit()]
        return found

    def stop(self, timeout=30.0):
        """Stops the daemons start() began; RuntimeError if one is still
        running `timeout` seconds later."""
        pids = self.pids()
        if self.home is None and not pids:
            return
        env = self._env()
        for name in ('taskmanager.sh', 'jobmanager.sh'):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._script(name, 'stop', env)
        deadline = time.monotonic() + timeout
        while True:
            running = [pid for pid in pids if os.path.exists(f'/proc/{pid}')]
            if not running:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f'Flink daemons still running {timeout:.0f}s '
                                   f'after stop: {running}')
            time.sleep(0.2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python tests/flink_cluster.py',
        description='A local Flink session cluster: start, status or stop.')
    parser.add_argument('action', choices=('start', 'status', 'stop'))
    parser.add_argument('--flink_version', default=DEFAULT_FLINK_VERSION,
                        choices=sorted(FLINK_RELEASES))
    parser.add_argument('--slots', type=int, default=2)
    parser.add_argument('--rest_port', type=int, default=8081)
    args = parser.parse_args(argv)
    cluster = FlinkSessionCluster(args.flink_version, slots=args.slots,
                                  rest_port=args.rest_port)
    try:
        if args.action == 'start':
            cluster.start()
            print(f'Flink {cluster.overview().get("flink-version")} session '
                  f'cluster on {cluster.master} ({args.slots} slots), pids '
                  f'{cluster.pids()}')
        elif args.action == 'stop':
            cluster.stop()
        else:
            try:
                print(cluster.overview())
            except OSError:
                print(f'no Flink cluster on {cluster.master}')
                return 1
    except RuntimeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0

if __name__ == '__main__':
    sys.exit(main())
