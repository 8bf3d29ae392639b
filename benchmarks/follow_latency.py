#!/usr/bin/env python3
"""Latency and database load of ``starcompactor instances --follow``.

    python benchmarks/follow_latency.py [--minutes 5] [--poll-interval 10s]
        [--window 1m] [--overlap 30s] [--instances 2000] [--seed 0]

Loads a synthetic two-cell history of ``--instances`` instances
(``synth.load_mysql``, the backlog) into a private, throwaway MariaDB
(``tests/mariadb_server.py``), starts the command on it for ``--minutes``
(the DirectRunner, which runs it on Prism), and meanwhile plays Nova in
``nova_cell1``: an event starts (its row inserted, unfinished) and finishes
(its row updated) every second or so, each under an event name of its own.
A watcher lists the window files every 0.1 s and notes when each event's
row first is in one; its latency is that moment minus the commit of the
update that finished the event. Only events finished early enough that
their window is closed by the watermark (not by the end of the run) count.

Reports min / median / 90th percentile / max latency and the statements
per poll (the command's summary line) to stdout and
``benchmarks/results-follow.md`` (appended).
"""
import argparse
import csv
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

import mariadb_server  # noqa: E402  (tests/mariadb_server.py)

from starcompactor import synth  # noqa: E402
from starcompactor.pipeline import shards  # noqa: E402
from starcompactor.pipeline.options import duration  # noqa: E402

CELLS = ('nova_cell0', 'nova_cell1')
EPOCH = '2015-09-01T00:00:00Z'


def now_text():
    return time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())


class Nova(threading.Thread):
    """Events started and finished in ``cell`` until ``stop`` is set; the
    wall time each finishing update committed, by event name."""

    def __init__(self, server, cell, stop):
        super().__init__(daemon=True)
        self.server, self.cell, self.stop = server, cell, stop
        self.finished = {}

    def run(self):
        with self.server.admin(self.cell) as db, db.cursor() as cursor:
            instance = str(uuid.uuid4())
            cursor.execute(
                'INSERT INTO instances (uuid, user_id, project_id, hostname, '
                'host, memory_mb, root_gb, vcpus, deleted, created_at) '
                "VALUES (%s, 'u', 'p', 'vm', 'cmp', 1024, 10, 1, 0, %s)",
                (instance, now_text()))
            cursor.execute(
                "INSERT INTO instance_actions (action, instance_uuid, "
                "start_time) VALUES ('reboot', %s, %s)",
                (instance, now_text()))
            action = cursor.lastrowid
            running, n = [], 0
            while not self.stop.is_set():
                n += 1
                name = f'bench_event_{n:05d}'
                cursor.execute(
                    'INSERT INTO instance_actions_events (event, action_id, '
                    'start_time) VALUES (%s, %s, %s)',
                    (name, action, now_text()))
                running.append((cursor.lastrowid, name))
                if len(running) > 2:     # each runs a couple of seconds
                    event, finished = running.pop(0)
                    cursor.execute(
                        'UPDATE instance_actions_events SET finish_time = '
                        "%s, result = 'Success' WHERE id = %s",
                        (now_text(), event))
                    self.finished[finished] = time.time()
                time.sleep(1.0)


class Watcher(threading.Thread):
    """When each bench event's row is first in a window file."""

    def __init__(self, out, stop):
        super().__init__(daemon=True)
        self.out, self.stop = out, stop
        self.seen, self.files = {}, set()

    def run(self):
        while not self.stop.is_set():
            for _, path in shards.window_files(self.out, ('csv',)):
                if path in self.files:
                    continue
                at = time.time()
                self.files.add(path)
                with open(path, newline='', encoding='utf-8') as f:
                    for row in csv.DictReader(f):
                        if row['EVENT'].startswith('bench_event_'):
                            self.seen.setdefault(row['EVENT'], at)
            time.sleep(0.1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--minutes', type=float, default=5)
    parser.add_argument('--poll-interval', default='10s')
    parser.add_argument('--window', default='1m')
    parser.add_argument('--overlap', default='30s')
    parser.add_argument('--instances', type=int, default=2000)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    poll, window, overlap = (duration(args.poll_interval),
                             duration(args.window), duration(args.overlap))

    server = mariadb_server.start_server()
    work = tempfile.mkdtemp(prefix='starcompactor-bench-follow-')
    stop = threading.Event()
    try:
        with server.admin() as admin:
            loaded = synth.load_mysql(admin, args.instances, seed=args.seed,
                                      cells=CELLS)
        key_file = os.path.join(work, 'key')
        with open(key_file, 'wb') as f:
            f.write(b'benchmark-key-0123456789abcdef!!')
        out = os.path.join(work, 'trace')
        command = [
            sys.executable, '-m', 'starcompactor', 'instances', '--follow',
            '--mysql-host', '127.0.0.1', '--mysql-port', str(server.port),
            '--mysql-user', 'root', '--databases', ','.join(CELLS),
            '--output', out, '--state', os.path.join(work, 'state'),
            '--mask-key-file', key_file, '--epoch', EPOCH, '--formats', 'csv',
            '--poll-interval', args.poll_interval, '--window', args.window,
            '--overlap', args.overlap,
            '--stop-after', f'{args.minutes * 60:.0f}s']
        proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, MYSQL_PWD=''))
        nova, watcher = Nova(server, CELLS[1], stop), Watcher(out, stop)
        nova.start()
        watcher.start()
        stdout, stderr = proc.communicate()
        ended = time.time()
        stop.set()
        nova.join()
        watcher.join()
        if proc.returncode:
            log = os.path.join(work, 'stderr.txt')
            with open(log, 'w', encoding='utf-8') as f:
                f.write(stderr)
            sys.exit(f'the command failed (its stderr: {log}):\n'
                     f'{stderr[-1000:]}')
    finally:
        server.stop()

    # A window still open when the run stopped was written then, early.
    last_closed = ended - overlap - 1 - poll - window
    latencies = sorted(watcher.seen[name] - at
                       for name, at in nova.finished.items()
                       if at < last_closed and name in watcher.seen)
    missing = [name for name, at in nova.finished.items()
               if name not in watcher.seen]
    summary = [line for line in stdout.splitlines() if 'polls' in line]
    quantile = statistics.quantiles(latencies, n=10)[-1]
    lines = [
        f'## `--poll-interval {args.poll_interval} --window {args.window} '
        f'--overlap {args.overlap}` ({datetime.date.today()})', '',
        f'{args.minutes:g} minutes of `starcompactor instances --follow` '
        f'(DirectRunner, that is Prism) over a synthetic history of '
        f'{args.instances:,} instances '
        f'({loaded.total("instance_actions_events"):,} events, live '
        f'and shadow_) in two cells, one event finishing about every second '
        f'in nova_cell1; {platform.machine()}, {os.cpu_count()} cores.', '',
        f'- events measured: {len(latencies)} (finished while windows still '
        f'closed by the watermark); events never seen: {len(missing)}',
        f'- latency from the finishing commit to the row in a final window '
        f'file: min {latencies[0]:.1f} s, median '
        f'{statistics.median(latencies):.1f} s, 90th percentile '
        f'{quantile:.1f} s, max {latencies[-1]:.1f} s',
        f'- load: {summary[0].strip() if summary else "(no summary)"}', '']
    print('\n'.join(lines))
    with open(os.path.join(HERE, 'results-follow.md'), 'a',
              encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
