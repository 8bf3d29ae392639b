"""A Dask cluster on this machine, started as one is across machines: a
``dask scheduler`` process and ``dask worker`` processes (a nanny and its
worker each) that find it by address, each in its own session, stopped at
the end. For tests/test_on_runners.py."""
import json
import os
import signal
import subprocess
import sys
import time

from distributed import Client

START_TIMEOUT_S = 60


class DaskCluster:
    """``with DaskCluster(folder, workers=2, env=...) as cluster:``
    ``cluster.address`` is the scheduler's; its log is
    ``cluster.scheduler_log()``."""

    def __init__(self, folder, workers=2, env=None):
        self.folder = folder
        self.workers = workers
        self.env = env
        self.processes = []
        self.address = None

    def _start(self, name, *args):
        log = open(os.path.join(self.folder, f'{name}.log'), 'w')
        self.processes.append(subprocess.Popen(
            [sys.executable, '-m', 'dask', *args], stdout=log,
            stderr=subprocess.STDOUT, env=self.env, start_new_session=True))
        log.close()

    def __enter__(self):
        scheduler_file = os.path.join(self.folder, 'scheduler.json')
        try:
            self._start('scheduler', 'scheduler', '--host', '127.0.0.1',
                        '--port', '0', '--no-dashboard',
                        '--scheduler-file', scheduler_file)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not os.path.exists(scheduler_file):
                if time.monotonic() > deadline:
                    raise RuntimeError(f'no Dask scheduler after '
                                       f'{START_TIMEOUT_S} s: '
                                       f'{self.scheduler_log()}')
                time.sleep(0.2)
            time.sleep(0.2)   # the file is written whole, then it is there
            with open(scheduler_file) as f:
                self.address = json.load(f)['address']
            self._start('workers', 'worker', self.address, '--host',
                        '127.0.0.1', '--nworkers', str(self.workers),
                        '--nthreads', '1', '--no-dashboard',
                        '--local-directory',
                        os.path.join(self.folder, 'workers'))
            with Client(self.address, timeout=START_TIMEOUT_S) as client:
                client.wait_for_workers(self.workers,
                                        timeout=START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def scheduler_log(self):
        with open(os.path.join(self.folder, 'scheduler.log')) as f:
            return f.read()

    def tasks_run_per_worker(self):
        """How many tasks each worker has run so far."""
        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            return client.run(lambda dask_worker:
                              dask_worker.state.executed_count)
