"""The counts of a run: one namespace, names that read well in a summary.

Every source row is counted when read, and every row that does not become a
trace row is counted under exactly one reason, so that the summary proves
nothing was lost: for each table, read = in trace + sum of its reasons.

A count goes to Beam's metrics (for runner UIs), to the progress tally, and,
inside a ``Counted`` step, into the data: each call of the step emits what
it counted, and ``all_counts`` sums those into one element. The summary
reads that element, so it holds on every runner: Dask has no metrics, and
Dataflow's are only eventually final.
"""
import contextlib
import contextvars
import json
import os
import threading
import time

import apache_beam as beam
from apache_beam.pipeline import PipelineVisitor
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

NAMESPACE = 'starcompactor'

READ = 'read'            # counter name: read.<table>
IN_TRACE = 'in_trace'    # in_trace.<table>: rows that reached the trace
REJECTED = 'rejected'    # rejected.<table>.<reason>
TRACE_ROWS = 'trace_rows'
HOST_TRACE_ROWS = 'host_trace_rows'   # rows of the host table
EPOCH = 'epoch'           # the epoch the run used (the least, not a sum)

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
# Any table: a row of an instance the operator excluded (--exclude-users,
# --exclude-projects; transforms.exclude) that would have been in the trace.
EXCLUDED_USER = 'excluded_user'
EXCLUDED_PROJECT = 'excluded_project'
# Any table: the row was read from both the live and the shadow_ table,
# archived while the trace ran; the other copy is in the trace.
READ_TWICE = 'read_twice'
# Any table: text that is not UTF-8 (seen in damaged or hand-edited rows).
INVALID_UTF8 = 'invalid_utf8'
# Instances, from the Nova API: the server's actions could not be read,
# because it went for good between the listing and the fetch (404), or
# after retries, with an error status (http_500, ...).
SERVER_GONE = 'gone'


def server_http_error(status):
    return f'http_{status}'


# The Nova API source's own counts (api.<name>): requests made (retries
# and Keystone's included), retried and failed for good; servers whose
# sizes stay empty because their flavor no longer exists.
API = 'api'
API_SIZES_UNKNOWN = f'{API}.sizes_unknown'


# ``starcompactor trace`` (linked.<name>): the distinct hosts of its
# instance table, and those of them without a compute node row (no CREATE
# in its host table); their instance rows stay in the trace.
LINKED = 'linked'
INSTANCE_HOSTS = 'instance_hosts'
HOSTS_WITHOUT_COMPUTE_NODE = 'hosts_without_compute_node'


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


# Set while a step looks at rows that another step of the run counts
# (the host table counts Ironic's nodes; the instance table only reads
# their figures): counting them twice would unbalance the run.
_uncounted = contextvars.ContextVar('starcompactor_uncounted', default=False)


@contextlib.contextmanager
def uncounted():
    """Counts made inside are not made."""
    token = _uncounted.set(True)
    try:
        yield
    finally:
        _uncounted.reset(token)


def count(name, n):
    if n and not _uncounted.get():
        n = int(n)
        beam.metrics.Metrics.counter(NAMESPACE, name).inc(n)
        tally.add(name, n)
        _note(name, n)


def count_read(table, n):
    count(f'{READ}.{table}', n)


def count_in_trace(table, n):
    count(f'{IN_TRACE}.{table}', n)


def count_rejected(table, reason, n):
    count(f'{REJECTED}.{table}.{reason}', n)


def count_linked(name, n):
    count(f'{LINKED}.{name}', n)


def record_epoch(epoch):
    beam.metrics.Metrics.distribution(NAMESPACE, EPOCH).update(int(epoch))
    _note(EPOCH, int(epoch))


# --------------------------------------------------------------------------
# Counts as data

COUNTS = 'run_counts'    # the tag of a Counted step's counts

# What the current call of a Counted step has counted (None: not in one).
# A count made in another thread, or outside such a step, reaches only the
# metrics and the tally: the run then fails its balance check.
_ledger = contextvars.ContextVar('starcompactor_ledger', default=None)


def _add(counts, name, value):
    if name not in counts:
        counts[name] = value
    elif name == EPOCH:
        counts[name] = min(counts[name], value)
    else:
        counts[name] += value


def _note(name, value):
    ledger = _ledger.get()
    if ledger is not None:
        _add(ledger, name, value)


def _in_global_window(value):
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


def _with_counts(outputs, as_output=lambda value: value):
    """``outputs`` (a step's generator, or None), then what making them
    counted, tagged ``COUNTS`` (``as_output`` wraps it as the caller must
    emit: finish_bundle emits windowed values only)."""
    ledger = {}
    token = _ledger.set(ledger)
    try:
        yield from outputs or ()
    finally:
        _ledger.reset(token)
    if ledger:
        yield beam.pvalue.TaggedOutput(COUNTS, as_output(ledger))


class _CountedCalls(beam.DoFn):
    """Runs ``step`` and emits, after each call, what the call counted."""

    def __init__(self, step):
        self.step = (step if isinstance(step, beam.DoFn)
                     else CallableWrapperDoFn(step))

    def setup(self):
        self.step.setup()

    def process(self, element, *args, **kwargs):
        yield from _with_counts(self.step.process(element, *args, **kwargs))

    def start_bundle(self):
        self.step.start_bundle()

    def finish_bundle(self):
        # A wrapped step that emits (or counts) here must not lose it.
        yield from _with_counts(self.step.finish_bundle(), _in_global_window)

    def teardown(self):
        self.step.teardown()


class Counted(beam.PTransform):
    """``beam.ParDo(step, *args, **kwargs)`` (``step``: a DoFn, or a function
    as for ``beam.FlatMap``) whose counts also become data, tagged
    ``COUNTS``, for ``all_counts``. Returns the main output; with ``tags``,
    every output (``main`` names the main one), as ``with_outputs`` does.
    ``main_type``: the main output's element type."""

    def __init__(self, step, *args, tags=(), main='main', main_type=None,
                 **kwargs):
        super().__init__()
        self.pardo = beam.ParDo(_CountedCalls(step), *args, **kwargs)
        if main_type is not None:
            self.pardo = self.pardo.with_output_types(main_type)
        self.tags = tuple(tags)
        self.main = main

    def expand(self, pcoll):
        outputs = pcoll | self.pardo.with_outputs(COUNTS, *self.tags,
                                                  main=self.main)
        # A tagged output joins the graph when first asked for, and
        # all_counts finds the counts in the graph.
        outputs[COUNTS]  # pylint: disable=pointless-statement
        return outputs if self.tags else outputs[self.main]


class SumCounts(beam.CombineFn):
    """Count dicts -> one: summed, except the epoch (the least)."""

    def create_accumulator(self):
        return {}

    def add_input(self, total, counts):
        for name, value in counts.items():
            _add(total, name, value)
        return total

    def merge_accumulators(self, totals):
        merged = {}
        for total in totals:
            self.add_input(merged, total)
        return merged

    def extract_output(self, total):
        return total


class _CountsOutputs(PipelineVisitor):
    def __init__(self):
        self.found = []

    def visit_transform(self, transform_node):
        if COUNTS in transform_node.outputs:
            self.found.append(transform_node.outputs[COUNTS])


def all_counts(pipeline):
    """One element, ``{name: value}``: what every ``Counted`` step of
    ``pipeline`` built so far counted, summed (the epoch: the least)."""
    outputs = _CountsOutputs()
    pipeline.visit(outputs)
    return (tuple(outputs.found)
            | 'GatherCounts' >> beam.Flatten(pipeline=pipeline)
            | 'SumCounts' >> beam.CombineGlobally(SumCounts()))
