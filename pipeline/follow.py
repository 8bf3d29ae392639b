"""``starcompactor instances --follow``: the trace kept up to date, one set
of files per time window, by an unbounded (streaming) pipeline::

    Start ── PollNova ── Windows ── MaskIdentities ── DeriveSeconds ── WriteWindows
    (state)      │                   (key side input)                  │ (files)
                 └── checkpoints ── CheckpointWindows ─────── FilesAndCheckpoints
                                                               └── SaveCheckpoint

``PollNova`` (``sources.poll``) reads the events finished since its last
poll and emits them timestamped by their finish; windows are written when
the poll's watermark passes their end. The poll's position is saved in
``--state DIR`` only after the window it belongs to, and every earlier one,
is written (``SaveCheckpoint`` runs once per window, after its files): a
run resumes from the state, removing and redoing the windows from its
boundary on, so nothing is lost and nothing is written twice.

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
"""
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    PipelineOptions, StandardOptions)
from apache_beam.transforms.window import FixedWindows

from starcompactor.pipeline import runners, shards
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.instances import InstancesJob
from starcompactor.pipeline.options import (
    FollowOptions, NovaSourceOptions, duration)
from starcompactor.pipeline.sinks.windowed import WriteWindowFiles
from starcompactor.pipeline.sources import mysql_connection, split_list
from starcompactor.pipeline.sources.poll import (
    CHECKPOINTS, FAILED_POLLS, LATE, POLLS, QUERIES, Checkpoint, FollowState,
    PollNova, PollSettings, Position)
from starcompactor.pipeline.summary import Summary
from starcompactor.pipeline.times import (
    UTC, parse_iso_utc, to_iso, to_nova_text, to_seconds)
from starcompactor.transforms import counters as c
from starcompactor.transforms import mask
from starcompactor.transforms.derive import to_trace

log = logging.getLogger('starcompactor')

STATE_FILE = 'state.json'
LOCK_FILE = 'lock'
STATE_VERSION = 1

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


def _iso(seconds):
    if seconds is None:
        return None
    return to_iso(dt.datetime.fromtimestamp(seconds, UTC))


# --------------------------------------------------------------------------
# The state folder

def load_state(folder):
    """The saved state of ``folder``, or None for a new one."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read the follow state {path}: {e}')
    if state.get('version') != STATE_VERSION:
        raise UserError(f'{path} is not a follow state of this version')
    return state


def save_state(folder, settings, checkpoint, since):
    """``checkpoint`` as the state of ``folder``, atomically (a crash leaves
    the previous state)."""
    state = {
        'version': STATE_VERSION,
        'settings': settings,
        'since': since,
        'final_until': _iso(checkpoint.boundary),
        'final_until_sec': checkpoint.boundary,
        'saved_at': to_iso(dt.datetime.now(UTC)),
        'positions': checkpoint.positions,
    }
    path = os.path.join(folder, STATE_FILE)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(state, f, separators=(',', ':'))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + '.tmp', path)


class SaveCheckpoint(beam.DoFn):
    """One window's files and checkpoints, once its files (and every
    earlier window's) are final: checks the files are in place, then
    saves the checkpoints (``Checkpoint``) in the state folder."""

    def __init__(self, output, folder, settings, since):
        self.output = output
        self.folder = folder
        self.settings = settings
        self.since = since

    def process(self, element, window=beam.DoFn.WindowParam):
        _, items = element
        items = list(items)
        files = [i for i in items if isinstance(i, fileio.FileResult)]
        start = _iso(window.start.micros // 1_000_000)
        for result in files:
            if not os.path.exists(os.path.join(self.output,
                                               result.file_name)):
                raise RuntimeError(f'window {start}: {result.file_name} was '
                                   f'not moved to its final name')
        if files:
            log.info('window %s: %d files written', start, len(files))
        checkpoint = max((i for i in items if isinstance(i, Checkpoint)),
                         key=lambda checkpoint: checkpoint.boundary,
                         default=None)
        if checkpoint is None:
            return
        saved = load_state(self.folder)
        if saved and (saved['final_until_sec'] or 0) >= checkpoint.boundary:
            return     # a runner may fire windows out of order
        save_state(self.folder, self.settings, checkpoint, self.since)
        log.info('state saved: windows before %s are final',
                 _iso(checkpoint.boundary))


def _derive(joined, epoch):
    trace = to_trace(joined, epoch)
    c.count(c.TRACE_ROWS, trace.num_rows)
    return trace


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

    @property
    def settings(self):
        """What must stay the same from run to run of one state."""
        return {
            'output': self.output,
            'databases': self.databases,
            'archived': self.archived,
            'window_sec': self.window,
            'epoch': _iso(self.spec.epoch),
            'formats': self.formats,
            'mask_method': self.spec.mask_method,
            'mask_uuid': self.spec.mask_uuid,
            'key_fingerprint': (mask.key_fingerprint(self.key)
                                if self.key else None),
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
            where = (f'events finished after {_iso(self.since)}'
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
        redo = [path for start, path in existing
                if boundary is None or start >= boundary]
        for path in redo:
            os.remove(path)
        if redo:
            log.info('%d files of windows not final yet are removed, to be '
                     'redone', len(redo))
        shutil.rmtree(os.path.join(self.output, shards.WINDOW_TEMPORARY),
                      ignore_errors=True)
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
        return FollowState({db: Position.restored(positions[db])
                            for db in self.databases},
                           watermark=self.saved['final_until_sec'])

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
                                                     None))

    def finish(self):
        """After the run: WriteToFiles leaves its (empty) temporary
        folder."""
        shutil.rmtree(os.path.join(self.output, shards.WINDOW_TEMPORARY),
                      ignore_errors=True)

    # -- the graph

    def build(self, pipeline):
        spec = self.spec
        polled = (pipeline
                  | 'Start' >> beam.Create([self.start_state()])
                  | 'PollNova' >> beam.ParDo(PollNova(self.poll_settings()))
                  .with_outputs(CHECKPOINTS, main='rows'))
        joined = polled.rows | 'Windows' >> beam.WindowInto(
            FixedWindows(self.window))
        if spec.mask_method != mask.NO_MASKING:
            key = pipeline | 'MaskKey' >> mask.MaskKey(spec.key_source)
            joined = joined | 'MaskIdentities' >> beam.ParDo(
                mask.MaskIdentities(mask.masked_columns(spec.mask_uuid)),
                beam.pvalue.AsSingleton(key))
        files = (joined
                 | 'DeriveSeconds' >> beam.Map(_derive, spec.epoch)
                 | 'WriteWindows' >> WriteWindowFiles(
                     self.output, self.formats, self.num_shards))
        checkpoints = polled[CHECKPOINTS] | 'CheckpointWindows' >> \
            beam.WindowInto(FixedWindows(self.window))
        since = self.saved['since']
        _ = ((files, checkpoints)
             | 'FilesAndCheckpoints' >> beam.Flatten()
             | 'ByWindow' >> beam.Map(lambda item: (None, item))
             | 'GatherWindow' >> beam.GroupByKey()
             | 'SaveCheckpoint' >> beam.ParDo(SaveCheckpoint(
                 self.output, self.folder, self.settings, since)))

    # -- after the run

    def summary_lines(self, result, seconds):
        totals = _counters(result)
        summary = Summary.from_counters(totals, seconds)
        state = load_state(self.folder)
        yield (f'starcompactor {self.command}: {_final_words(state)} '
               f'(state in {self.folder})')
        yield from summary.lines()
        polls = totals.get(POLLS, 0)
        yield (f'  polls {polls:,}  queries {totals.get(QUERIES, 0):,} '
               f'({totals.get(QUERIES, 0) / max(polls, 1):.1f} per poll)  '
               f'failed polls {totals.get(FAILED_POLLS, 0):,}  late rows '
               f'{totals.get(LATE, 0):,}')
        files = shards.window_files(self.output)
        yield f'  {len(files):,} window files in {self.output}'


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


def _started(pipeline):
    """``pipeline.run()``, Prism started deaf to Ctrl-C (SIGINT ignored is
    inherited, and Go keeps it so): Ctrl-C reaches this process alone, which
    cancels the job, rather than killing Prism under its running job."""
    if threading.current_thread() is not threading.main_thread():
        return pipeline.run()
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return pipeline.run()
    finally:
        signal.signal(signal.SIGINT, handler)


def run(argv):
    options = PipelineOptions(streaming_argv(argv))
    job = FollowJob(options)
    with job.locked():
        job.prepare()
        pipeline = beam.Pipeline(options=options)
        job.build(pipeline)
        began = time.monotonic()
        result = _started(pipeline)
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                result.cancel()
            state = load_state(job.folder)
            raise Interrupted(
                f'interrupted; {_final_words(state)}, and the next run '
                f'with --state {job.folder} resumes there') from None
        job.finish()
    for line in job.summary_lines(result, time.monotonic() - began):
        print(line)
