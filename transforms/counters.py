"""Beam metrics of a run: one namespace, names that read well in a summary.

Every source row is counted when read, and every row that does not become a
trace row is counted under exactly one reason, so that the summary proves
nothing was lost: for each table, read = in trace + sum of its reasons.
"""
import json
import os
import threading
import time

import apache_beam as beam

NAMESPACE = 'starcompactor'

READ = 'read'            # counter name: read.<table>
IN_TRACE = 'in_trace'    # in_trace.<table>: rows that reached the trace
REJECTED = 'rejected'    # rejected.<table>.<reason>
TRACE_ROWS = 'trace_rows'
EPOCH = 'epoch'           # a distribution: the epoch the run used

# Reasons a row is not in the trace. Rejects are rows that would have been
# trace rows but are broken or incomplete; the others are simply rows the
# trace does not describe (an instance nothing happened to in the window).
EVENT_BAD_TIME = 'bad_time'
EVENT_NO_START = 'no_start_time'
EVENT_UNFINISHED = 'unfinished'
EVENT_FINISH_BEFORE_START = 'finish_before_start'
EVENT_NO_ACTION = 'no_action'
EVENT_NO_INSTANCE = 'no_instance'
ACTION_NO_INSTANCE = 'no_instance'
ACTION_NO_EVENTS = 'no_finished_events'
INSTANCE_NO_EVENTS = 'no_finished_events'
INSTANCE_BAD_UUID = 'bad_uuid'
# Any table: the row was read from both the live and the shadow_ table,
# archived while the trace ran; the other copy is in the trace.
READ_TWICE = 'read_twice'
# Any table: text that is not UTF-8 (seen in damaged or hand-edited rows).
INVALID_UTF8 = 'invalid_utf8'


# Where this process writes its tallies for the launcher's progress line
# (``pipeline.progress``). Worker processes on the launcher's machine inherit
# it; workers elsewhere have none and tally nothing.
PROGRESS_FOLDER_ENV = 'STARCOMPACTOR_PROGRESS_DIR'
TALLY_EVERY_S = 1.0


class _ProcessTally:
    """This process's counts in the current run, written to
    ``<folder>/<pid>.json`` at most once a second: Beam's metrics are
    readable only after a run. A new folder is a new run."""

    def __init__(self):
        self.folder = None
        self.counts = {}
        self.lock = threading.Lock()
        self.written_at = 0.0

    def add(self, name, n):
        folder = os.environ.get(PROGRESS_FOLDER_ENV)
        if not folder:
            return
        with self.lock:
            if folder != self.folder:
                self.folder, self.counts, self.written_at = folder, {}, 0.0
            self.counts[name] = self.counts.get(name, 0) + n
            now = time.monotonic()
            if now - self.written_at < TALLY_EVERY_S:
                return
            self.written_at = now
            text = json.dumps(self.counts)
        path = os.path.join(folder, f'{os.getpid()}.json')
        try:
            with open(path + '.tmp', 'w') as f:
                f.write(text)
            os.replace(path + '.tmp', path)
        except OSError:
            pass   # progress is a courtesy; the run may be ending


tally = _ProcessTally()


def count(name, n):
    if n:
        beam.metrics.Metrics.counter(NAMESPACE, name).inc(int(n))
        tally.add(name, int(n))


def count_read(table, n):
    count(f'{READ}.{table}', n)


def count_in_trace(table, n):
    count(f'{IN_TRACE}.{table}', n)


def count_rejected(table, reason, n):
    count(f'{REJECTED}.{table}.{reason}', n)


def record_epoch(epoch):
    beam.metrics.Metrics.distribution(NAMESPACE, EPOCH).update(int(epoch))
