"""``starcompactor instances --follow``: the trace kept up to date, one set
of files per time window, by an unbounded (streaming) pipeline::

    Start ─ PollNova ─ Windows ─┬─ MaskIdentities ─ DeriveSeconds
    (state)    │                │  ─ WriteWindows ─────────────────┐
               │                └─ RowsAndIdentities ──────────────┤
               └─ checkpoints ─ CheckpointWindows ─────────────────┤
       SaveCheckpoint ─ GatherFinal ─ CheckWindow ─── GatherWindow ─┘
       (state)                        (manifest, leak check)

``PollNova`` (``sources.poll``) reads the events finished since its last
poll and emits them timestamped by their finish; windows are written when
the poll's watermark passes their end. Each window written is checked
(``CheckWindow``: its files in place and holding its rows, a sample of them
searched for the raw identities of its rows and for the key) and gets a
manifest. The poll's position is saved in ``--state DIR`` only after the
window it belongs to, and every earlier one, is written and checked
(``SaveCheckpoint`` runs once per window, after ``CheckWindow`` is done
with every window up to it): a run resumes from the state, removing and
redoing the windows from its boundary on, so nothing is lost and nothing is
written twice.

The end (issue 18): ``--stop-after`` ends the poll, and so the job, which
Prism ends once every window is written; the poll notes in the state
folder that it stopped (``stopped.json``: the boundary of its last
checkpoint, the windows after it). The command waits for the job in a
thread (``JobEnd``) and looks at the state folder meanwhile: once the state
holds that boundary and those windows have their manifests, Prism gets
``GRACE_S`` to end the job, then the job is cancelled here (and Prism's
process stopped, if the cancel does not end it in ``CANCEL_S``). Ctrl-C
cancels the job the same bounded way. Either way the state and the files
agree: the state is saved only after its windows are written.

Masks must match from run to run, so the key is the operator's
(``--mask-key-file`` or ``$STARCOMPACTOR_MASK_KEY``) and so is the epoch;
the state remembers both (the key by its fingerprint) and a run with others
is refused.

Runners: Beam 2.77's DirectRunner hands a streaming pipeline to Prism; its
own streaming engine (``BundleBasedDirectRunner``) cannot run a splittable
DoFn (the graph fails to build: "GroupByKey was not replaced as expected"),
and its batch engine would run the poll to its end before writing anything.
So ``--runner DirectRunner`` (the default) gets Prism's binary
(``runners.prism_binary``), as ``--runner PrismRunner`` does.

The key is loaded where it is used (``MaskWithKeyFrom``, ``CheckWindow``),
not handed over as a side input: Prism (2.77) plans a stage that reads a
side input over and over while a residual not resumed yet holds its input
watermark back, and the masking runs in the poll's stage: with the key as
a side input, a core was busy for nothing between polls. (A Reshuffle
after the poll parts them too, but Prism's counters then came short: 2
trace rows of 7 in a run; its store keeps one uncommitted payload per
counter while it asks the worker what the counter is, and bundles of one
stage ending together overwrite each other's.)
"""
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import functools
import glob
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.compute as pc
from apache_beam.io import fileio
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    PipelineOptions, StandardOptions)
from apache_beam.transforms.window import FixedWindows

from starcompactor.pipeline import leaks, runners, shards
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.instances import InstancesJob
from starcompactor.pipeline.manifest import (
    describe_shards, window_manifest_of, write_manifest)
from starcompactor.pipeline.options import (
    FollowOptions, NovaSourceOptions, duration)
from starcompactor.pipeline.sinks.windowed import (
    GatherWindow, WriteWindowFiles)
from starcompactor.pipeline.sources import mysql_connection, split_list
from starcompactor.pipeline.sources.poll import (
    CHECKPOINTS, FAILED_POLLS, LATE, POLLS, QUERIES, Checkpoint, FollowState,
    PollNova, PollSettings, Position)
from starcompactor.pipeline.summary import Summary
from starcompactor.pipeline.threads import in_own_thread
from starcompactor.pipeline.times import (
    UTC, parse_iso_utc, seconds_to_iso, to_iso, to_nova_text, to_seconds)
from starcompactor.transforms import counters as c
from starcompactor.transforms import mask
from starcompactor.transforms.derive import to_trace

log = logging.getLogger('starcompactor')

STATE_FILE = 'state.json'
LOCK_FILE = 'lock'
STOP_NOTE = 'stopped.json'
STATE_VERSION = 1

# Once the poll has stopped and all it emitted is written, how long Prism
# has to end the job; how long a cancel (and the end of the job after it)
# may take before Prism's process is stopped.
GRACE_S = 20
CANCEL_S = 10
WAIT_STEP_S = 0.5

LEAK = re.compile(r'leak check failed: [^\n]*')

JOB_STREAM_TIMEOUT_S = 10 * 365 * 86400

# Options that mean something only with --follow.
FOLLOW_ONLY = ('state', 'stop_after', 'since')


class Interrupted(UserError):
    """Ctrl-C: the windows saved so far stay; the next run resumes."""
    exit_status = 130


def refuse_follow_options(args):
    """A batch run given options of --follow: a one-line error, rather
    than options silently ignored."""
    given = [name for name in FOLLOW_ONLY if getattr(args, name, None)]
    if given:
        raise UserError(f'--{given[0].replace("_", "-")} is an option of '
                        f'--follow')


def _final_words(state):
    """What a saved state says is final, in words."""
    if state is None or state['final_until'] is None:
        return 'no window is final yet'
    return f'windows before {state["final_until"]} are final'


# --------------------------------------------------------------------------
# The state folder

def _read_json(path):
    """The JSON document at ``path``, or None if there is none."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read {path}: {e}')


def _write_json(path, document):
    """``document`` at ``path``, atomically (a crash leaves the previous
    one)."""
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(document, f, separators=(',', ':'))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + '.tmp', path)


def load_state(folder):
    """The saved state of ``folder``, or None for a new one."""
    path = os.path.join(folder, STATE_FILE)
    state = _read_json(path)
    if state is not None and state.get('version') != STATE_VERSION:
        raise UserError(f'{path} is not a follow state of this version')
    return state


def save_state(folder, settings, checkpoint, since):
    """``checkpoint`` as the state of ``folder``."""
    _write_json(os.path.join(folder, STATE_FILE), {
        'version': STATE_VERSION,
        'settings': settings,
        'since': since,
        'final_until': seconds_to_iso(checkpoint.boundary),
        'final_until_sec': checkpoint.boundary,
        'saved_at': to_iso(dt.datetime.now(UTC)),
        'positions': checkpoint.positions,
    })


def note_stop(folder, boundary, windows):
    """The poll stopped (``PollSettings.stopped``): what must be written
    before the run is over, for the command to see (``FollowJob.written``)."""
    _write_json(os.path.join(folder, STOP_NOTE),
                {'boundary': boundary, 'windows': windows,
                 'at': to_iso(dt.datetime.now(UTC))})


# --------------------------------------------------------------------------
# The rows

class MaskWithKeyFrom(mask.MaskIdentities):
    """``MaskIdentities`` with the key loaded where it runs, from its
    source, rather than handed over as a side input."""

    def __init__(self, columns, key_source):
        super().__init__(columns)
        self.key_source = key_source
        self.key = None

    def setup(self):
        self.key = mask.load_key(self.key_source)

    def process(self, table):
        yield from super().process(table, self.key)


def _derive(joined, epoch):
    trace = to_trace(joined, epoch)
    c.count(c.TRACE_ROWS, trace.num_rows)
    return trace


# --------------------------------------------------------------------------
# Each window, once written

@dataclass(frozen=True)
class Emitted:
    """What went into a window from one poll: its trace rows, and their raw
    identities (the values masking replaces)."""
    rows: int
    identities: frozenset

    @classmethod
    def of(cls, joined, columns):
        values = set()
        for name in columns:
            values.update(pc.unique(pc.drop_null(joined.column(name)))
                          .to_pylist())
        return cls(joined.num_rows, frozenset(str(v) for v in values if v))


def _last_checkpoint(items):
    """The checkpoint of ``items`` with the latest boundary, if any."""
    checkpoints = [item for item in items if isinstance(item, Checkpoint)]
    if checkpoints:
        yield max(checkpoints, key=lambda checkpoint: checkpoint.boundary)


class CheckWindow(beam.DoFn):
    """All one window got (its files, what went into it, its checkpoints),
    once its files are final: checks the files are in place and hold the
    window's rows, searches a sample of them for the raw identities of
    those rows and for the key (``leaks.find_leaks``), writes the window's
    manifest; then passes its last checkpoint on, to be saved. A missing
    file, a lost row or a leak fails the run before the state moves past
    the window."""

    def __init__(self, output, window, facts, key_source):
        self.output = output
        self.window = window
        self.facts = facts
        self.key_source = key_source    # None: no leak check
        self.key = None

    def setup(self):
        if self.key_source is not None:
            self.key = mask.load_key(self.key_source)

    def process(self, items, window=beam.DoFn.WindowParam):
        start = window.start.micros // 1_000_000
        paths = sorted(os.path.join(self.output, item.file_name)
                       for item in items
                       if isinstance(item, fileio.FileResult))
        went_in = [item for item in items if isinstance(item, Emitted)]
        if paths or went_in:
            self._check(start, paths, went_in)
        yield from _last_checkpoint(items)

    def _check(self, start, paths, went_in):
        where = f'window {seconds_to_iso(start)}'
        for path in paths:
            if not os.path.exists(path):
                raise RuntimeError(f'{where}: {path} was not moved to its '
                                   f'final name')
        rows = sum(item.rows for item in went_in)
        described = describe_shards(paths)
        for fmt in self.facts['formats']:
            written = sum(shard['rows'] for shard in described
                          if shard['format'] == fmt)
            if written != rows:
                raise RuntimeError(f'{where}: {rows:,} trace rows went in, '
                                   f'but its {fmt} files hold {written:,}')
        if self.key_source is not None:
            raw = frozenset().union(*(item.identities for item in went_in))
            found = leaks.find_leaks(paths, raw, self.key,
                                     rows_per_file=leaks.SAMPLE_ROWS)
            if found:
                raise RuntimeError(
                    f'leak check failed: {where}: {found[0]} (and '
                    f'{len(found) - 1} more); the state is not saved past '
                    f'it: do not publish {self.output}')
        write_manifest(os.path.join(self.output, shards.window_prefix(start)),
                       window_manifest_of(start, self.window, rows,
                                          described, self.facts))
        log.info('%s: %d files written', where, len(paths))


class SaveCheckpoint(beam.DoFn):
    """The last checkpoint of a window once it, and every earlier window,
    is written and checked: saved in the state folder."""

    def __init__(self, folder, settings, since):
        self.folder = folder
        self.settings = settings
        self.since = since

    def process(self, checkpoints):
        for checkpoint in _last_checkpoint(checkpoints):
            saved = load_state(self.folder)
            if saved and (saved['final_until_sec'] or 0) >= \
                    checkpoint.boundary:
                return     # a runner may fire windows out of order
            save_state(self.folder, self.settings, checkpoint, self.since)
            log.info('state saved: windows before %s are final',
                     seconds_to_iso(checkpoint.boundary))


# --------------------------------------------------------------------------
# The job

class FollowJob:
    """Validated settings of a follow run, its state folder, and its graph.

    The settings a batch trace has (output, formats, masking, epoch) are
    the instances job's (``InstancesJob``)."""
    command = 'instances --follow'

    def __init__(self, options):
        source = options.view_as(NovaSourceOptions)
        follow = options.view_as(FollowOptions)
        if source.dump or source.api or getattr(source, 'audit_dirs', None):
            raise UserError('--follow polls Nova\'s databases: give '
                            '--databases (with --mysql-host, ...), not '
                            '--dump or --api')
        if not follow.state:
            raise UserError('--follow needs --state DIR: where the poll '
                            'position is kept between windows and runs')
        batch = InstancesJob(options)
        self.source = batch.source
        spec = batch.spec
        if spec.epoch is None:
            raise UserError('--follow needs --epoch ISO: the earliest event '
                            'of a stream is never known, and *_SEC must '
                            'count from the same time in every window')
        self.key = None
        if spec.mask_method != mask.NO_MASKING:
            if spec.key_source.kind == 'random':
                raise UserError(
                    f'--follow needs a masking key that outlives the run: '
                    f'--mask-key-file FILE or ${mask.KEY_ENV} (a random key '
                    f'would mask each run differently)')
            self.key = mask.load_key(spec.key_source)
        self.spec = spec
        self.masked = (mask.masked_columns(spec.mask_uuid)
                       if self.key is not None else ())
        self.leak_check = batch.leak_check
        self.output = os.path.abspath(batch.output)
        self.formats = batch.formats
        self.num_shards = batch.num_shards or 1
        self.folder = os.path.abspath(follow.state)
        self.window = int(follow.window)
        if self.window != follow.window:
            raise UserError('--window must be whole seconds')
        self.interval = follow.poll_interval
        self.overlap = follow.overlap
        self.batch_ids = follow.poll_batch
        self.stop_after = follow.stop_after
        self.since = (to_seconds(parse_iso_utc(follow.since, '--since'))
                      if follow.since else None)
        self.databases = split_list(source.databases) or ['nova']
        self.archived = source.archived
        self.connection = mysql_connection(source)
        self.saved = None          # the state this run starts from
        self.started = to_iso(dt.datetime.now(UTC))

    @property
    def settings(self):
        """What must stay the same from run to run of one state."""
        return {
            'output': self.output,
            'databases': self.databases,
            'archived': self.archived,
            'window_sec': self.window,
            'epoch': seconds_to_iso(self.spec.epoch),
            'formats': self.formats,
            'mask_method': self.spec.mask_method,
            'mask_uuid': self.spec.mask_uuid,
            'key_fingerprint': (mask.key_fingerprint(self.key)
                                if self.key else None),
        }

    @property
    def facts(self):
        """What each window's manifest tells of the run, besides the
        window."""
        spec = self.spec
        return {
            'run': {'command': self.command, 'started': self.started,
                    'state': self.folder,
                    'resumed_from': self.saved['final_until']},
            'source': {'kind': 'mysql', 'server': self.connection.describe(),
                       'databases': self.databases,
                       'archived': self.archived},
            'epoch': seconds_to_iso(spec.epoch),
            'epoch_sec': spec.epoch,
            'trace_format': spec.trace_format,
            'masking': {
                'method': spec.mask_method,
                'fields': list(self.masked),
                'key': spec.key_source.kind,
                'key_fingerprint': self.settings['key_fingerprint'],
            },
            'leak_check': ('sampled' if self.leak_check else 'off'),
            'formats': self.formats,
        }

    # -- the state folder and the output folder

    @contextlib.contextmanager
    def locked(self):
        """The state folder, for this run alone."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            lock = open(os.path.join(self.folder, LOCK_FILE), 'w')
        except OSError as e:
            raise UserError(f'cannot use --state {self.folder}: '
                            f'{e.strerror}')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise UserError(f'another run is following with --state '
                            f'{self.folder}')
        try:
            yield
        finally:
            lock.close()

    def prepare(self):
        """Where this run starts: the saved state (checked against this
        run's settings), its windows from the boundary on removed, to be
        redone; or a new state, saved at once, into an output folder
        without windows. Checks first that the databases can be read."""
        self.source.plan()
        self.saved = load_state(self.folder)
        existing = shards.window_files(self.output)
        if self.saved is None:
            if existing:
                raise UserError(f'{self.output} holds window files but '
                                f'--state {self.folder} holds no state: give '
                                f'the state they were written with, or '
                                f'another --output')
            where = (f'events finished after {seconds_to_iso(self.since)}'
                     if self.since is not None else 'the start of the history')
            # Saved before anything is written: whatever a run leaves, the
            # state says where to start again.
            save_state(self.folder, self.settings, Checkpoint(
                self.since, {db: Position().saved(self.since)
                             for db in self.databases}), self.since)
            self.saved = load_state(self.folder)
        else:
            self._check_settings()
            where = f'the saved state ({_final_words(self.saved)})'
        boundary = self.saved['final_until_sec']
        redo = [path for start, path in
                existing + shards.window_manifests(self.output)
                if boundary is None or start >= boundary]
        for path in redo:
            os.remove(path)
        if redo:
            log.info('%d files of windows not final yet are removed, to be '
                     'redone', len(redo))
        self.finish()      # what an earlier run may have left
        try:
            os.makedirs(self.output, exist_ok=True)
        except OSError as e:
            raise UserError(f'cannot write the trace into folder '
                            f'{self.output}: {e.strerror}')
        log.info('following %s, databases %s%s, from %s; %d s windows, '
                 'a poll every %g s', self.connection.describe(),
                 ', '.join(self.databases),
                 ' (live and shadow_ tables)' if self.archived else '',
                 where, self.window, self.interval)

    def _check_settings(self):
        saved = self.saved['settings']
        for name, value in self.settings.items():
            if saved.get(name) != value:
                raise UserError(
                    f'--state {self.folder} was made with another {name} '
                    f'({saved.get(name)!r}, now {value!r}): keep the '
                    f'settings of a state, or start a new one')
        if self.since is not None and self.since != self.saved['since']:
            raise UserError(f'--since applies to a new --state; '
                            f'{self.folder} has a state already')

    def start_state(self):
        """The poll's first restriction: the saved state's."""
        positions = self.saved['positions']
        final = self.saved['final_until_sec']
        return FollowState({db: Position.restored(positions[db])
                            for db in self.databases},
                           watermark=final, boundary=final)

    def poll_settings(self):
        stop_seconds = stop_events = None
        if self.stop_after:
            count, _, unit = self.stop_after.partition('-')
            if unit == 'events':
                stop_events = int(count)
            else:
                stop_seconds = duration(self.stop_after)
        since = self.saved['since']
        return PollSettings(
            connection=self.connection, databases=tuple(self.databases),
            archived=self.archived,
            since=(to_nova_text(dt.datetime.fromtimestamp(since, UTC))
                   if since is not None else None),
            overlap=self.overlap, interval=self.interval, window=self.window,
            batch_ids=self.batch_ids, stop_seconds=stop_seconds,
            stop_events=stop_events, exclude=getattr(self.spec, 'exclude',
                                                     None),
            stopped=functools.partial(note_stop, self.folder))

    def written(self):
        """Whether the poll has stopped and all it emitted is written: the
        state at the boundary of its last checkpoint, the windows after it
        with their manifests."""
        note = _read_json(os.path.join(self.folder, STOP_NOTE))
        if note is None:
            return False
        if note['boundary'] is not None:
            final = load_state(self.folder)['final_until_sec']
            if final is None or final < note['boundary']:
                return False
        return all(os.path.exists(shards.manifest_path(os.path.join(
            self.output, shards.window_prefix(start))))
            for start in note['windows'])

    def finish(self):
        """After the run: WriteToFiles leaves its (empty) temporary
        folder; the poll, its note."""
        shutil.rmtree(os.path.join(self.output, shards.WINDOW_TEMPORARY),
                      ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.folder, STOP_NOTE))

    # -- the graph

    def build(self, pipeline):
        spec = self.spec
        polled = (pipeline
                  | 'Start' >> beam.Create([self.start_state()])
                  | 'PollNova' >> beam.ParDo(PollNova(self.poll_settings()))
                  .with_outputs(CHECKPOINTS, main='rows'))
        rows = polled.rows | 'Windows' >> beam.WindowInto(
            FixedWindows(self.window))
        trace = rows
        if self.key is not None:
            trace = trace | 'MaskIdentities' >> beam.ParDo(
                MaskWithKeyFrom(self.masked, spec.key_source))
        files = (trace
                 | 'DeriveSeconds' >> beam.Map(_derive, spec.epoch)
                 | 'WriteWindows' >> WriteWindowFiles(
                     self.output, self.formats, self.num_shards))
        went_in = rows | 'RowsAndIdentities' >> beam.Map(Emitted.of,
                                                          self.masked)
        checkpoints = polled[CHECKPOINTS] | 'CheckpointWindows' >> \
            beam.WindowInto(FixedWindows(self.window))
        _ = ((files, went_in, checkpoints)
             | 'AllOfWindow' >> beam.Flatten()
             | 'GatherWindow' >> GatherWindow()
             | 'CheckWindow' >> beam.ParDo(CheckWindow(
                 self.output, self.window, self.facts,
                 spec.key_source if self.leak_check else None))
             | 'GatherFinal' >> GatherWindow()
             | 'SaveCheckpoint' >> beam.ParDo(SaveCheckpoint(
                 self.folder, self.settings, self.saved['since'])))

    # -- after the run

    def wait(self, end):
        """Waits for the job (``JobEnd``) to end; returns whether it ended
        by itself. Once the poll has stopped and all it emitted is written
        (``written``), Prism has ``GRACE_S`` to end the job; then it is
        stopped here."""
        written_at = None
        while not end.ended(WAIT_STEP_S):
            if written_at is None and self.written():
                written_at = time.monotonic()
                log.debug('the poll has stopped, and all it emitted is '
                          'written')
            if written_at is not None and \
                    time.monotonic() - written_at >= GRACE_S:
                end.stop()
                return False
        log.debug('the job has ended')
        return True

    def summary_lines(self, totals, seconds):
        """What a run prints at its end; ``totals``: its counters, None if
        Prism did not report them."""
        state = load_state(self.folder)
        yield (f'starcompactor {self.command}: {_final_words(state)} '
               f'(state in {self.folder})')
        if totals is None:
            yield '  counts unknown: Prism did not report them'
        else:
            yield from Summary.from_counters(totals, seconds).lines()
            polls = totals.get(POLLS, 0)
            queries = totals.get(QUERIES, 0)
            yield (f'  polls {polls:,}  queries {queries:,} '
                   f'({queries / max(polls, 1):.1f} per poll)  failed polls '
                   f'{totals.get(FAILED_POLLS, 0):,}  late rows '
                   f'{totals.get(LATE, 0):,}')
        files = shards.window_files(self.output)
        yield (f'  {len(files):,} window files in {self.output}, '
               f'{len(shards.window_manifests(self.output)):,} window '
               f'manifests')


def _counters(result):
    """The run's counters (``counters.NAMESPACE``), by name."""
    totals = {}
    query = result.metrics().query(
        MetricsFilter().with_namespace(c.NAMESPACE))
    for counter in query['counters']:
        value = counter.committed
        if value is None:
            value = counter.attempted or 0
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + value
    return totals


def streaming_argv(argv):
    """argv for a streaming run on a runner that can run it: Prism's
    binary for the DirectRunner (which hands streaming pipelines to
    Prism), ``--streaming``."""
    argv = runners.prepare_runner_options(argv)
    runner = (PipelineOptions(argv).view_as(StandardOptions).runner
              or 'DirectRunner')
    name = runner.rsplit('.', 1)[-1].lower()
    if name == 'bundlebaseddirectrunner':
        raise UserError('--follow cannot run on the BundleBasedDirectRunner '
                        '(Beam 2.77 runs no splittable DoFn in its streaming '
                        'mode): use the DirectRunner or PrismRunner')
    if name == 'daskrunner':
        raise UserError('--follow cannot run on Dask, which runs no '
                        'streaming pipeline: use the DirectRunner or '
                        'PrismRunner')
    if name in ('direct', 'directrunner', 'switchingdirectrunner') and \
            not any(a.startswith('--prism_location') for a in argv):
        argv = [f'--prism_location={runners.prism_binary()}', *argv]
    # A portable runner's job streams are opened with this as their gRPC
    # deadline (Beam 2.77, portable_runner.py): its default, 300 s, ends a
    # longer run with DEADLINE_EXCEEDED. argv's own value, if any, wins.
    return [f'--job_server_timeout={JOB_STREAM_TIMEOUT_S}', *argv,
            '--streaming']


@contextlib.contextmanager
def _deaf_to_ctrl_c():
    """SIGINT ignored meanwhile (in the main thread: elsewhere, signals are
    the main thread's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _started(pipeline):
    """``pipeline.run()``, Prism started deaf to Ctrl-C (SIGINT ignored is
    inherited, and Go keeps it so): Ctrl-C reaches this process alone, which
    cancels the job, rather than killing Prism under its running job."""
    with _deaf_to_ctrl_c():
        return pipeline.run()


def _within(seconds, function):
    """``function()``, given ``seconds``: its result, or None if it failed
    or did not return in time."""
    future = in_own_thread(function)
    try:
        return future.result(timeout=seconds)
    except Exception as e:      # a timeout, or its failure
        log.debug('%r: %r', function, e)
        return None


def _prism_processes():
    """The Prism servers this process started: its children running a
    binary named ``prism*`` (Beam keeps no public handle on them; Linux's
    /proc tells)."""
    found = []
    for stat in glob.glob('/proc/[0-9]*/stat'):
        pid = stat.split('/')[2]
        try:
            with open(stat, encoding='utf-8') as f:
                parent = f.read().rsplit(')', 1)[1].split()[1]
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                program = f.read().split(b'\0')[0]
        except (OSError, IndexError):
            continue        # gone meanwhile
        if parent == str(os.getpid()) and \
                os.path.basename(program).startswith(b'prism'):
            found.append(int(pid))
    return found


def stop_prism():
    """Stops the Prism servers of this process, at the end of a run. Beam
    stops them only at exit, with SIGINT five times a second apart
    (ignored: they were started deaf to it), then SIGKILL. Beam's threads
    that talked to them may fail on their way out: that is no news, and
    not printed."""
    threading.excepthook = lambda args: None
    for pid in _prism_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class JobEnd:
    """The end of a job: ``wait_until_finish`` in a thread of its own, so
    that Ctrl-C and the state folder are seen while the job runs, and a job
    Prism does not end can be stopped here."""

    def __init__(self, result):
        self.result = result
        self.done = in_own_thread(result.wait_until_finish)

    def ended(self, seconds):
        """Whether the job has ended, waiting ``seconds`` at most; raises
        its failure."""
        try:
            self.done.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def counters(self):
        """The job's counters (``_counters``), or None if Prism does not
        report them in ``CANCEL_S``."""
        return _within(CANCEL_S, functools.partial(_counters, self.result))

    def stop(self):
        """Cancels the job, giving the cancel and then the job's end
        ``CANCEL_S`` each; if the job has still not ended, stops Prism. The
        counters are read first (the result keeps them): Prism's go with
        it."""
        self.counters()
        _within(CANCEL_S, self.result.cancel)
        concurrent.futures.wait([self.done], timeout=CANCEL_S)
        if not self.done.done():
            log.warning('Prism did not end the job when cancelled: its '
                        'process is stopped')
            stop_prism()


def run(argv):
    options = PipelineOptions(streaming_argv(argv))
    job = FollowJob(options)
    with job.locked():
        job.prepare()
        pipeline = beam.Pipeline(options=options)
        job.build(pipeline)
        began = time.monotonic()
        end = JobEnd(_started(pipeline))
        try:
            by_itself = job.wait(end)
            totals = end.counters()
        except KeyboardInterrupt:
            with _deaf_to_ctrl_c():
                end.stop()
            raise Interrupted(
                f'interrupted; {_final_words(load_state(job.folder))}, and '
                f'the next run with --state {job.folder} resumes '
                f'there') from None
        except RuntimeError as e:     # the job failed
            leak = LEAK.search(str(e))
            if leak:
                raise UserError(leak[0]) from None
            raise
        finally:
            stop_prism()
        job.finish()
    for line in job.summary_lines(totals, time.monotonic() - began):
        print(line)
    if not by_itself:
        log.warning('Prism did not end the job %d s after the poll stopped '
                    'and every window it emitted was written; it was '
                    'cancelled here. The windows and the state are final '
                    'as they say (issue 18)', GRACE_S)
