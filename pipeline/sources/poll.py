"""Following Nova's cell databases: the events that finished since the last
poll, poll after poll, joined and timestamped for fixed windows.

One splittable DoFn (``PollNova``) polls every database in turn; its
restriction is the whole poll state (``FollowState``), claimed once per poll
and handed back to the runner with ``defer_remainder`` (at once while a
backlog is read, else after ``--poll-interval``). It sets its own output
watermark (``ManualWatermarkEstimator``), so windows downstream complete as
the poll moves on.

**Which rows.** Nova's ``instance_actions_events`` has no index on
``finish_time`` or ``updated_at`` (only the primary key and ``action_id``;
its ``shadow_`` copy only the primary key), and an event row is inserted
when the event starts and updated when it finishes. So each poll of a
database reads, within one snapshot (``START TRANSACTION WITH CONSISTENT
SNAPSHOT``), by primary key only, from the live and the ``shadow_`` table
together (archiving moves rows there with their ids, one table per
transaction; a snapshot sees each row in exactly one of the two):

- new ids: ``[next_id, next_id + --poll-batch)``, up to the highest id now;
- ids to read again: events seen unfinished (``recheck``), and ids missing
  below ``next_id`` (``gaps``): an insert whose transaction commits after a
  later one (a *late commit*) fills one. A gap is read again until the
  highest id seen ``--overlap`` seconds ago is above it, then forgotten
  (an id below that one was allocated more than ``--overlap`` ago);
- for the finished events found: their actions by id, their instances by
  uuid (the live table's ``(uuid, deleted)`` index; ``shadow_instances``
  only for uuids not found live: it has no index but its primary key).

An event is emitted once, when first seen finished (and finished after
``--since``). It is joined, validated and counted by the same code as a
batch trace (``transforms.validate``, ``transforms.join``).

**Time.** A trace row's timestamp is its finish time, or the watermark if
that is later (a *late* row, counted: it finished longer than ``--overlap``
before it was committed, or its compute node's clock is behind). The
watermark is ``--overlap``, and one second (Nova's times are whole seconds),
before the earlier of the poll's start and, while a backlog is read, the
earliest start among the ids read last (ids grow with start times); it only
moves forward.

**Checkpoints.** When the watermark crosses a window boundary, the DoFn
emits a ``Checkpoint`` in the window before it: the positions, where every
id emitted into a later window is to be read again. Downstream, it is saved
only once that window and all earlier ones are written (``pipeline.follow``):
a restart from it redoes the windows from the boundary on and loses nothing.

**Stop.** After ``--stop-after`` the DoFn ends (no residual), so every
window downstream completes; it tells ``PollSettings.stopped`` the boundary
of its last checkpoint and the windows it emitted rows into from there on,
which is what must be written before the run is over.
"""
import bisect
import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pymysql
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import (
    RestrictionProvider, WatermarkEstimatorProvider)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from starcompactor.pipeline.sources.mysql import (
    CHUNK_IDS, GROUP_CONCAT_MAX_LEN, LOST_CONNECTION, _quote, chunk_to_table,
    csv_line)
from starcompactor.transforms import counters as c
from starcompactor.transforms.buckets import concat
from starcompactor.transforms.join import (
    join_events_to_actions, join_events_to_instances)
from starcompactor.transforms.schema import (
    ACTIONS, EVENTS, INSTANCES, NOVA_TABLES, SHADOW_PREFIX, SOURCE_COLUMNS,
    source_schema)
from starcompactor.transforms.validate import parse_nova_times, validate

log = logging.getLogger(__name__)

POLL_IDS = 50_000     # event ids read per poll and database while catching up
NOVA_TIME_STEP = 1    # Nova's times are whole seconds, cut down: an event
#                       finished at 12:00:00.9 says 12:00:00
GAP_RANGES = 500      # gap ranges per query

# Counters of the poll itself (namespace starcompactor).
POLLS = 'follow.polls'
QUERIES = 'follow.queries'
LATE = 'follow.late'          # rows emitted in a later window than they
#                               finished in
FAILED_POLLS = 'follow.failed_polls'   # lost connection; polled again later

CHECKPOINTS = 'checkpoints'   # the tag of the DoFn's checkpoint output


@dataclass
class Position:
    """Where the poll of one database stands."""
    next_id: int = 0           # every id below was read once
    recheck: set = field(default_factory=set)   # ids to read again
    gaps: list = field(default_factory=list)    # [first, end) ranges of ids
    #                                             below next_id not seen yet
    marks: list = field(default_factory=list)   # [poll time, highest id]
    # Not saved: ids emitted since the last checkpoint, with their window
    # time; where the last new ids read start; whether it read all ids.
    emitted: dict = field(default_factory=dict)
    frontier: Optional[float] = None
    caught_up: bool = False

    def saved(self, boundary):
        """The position as a checkpoint at ``boundary`` keeps it: the ids
        emitted into windows from ``boundary`` on are read again."""
        again = self.recheck | {i for i, at in self.emitted.items()
                                if at >= boundary}
        return {'next_id': self.next_id, 'recheck': sorted(again),
                'gaps': [list(gap) for gap in self.gaps],
                'marks': [list(mark) for mark in self.marks]}

    @classmethod
    def restored(cls, saved):
        return cls(next_id=saved['next_id'], recheck=set(saved['recheck']),
                   gaps=[list(gap) for gap in saved['gaps']],
                   marks=[list(mark) for mark in saved['marks']])


@dataclass
class FollowState:
    """The poll's restriction: each database's position, the watermark (no
    row is emitted before it; seconds since 1970, None: none yet), when
    this run polled first and the trace rows it emitted, the boundary of
    the last checkpoint (the saved state's, at first) and the windows rows
    went into from there on (their starts)."""
    positions: dict
    watermark: Optional[float] = None
    first_poll: Optional[float] = None
    emitted: int = 0
    boundary: Optional[int] = None
    windows: set = field(default_factory=set)


@dataclass(frozen=True)
class Checkpoint:
    """Saved once every window ending at or before ``boundary`` (seconds
    since 1970) is written: each database's ``Position.saved``."""
    boundary: Optional[int]    # None: a new state, nothing written yet
    positions: dict


@dataclass(frozen=True)
class PollSettings:
    """How the poll reads (no secret: the connection says where the
    password is). Times in seconds; ``since`` as Nova's text."""
    connection: object
    databases: tuple
    archived: bool = True
    since: Optional[str] = None
    overlap: float = 30.0
    interval: float = 60.0
    window: int = 3600
    batch_ids: int = POLL_IDS
    stop_seconds: Optional[float] = None   # after the first poll
    stop_events: Optional[int] = None      # trace rows
    exclude: object = None                 # transforms.exclude.Exclusions
    stopped: object = None    # called with FollowState.boundary and
    #                           .windows when the poll stops


# --------------------------------------------------------------------------
# Id ranges

def missing(first, end, ids):
    """``[first, end)`` ranges of the ids in ``[first, end)`` not in
    ``ids`` (sorted, distinct, all within)."""
    ids = np.asarray(ids, np.int64)
    starts = np.concatenate([[first], ids + 1])
    ends = np.concatenate([ids, [end]])
    keep = ends > starts
    return [[int(a), int(b)] for a, b in zip(starts[keep], ends[keep])]


def without(gaps, ids):
    """``gaps`` less the ``ids`` found in them (``ids`` sorted, distinct)."""
    left = []
    for first, end in gaps:
        inside = ids[bisect.bisect_left(ids, first):
                     bisect.bisect_left(ids, end)]
        left += missing(first, end, inside) if inside else [[first, end]]
    return left


def joined_up(ranges):
    """Sorted ``[first, end)`` ranges, those that touch made one."""
    out = []
    for first, end in ranges:
        if out and out[-1][1] == first:
            out[-1][1] = end
        else:
            out.append([first, end])
    return out


def settled(gaps, highest):
    """``gaps`` without their ids at or below ``highest``."""
    return [[max(first, highest + 1), end] for first, end in gaps
            if end > highest + 1]


# --------------------------------------------------------------------------
# One database

class _Cell:
    """The reads of one cell database, each poll in one snapshot."""

    def __init__(self, connection, database, archived):
        self.connection = connection
        self.database = database
        self.prefixes = ('', SHADOW_PREFIX) if archived else ('',)
        self.db = None
        self.queries = 0

    def _tables(self, table, prefixes):
        database = _quote(self.database)
        return [f'{database}.{_quote(prefix + NOVA_TABLES[table])}'
                for prefix in prefixes]

    def _execute(self, sql, args=()):
        self.queries += 1
        with self.db.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchone()

    @contextlib.contextmanager
    def snapshot(self):
        """One consistent snapshot: a row moved to its ``shadow_`` table
        meanwhile is seen once, in one of the two."""
        if self.db is None or not self.db.open:
            self.db = self.connection.connect(self.database)
            self._execute(f'SET SESSION group_concat_max_len = '
                          f'{GROUP_CONCAT_MAX_LEN}')
        self._execute('START TRANSACTION WITH CONSISTENT SNAPSHOT')
        try:
            yield
        finally:
            if self.db.open:
                with contextlib.suppress(pymysql.err.MySQLError):
                    self.db.rollback()

    def close(self):
        if self.db is not None and self.db.open:
            self.db.close()

    def highest_id(self):
        """The highest event id, live or archived; -1 for none."""
        highest = ', '.join(f'COALESCE((SELECT MAX(id) FROM {t}), -1)'
                            for t in self._tables(EVENTS, self.prefixes))
        return self._execute(f'SELECT GREATEST({highest}, -1)')[0]

    def rows(self, table, where, args=(), prefixes=None):
        """The rows of logical ``table`` matching ``where``, from its live
        and archived tables (or those ``prefixes`` name): ``(batch in
        source_schema, their ids, rows dropped as not UTF-8)``."""
        tables = self._tables(table, prefixes or self.prefixes)
        columns = ', '.join(_quote(name) for name, _ in SOURCE_COLUMNS[table])
        union = ' UNION ALL '.join(f'SELECT {columns} FROM {t} WHERE {where}'
                                   for t in tables)
        count, lines, ids = self._execute(
            f"SELECT COUNT(*), GROUP_CONCAT(CONCAT({csv_line(table)}) "
            f"SEPARATOR '\\n'), GROUP_CONCAT(id) FROM ({union}) AS t",
            list(args) * len(tables))
        if not count:
            return source_schema(table).empty_table(), [], 0
        batch, invalid = chunk_to_table(self.database, table, lines)
        if batch.num_rows + invalid != count:
            raise RuntimeError(f'{self.database}: {count} {table} rows came '
                               f'back incomplete; raise the server\'s '
                               f'max_allowed_packet')
        return batch, sorted(int(i) for i in ids.split(b',')), invalid

    def rows_in(self, table, column, values, prefixes=None):
        """``rows`` whose ``column`` is one of ``values``, a chunk of values
        per query."""
        values = sorted(values)
        return gathered(table, (
            self.rows(table, f'{_quote(column)} IN %s',
                      [tuple(values[start:start + CHUNK_IDS])], prefixes)
            for start in range(0, len(values), CHUNK_IDS)))

    def events_in_ranges(self, ranges):
        """``rows`` of the events with ids in the ``[first, end)``
        ``ranges``."""
        parts = [ranges[start:start + GAP_RANGES]
                 for start in range(0, len(ranges), GAP_RANGES)]
        return gathered(EVENTS, (
            self.rows(EVENTS,
                      ' OR '.join(['(id >= %s AND id < %s)'] * len(part)),
                      [bound for gap in part for bound in gap])
            for part in parts))

    def instances_of(self, uuids):
        """Instances by uuid: live ones by index, then archived ones for
        the uuids not found live (``shadow_instances`` has no index but its
        primary key: a scan, in the polls that read events of archived
        instances)."""
        live = self.rows_in(INSTANCES, 'uuid', uuids, prefixes=('',))
        rest = set(uuids) - set(live[0].column('uuid').to_pylist())
        if not rest or SHADOW_PREFIX not in self.prefixes:
            return live
        return gathered(INSTANCES, [live, self.rows_in(
            INSTANCES, 'uuid', rest, prefixes=(SHADOW_PREFIX,))])


def gathered(table, reads):
    """The ``_Cell.rows`` results of several queries, as one."""
    batches, ids, invalid = [], [], 0
    for batch, found, bad in reads:
        batches.append(batch)
        ids += found
        invalid += bad
    return concat(batches, source_schema(table)), ids, invalid


def _unique(column):
    return pc.unique(pc.drop_null(column)).to_pylist()


def _counted(table, read):
    """The rows of a ``_Cell.rows`` result, counted as read (with those
    dropped as not UTF-8, counted as such)."""
    batch, _, invalid = read
    c.count_read(table, batch.num_rows + invalid)
    c.count_rejected(table, c.INVALID_UTF8, invalid)
    return batch


def _validated(table, batch):
    valid, rejects = validate(table, batch)
    for reason, n in rejects.items():
        c.count_rejected(table, reason, n)
    return valid


# --------------------------------------------------------------------------
# The poll

class _PollTracker(RestrictionTracker):
    """The restriction is the poll state: each poll claims the state it led
    to; a checkpoint leaves the claimed state as the residual. An unbounded
    poll has no other split."""

    def __init__(self, restriction):
        self._restriction = restriction

    def current_restriction(self):
        return self._restriction

    def try_claim(self, state):
        if self._restriction.done:
            return False
        self._restriction = _Restriction(state)
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder > 0 or self._restriction.done:
            return None
        residual = self._restriction
        self._restriction = _Restriction(residual.state, done=True)
        return self._restriction, residual

    def check_done(self):
        pass    # every call either claims and defers the rest, or ends

    def current_progress(self):
        return RestrictionProgress(completed=0, remaining=1)

    def is_bounded(self):
        return False


@dataclass
class _Restriction:
    state: FollowState
    done: bool = False


class _PollRestrictions(RestrictionProvider):
    def initial_restriction(self, state):
        return _Restriction(state)

    def create_tracker(self, restriction):
        return _PollTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def truncate(self, element, restriction):
        return None     # drained: the state saved last is where to resume


class _WatermarkOfState(WatermarkEstimatorProvider):
    """Starts at the state's watermark (a restart: the last boundary)."""

    def initial_estimator_state(self, element, restriction):
        watermark = restriction.state.watermark
        return None if watermark is None else Timestamp(watermark)

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state)


class PollNova(beam.DoFn):
    """FollowState -> joined trace rows (``join.JOINED_SCHEMA`` tables,
    timestamped), and ``Checkpoint`` elements tagged ``CHECKPOINTS``."""

    def __init__(self, settings):
        self.settings = settings
        self._cells = {}

    def setup(self):
        s = self.settings
        self._cells = {db: _Cell(s.connection, db, s.archived)
                       for db in s.databases}

    def teardown(self):
        for cell in self._cells.values():
            cell.close()

    @beam.DoFn.unbounded_per_element()
    def process(self, start,
                tracker=beam.DoFn.RestrictionParam(_PollRestrictions()),
                watermark=beam.DoFn.WatermarkEstimatorParam(
                    _WatermarkOfState())):
        s = self.settings
        state = copy.deepcopy(tracker.current_restriction().state)
        began = time.time()
        if state.first_poll is None:
            state.first_poll = began
        try:
            outputs = list(self._poll(state, began))
        except pymysql.err.OperationalError as e:
            if e.args[0] not in LOST_CONNECTION:
                raise
            log.warning('poll failed (MySQL error %s); polling again in '
                        '%.0f s', e.args[0], s.interval)
            c.count(FAILED_POLLS, 1)
            for cell in self._cells.values():
                cell.close()
            tracker.defer_remainder(Duration(seconds=s.interval))
            return
        if not tracker.try_claim(state):
            return
        yield from outputs
        if state.watermark is not None:
            watermark.set_watermark(Timestamp(state.watermark))
        if self._stop(state):
            log.info('stopping after %d trace rows', state.emitted)
            if s.stopped is not None:
                s.stopped(state.boundary, sorted(state.windows))
            return
        caught_up = all(p.caught_up for p in state.positions.values())
        tracker.defer_remainder(Duration(seconds=s.interval if caught_up
                                         else 0))

    def _stop(self, state):
        s = self.settings
        return ((s.stop_seconds is not None and
                 time.time() >= state.first_poll + s.stop_seconds) or
                (s.stop_events is not None and
                 state.emitted >= s.stop_events))

    def _poll(self, state, began):
        """Polls every database; moves ``state`` on; yields the joined rows
        and, where the watermark crosses a window boundary, a checkpoint."""
        s = self.settings
        before = state.watermark
        c.count(POLLS, 1)
        for database in s.databases:
            cell = self._cells[database]
            queries = cell.queries
            joined = self._poll_cell(cell, state.positions[database], before)
            c.count(QUERIES, cell.queries - queries)
            if joined is not None:
                state.emitted += joined.num_rows
                yield from self._timestamped(joined, before, state)
        state.watermark = self._watermark(state, began)
        yield from self._checkpoint(state, before)

    def _poll_cell(self, cell, position, before):
        """One poll of one database, in one snapshot: its newly finished
        events joined (None if there are none); ``position`` moved on."""
        with cell.snapshot():
            events = _validated(EVENTS, self._finished_events(cell, position))
            if not events.num_rows:
                return None
            position.emitted.update(zip(
                events.column('id').to_pylist(),
                _window_times(events, before).to_pylist()))
            actions = _validated(ACTIONS, _counted(ACTIONS, cell.rows_in(
                ACTIONS, 'id', _unique(events.column('action_id')))))
            instances = _validated(INSTANCES, _counted(
                INSTANCES, cell.instances_of(
                    _unique(actions.column('instance_uuid')))))
        return _join(events, actions, instances, self.settings.exclude)

    def _finished_events(self, cell, position):
        """The events found finished (after ``--since``) among the ids read
        again and the new ones, counted as read; ``position`` moved on."""
        s = self.settings
        mark_time = time.time()   # every id up to the highest is older
        highest = cell.highest_id()
        again = [cell.rows_in(EVENTS, 'id', position.recheck),
                 cell.events_in_ranges(position.gaps)]
        seen_again = sorted({i for _, ids, _ in again for i in ids})
        position.recheck -= set(seen_again)
        position.gaps = without(position.gaps, seen_again)
        first = position.next_id
        end = min(first + s.batch_ids, highest + 1)
        new = ([cell.rows(EVENTS, 'id >= %s AND id < %s', [first, end])]
               if end > first else [])
        for batch, ids, _ in new:
            position.gaps = joined_up(
                position.gaps + missing(first, end, sorted(set(ids))))
            position.next_id = end
            starts, _ = parse_nova_times(batch.column('start_time'))
            earliest = pc.min(starts).as_py()
            if earliest is not None:
                position.frontier = earliest
        position.caught_up = end >= highest + 1
        self._forget_old_gaps(position, mark_time, highest)

        events, _, invalid = gathered(EVENTS, again + new)
        finished = pc.is_valid(events.column('finish_time'))
        position.recheck |= set(
            events.filter(pc.invert(finished)).column('id').to_pylist())
        events = events.filter(finished)
        if s.since is not None:
            events = events.filter(
                pc.greater(events.column('finish_time'), s.since))
        return _counted(EVENTS, (events, None, invalid))

    def _forget_old_gaps(self, position, now, highest):
        """Ids at or below the highest id seen ``--overlap`` ago were
        allocated before then: gaps there are not filled any more (a
        rolled-back insert, a purged row)."""
        position.marks.append([now, highest])
        old = [mark for mark in position.marks
               if mark[0] <= now - self.settings.overlap]
        if old:
            position.gaps = settled(position.gaps, old[-1][1])
            position.marks = position.marks[len(old) - 1:]

    def _watermark(self, state, began):
        """``--overlap`` (and Nova's second) before the earlier of the
        poll's start and, for a database still reading its backlog, where
        its last new ids start; never earlier than before. It stays while
        a database reads a backlog whose start is not known yet (the first
        new ids after a restart held no start)."""
        behind = [p.frontier for p in state.positions.values()
                  if not p.caught_up]
        if None in behind:
            return state.watermark
        candidate = (min([began] + behind) - self.settings.overlap
                     - NOVA_TIME_STEP)
        if state.watermark is None:
            return candidate
        return max(state.watermark, candidate)

    def _timestamped(self, joined, before, state):
        """The joined rows, one timestamped table per window (noted in
        ``state.windows``)."""
        window = self.settings.window
        times = _window_times(joined, before)
        if before is not None:
            c.count(LATE, pc.sum(pc.less(joined.column('finish'),
                                         before)).as_py() or 0)
        windows = times.to_numpy() // window
        for index in np.unique(windows).tolist():
            piece = joined.filter(pa.array(windows == index))
            at = index * window if before is None else \
                max(index * window, before)
            state.windows.add(index * window)
            yield TimestampedValue(piece, Timestamp(at))

    def _checkpoint(self, state, before):
        """A checkpoint at the last window boundary the watermark crossed
        in this poll, in the window before it; the ids emitted into earlier
        windows are forgotten."""
        window, after = self.settings.window, state.watermark
        if after is None or (before is not None and
                             after // window <= before // window):
            return
        boundary = int(after // window * window)
        positions = {db: p.saved(boundary)
                     for db, p in state.positions.items()}
        for p in state.positions.values():
            p.emitted = {i: at for i, at in p.emitted.items()
                         if at >= boundary}
        state.boundary = boundary
        state.windows = {start for start in state.windows
                         if start >= boundary}
        yield beam.pvalue.TaggedOutput(CHECKPOINTS, TimestampedValue(
            Checkpoint(boundary, positions),
            Timestamp(boundary) - Duration(micros=1)))


def _window_times(table, before):
    """Each row's time for windowing: its finish, or ``before`` (the
    watermark when the poll began) if later."""
    finish = table.column('finish')
    if before is None:
        return finish
    return pc.max_element_wise(finish, pa.scalar(int(before), pa.int64()))


def _join(events, actions, instances, exclude=None):
    """One poll's rows of one database, joined as a batch trace joins them
    (one bucket): events -> actions -> instances, without those of the
    instances ``exclude`` names."""
    excluding = {} if exclude is None else {'exclude': exclude}
    pieces = [(EVENTS, events), (ACTIONS, actions), (INSTANCES, instances)]
    with_instance = [piece for _, piece in
                     join_events_to_actions((0, pieces), 1, **excluding)]
    joined = list(join_events_to_instances((0, with_instance), **excluding))
    return joined[0] if joined else None
