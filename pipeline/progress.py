"""Progress of a running job, shown while Beam runs it.

Beam's metrics are only readable when a run is over (the DirectRunner runs a
pipeline inside ``run()``), so every process that counts also writes its
tallies to a file in the run's progress folder (``counters.tally``); the
launcher sums those files and shows the rows read per table and the trace
rows made, with a rate and an estimate of the time left.
"""
import atexit
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

from starcompactor.transforms.counters import (
    HOST_TRACE_ROWS, PROGRESS_FOLDER_ENV, TRACE_ROWS)

ROWS_COUNTERS = (TRACE_ROWS, HOST_TRACE_ROWS)   # a trace run makes both

log = logging.getLogger('starcompactor')


@contextlib.contextmanager
def run_folder():
    """A private folder for one run, removed at exit: Beam's temporary files
    go there (it is ``TMPDIR`` for the run and its worker processes; Beam
    would otherwise leave ``beam-temp*`` folders in /tmp), and so do the
    workers' progress tallies. Yields the progress folder.

    Removed at interpreter exit rather than at the end of the run: Beam
    removes some of its own temporary folders at exit, and would fail on a
    folder already gone."""
    root = tempfile.mkdtemp(prefix='starcompactor-run-')
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    progress = os.path.join(root, 'progress')
    os.mkdir(progress)
    saved = {name: os.environ.get(name)
             for name in ('TMPDIR', PROGRESS_FOLDER_ENV)}
    saved_tempdir = tempfile.tempdir
    os.environ.update({'TMPDIR': root, PROGRESS_FOLDER_ENV: progress})
    tempfile.tempdir = root
    try:
        yield progress
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_totals(folder):
    """Counts summed over every worker process that has reported."""
    totals = {}
    for name in os.listdir(folder):
        if not name.endswith('.json'):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            continue
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return f'{seconds} s'
    return f'{seconds // 60} min {seconds % 60:02d} s'


def describe(totals, tables, estimated_events, seconds):
    """One line: rows read per table, trace rows, rate and time left."""
    read = {t: totals.get(f'read.{t}', 0) for t in tables}
    parts = [f'{t} {read[t]:,}' for t in tables]
    line = f'read {", ".join(parts)}'
    events = read.get('events', 0)
    if estimated_events and events < estimated_events:
        line += f' of ~{estimated_events:,} events'
        if events and seconds > 0:
            rate = events / seconds
            left = (estimated_events - events) / rate
            line += f' ({rate:,.0f}/s, ~{_duration(left)} left)'
    trace_rows = sum(totals.get(name, 0) for name in ROWS_COUNTERS)
    if trace_rows:
        line += f'; {trace_rows:,} trace rows'
    return f'{line}; {_duration(seconds)}'


class ProgressDisplay:
    """Shows progress until stopped: one line rewritten in place on a
    terminal, a log line every ``log_every_s`` otherwise."""

    def __init__(self, folder, tables, estimated_events, stream=sys.stderr,
                 log_every_s=30.0):
        self.folder = folder
        self.tables = tables
        self.estimated_events = estimated_events
        self.stream = stream
        self.on_terminal = stream.isatty()
        self.every_s = 1.0 if self.on_terminal else log_every_s
        self.stopped = threading.Event()
        self.began = time.monotonic()
        self.thread = threading.Thread(target=self._show, daemon=True,
                                       name='starcompactor-progress')
        self.width = 0

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        if self.on_terminal and self.width:
            self.stream.write('\r' + ' ' * self.width + '\r')
            self.stream.flush()

    def line(self):
        return describe(read_totals(self.folder), self.tables,
                        self.estimated_events, time.monotonic() - self.began)

    def _show(self):
        while not self.stopped.wait(self.every_s):
            line = self.line()
            if self.on_terminal:
                self.stream.write('\r' + line.ljust(self.width))
                self.stream.flush()
                self.width = max(self.width, len(line))
            else:
                log.info('progress: %s', line)
