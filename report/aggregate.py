"""The statistics of a trace, folded in one record batch at a time.

``compute_stats(prefix)`` reads the trace's shards (``read``), folds each
batch into a ``TraceAggregate`` and returns the statistics dict (the JSON
report) and ``PlotData``, the arrays the plots draw beyond it.

Streaming, and the memory bound
-------------------------------
A batch is folded into the aggregates below and dropped; rows are never
accumulated. What is kept:

* per instance (needed for lifetimes, concurrency and the flavor mix): uuid,
  first event start, last terminate finish, vcpus, memory_mb, as Arrow
  tables (about 70 bytes per instance). Each batch adds its own
  per-instance aggregate; the pieces are merged (Arrow group-by) whenever
  they outgrow the merged table, so at most about twice the final size is
  held. The instances are split into 16 parts by the uuid's last character
  so that a merge's own hash table covers 1/16 of them;
* the distinct masked users, projects and hosts (about 40 bytes each), kept
  the same way;
* counters per (day, event kind) and per (event kind, result), and per event
  kind a fixed-size histogram of durations on logarithmic bins
  (``DURATION_BINS`` = 181 counters: 0 s, then 20 bins per decade up to
  10^9 s) with exact count, min, max and sum.

At the end, lifetimes and the concurrency step function take a few numpy
arrays of one number per instance (about 50 bytes per instance).

So memory is O(instances + users + projects + hosts + days x kinds + one
batch) and does not grow with the number of events. Measured peak RSS of
the whole command (about 140 MB of it is Python, pyarrow, numpy and
matplotlib, as for an empty trace): 0.29 GB for 1,000,000 rows of 199,000
instances, 0.43 GB for 4,000,000 rows of 795,000 instances.

Definitions
-----------
* span: the earliest event start to the latest event finish.
* events: rows (one per finished event) whose EVENT is set; rows without an
  EVENT are counted under the kind ``(none)``.
* users, projects, hosts: distinct masked values; null and empty excluded.
* failure rate of a kind: Error / (Success + Error); rows with another or
  no result are counted as ``other`` and left out of the rate.
* an instance's lifetime: from the start of its first event in the trace to
  the finish of its (last) ``compute_terminate_instance`` event. Instances
  without one are open-ended: counted, left out of the lifetime CDF, and
  taken as running until the end of the span in the concurrency plot.
* concurrency: at a time when one instance ends and another starts, the
  ending one is counted out first.
* duration quantiles are read from the log-binned histograms, interpolated
  within a bin (bin width 12 %) and clamped to the exact min and max; the
  lifetime quantiles are exact.
"""
import dataclasses
import datetime as dt
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor import __version__
from starcompactor.pipeline import shards
from starcompactor.pipeline.errors import UserError
from starcompactor.report import read

log = logging.getLogger(__name__)

MERGE_ROWS = 200_000   # per-batch aggregate rows held before a merge, at least
PARTS = 16             # instance partitions (by the uuid's last character)

TERMINATE = 'compute_terminate_instance'
NO_KIND = '(none)'
OTHER = 'other'
TOP_KINDS = 6          # kinds stacked in the events-per-day plot
BINS_PER_DECADE = 20
DECADES = 9
DURATION_BINS = 1 + BINS_PER_DECADE * DECADES
DAY = 86400


def compute_stats(prefix):
    """(stats dict, plot data) of the trace at ``prefix``, streaming."""
    fmt, paths = shards.complete_set(prefix, read.FORMATS)
    agg = TraceAggregate()
    for path in paths:
        for batch in read.batches(path, fmt):
            try:
                agg.add(batch)
            except pa.ArrowInvalid as e:
                raise UserError(f'{path}: {read.first_line(e)}')
        log.debug('read %s: %d rows so far', path, agg.rows)
    return _statistics(agg, prefix, fmt, paths)


# --- aggregates -------------------------------------------------------------

class _Merged:
    """Rows of small per-batch aggregates, merged by ``keys`` with ``aggs``
    (Arrow group-by) whenever the pending pieces outgrow the merged table."""

    def __init__(self, schema, keys, aggs, parts=1):
        self.keys, self.aggs = keys, aggs
        self.min_pending = MERGE_ROWS // parts
        self.names = schema.names
        self.table = schema.empty_table()
        self.pending, self.pending_rows = [], 0

    def add(self, table):
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows > max(self.table.num_rows, self.min_pending):
            self._merge()

    def _merge(self):
        if not self.pending:
            return
        table = pa.concat_tables([self.table, *self.pending])
        grouped = table.group_by(self.keys, use_threads=False).aggregate(
            self.aggs)
        agg_of = dict(self.aggs)
        self.table = grouped.select(
            [f'{c}_{agg_of[c]}' if c in agg_of else c for c in self.names]
        ).rename_columns(self.names)
        self.pending, self.pending_rows = [], 0

    def result(self):
        self._merge()
        return self.table


class _Partitioned:
    """A ``_Merged`` per last character of the (first) key: uuids and masked
    values end in a random (or, if sequential, cycling) hex digit, so each
    merge handles about 1/16 of the keys and its transient memory (Arrow's
    group-by hash table) stays small. Other keys only partition worse."""

    def __init__(self, schema, keys, aggs):
        self.schema, self.keys, self.aggs = schema, keys, aggs
        self.parts = {}

    def add(self, table):
        last = pc.dictionary_encode(pc.utf8_slice_codeunits(
            table.column(self.keys[0]), -1)).combine_chunks()
        for i, char in enumerate(last.dictionary.to_pylist()):
            part = self.parts.get(char)
            if part is None:
                part = self.parts[char] = _Merged(self.schema, self.keys,
                                                  self.aggs, PARTS)
            part.add(table.filter(pc.equal(last.indices, i)))

    def result(self):
        return pa.concat_tables(
            [self.schema.empty_table()]
            + [self.parts[char].result() for char in sorted(self.parts)])


def _distinct():
    return _Merged(pa.schema([('value', pa.string())]), ['value'], [])


_INSTANCE_SCHEMA = pa.schema([
    ('uuid', pa.string()), ('start', pa.int64()), ('end', pa.int64()),
    ('vcpus', pa.int64()), ('memory_mb', pa.int64())])
_INSTANCE_AGGS = [('start', 'min'), ('end', 'max'), ('vcpus', 'max'),
                  ('memory_mb', 'max')]


def _seconds(array, formats):
    """ISO-8601 text (``...Z`` or naive UTC, any fraction) -> int64 s."""
    for i, typ in enumerate(formats):
        try:
            parsed = array.cast(typ)
        except pa.ArrowInvalid:
            continue
        if i:   # try the format that worked first next time
            formats.insert(0, formats.pop(i))
        return parsed.cast(pa.timestamp('s', typ.tz), safe=False) \
            .cast(pa.int64())
    array.cast(formats[0])   # raises the error of the preferred format


def _duration_bins(durations):
    """Bin 0: 0 s or less; bin i >= 1: [10^((i-1)/20), 10^(i/20)) s."""
    positive = np.maximum(durations, 1).astype(np.float64)
    bins = 1 + np.floor(np.log10(positive) * BINS_PER_DECADE + 1e-9)
    bins = np.clip(bins, 1, DURATION_BINS - 1).astype(np.int64)
    return np.where(durations <= 0, 0, bins)


def _bin_edges(i):
    return (10 ** ((i - 1) / BINS_PER_DECADE), 10 ** (i / BINS_PER_DECADE))


class TraceAggregate:
    """Everything the report needs, folded in one batch at a time."""

    def __init__(self):
        self.rows = 0
        self.first_start = self.last_finish = None
        self.kinds = {}          # kind -> column/row in the arrays below
        self.day0 = None         # day number (since 1970) of row 0
        self.per_day = np.zeros((0, 0), np.int64)   # day x kind -> events
        self.hist = np.zeros((0, DURATION_BINS), np.int64)
        self.results = {}        # (kind, result) -> events
        self.duration = {}       # kind -> [count, min, max, sum]
        self.users, self.projects, self.hosts = (
            _distinct(), _distinct(), _distinct())
        self.instances = _Partitioned(_INSTANCE_SCHEMA, ['uuid'],
                                      _INSTANCE_AGGS)
        self._time_formats = [pa.timestamp('us', 'UTC'), pa.timestamp('us')]

    def add(self, batch):
        if not batch.num_rows:
            return
        self.rows += batch.num_rows
        start = _seconds(batch.column('start_time'), self._time_formats)
        finish = _seconds(batch.column('finish_time'), self._time_formats)
        kind = pc.fill_null(batch.column('event'), NO_KIND)
        ids = self._kind_ids(kind)
        self._span(start, finish)
        self._per_day(ids, start)
        for k, r, n in _grouped_counts(
                pa.table({'kind': kind, 'result': batch.column('result')}),
                ['kind', 'result']):
            self.results[k, r] = self.results.get((k, r), 0) + n
        self._durations(kind, ids, batch.column('event_duration'))
        for target, field in ((self.users, 'user_id'),
                              (self.projects, 'project_id'),
                              (self.hosts, 'host_name_physical')):
            values = pc.unique(batch.column(field))
            values = values.filter(pc.fill_null(
                pc.not_equal(values, ''), False))
            target.add(pa.table({'value': values}))
        self._instances(batch, kind, start, finish)

    def _span(self, start, finish):
        low = pc.min(start).as_py()
        high = pc.max(finish).as_py()
        if low is not None and (self.first_start is None
                                or low < self.first_start):
            self.first_start = low
        if high is not None and (self.last_finish is None
                                 or high > self.last_finish):
            self.last_finish = high

    def _kind_ids(self, kind):
        """Each row's kind number (numpy), adding new kinds."""
        encoded = pc.dictionary_encode(kind)
        names = encoded.dictionary.to_pylist()
        for name in names:
            self.kinds.setdefault(name, len(self.kinds))
        grow = len(self.kinds) - self.hist.shape[0]
        if grow > 0:
            self.hist = np.vstack(
                [self.hist, np.zeros((grow, DURATION_BINS), np.int64)])
            self.per_day = np.hstack([self.per_day, np.zeros(
                (self.per_day.shape[0], grow), np.int64)])
        ids = np.array([self.kinds[n] for n in names], np.int64)
        return ids[encoded.indices.to_numpy(zero_copy_only=False)]

    def _per_day(self, ids, start):
        valid = pc.is_valid(start).to_numpy(zero_copy_only=False)
        days = start.filter(pc.is_valid(start)).to_numpy() // DAY
        if not len(days):
            return
        ids = ids[valid]
        low, high = int(days.min()), int(days.max())
        if self.day0 is None:
            self.day0 = low
            self.per_day = np.zeros((0, len(self.kinds)), np.int64)
        if low < self.day0:
            self.per_day = np.vstack([np.zeros(
                (self.day0 - low, len(self.kinds)), np.int64), self.per_day])
            self.day0 = low
        end = high - self.day0 + 1
        if end > self.per_day.shape[0]:
            self.per_day = np.vstack([self.per_day, np.zeros(
                (end - self.per_day.shape[0], len(self.kinds)), np.int64)])
        rows = days - low
        width = len(self.kinds)
        counts = np.bincount(rows * width + ids,
                             minlength=(high - low + 1) * width)
        self.per_day[low - self.day0:end] += counts.reshape(-1, width)

    def _durations(self, kind, ids, duration):
        valid = pc.is_valid(duration)
        kind, duration = kind.filter(valid), duration.filter(valid)
        if not len(duration):
            return
        ids = ids[valid.to_numpy(zero_copy_only=False)]
        values = duration.to_numpy(zero_copy_only=False).astype(np.int64)
        flat = ids * DURATION_BINS + _duration_bins(values)
        self.hist += np.bincount(
            flat, minlength=self.hist.size).reshape(self.hist.shape)
        stats = pa.table({'kind': kind, 'd': duration}).group_by(
            'kind', use_threads=False).aggregate(
            [('d', 'count'), ('d', 'min'), ('d', 'max'), ('d', 'sum')])
        for k, n, low, high, total in zip(*stats.to_pydict().values()):
            seen = self.duration.get(k)
            self.duration[k] = ([n, low, high, total] if seen is None else
                                [seen[0] + n, min(seen[1], low),
                                 max(seen[2], high), seen[3] + total])

    def _instances(self, batch, kind, start, finish):
        end = pc.if_else(pc.equal(kind, TERMINATE), finish,
                         pa.scalar(None, pa.int64()))
        table = pa.table({
            'uuid': batch.column('instance_uuid'), 'start': start,
            'end': end, 'vcpus': batch.column('vcpus'),
            'memory_mb': batch.column('memory_mb')})
        table = table.filter(pc.is_valid(table['uuid']))
        grouped = table.group_by('uuid', use_threads=False).aggregate(
            _INSTANCE_AGGS)
        self.instances.add(grouped.select(
            ['uuid'] + [f'{c}_{a}' for c, a in _INSTANCE_AGGS])
            .rename_columns(_INSTANCE_SCHEMA.names))


def _grouped_counts(table, keys):
    grouped = table.group_by(keys, use_threads=False).aggregate(
        [([], 'count_all')])
    columns = grouped.to_pydict()
    return zip(*(columns[k] for k in keys), columns['count_all'])


# --- statistics -------------------------------------------------------------

def _iso(seconds):
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc) \
        .strftime('%Y-%m-%dT%H:%M:%SZ')


def _date(day):
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def hist_quantile(hist, q, low, high):
    """Approximate q-quantile from a duration histogram, clamped to the
    exact [low, high]."""
    total = hist.sum()
    cumulative = np.cumsum(hist)
    rank = q * total
    i = int(np.searchsorted(cumulative, rank, side='left'))
    i = min(i, len(hist) - 1)
    if i == 0:
        value = 0.0
    else:
        below = cumulative[i - 1]
        fraction = (rank - below) / hist[i] if hist[i] else 0.0
        lo, hi = _bin_edges(i)
        value = lo * (hi / lo) ** min(max(fraction, 0.0), 1.0)
        # Durations are whole seconds: stay within the bin's integers.
        first, last = np.ceil(lo - 1e-9), np.ceil(hi - 1e-9) - 1
        if first <= last:
            value = min(max(value, first), last)
    return float(min(max(value, low), high))


def _round(value, digits=3):
    return None if value is None else round(float(value), digits)


@dataclasses.dataclass
class PlotData:
    """What the plots need beyond the stats dict (arrays, not JSON)."""
    lifetimes: np.ndarray
    change_times: np.ndarray
    change_values: np.ndarray
    hist: dict


def _statistics(agg, prefix, fmt, paths):
    instances = agg.instances.result()
    instances = instances.filter(pc.is_valid(instances['start']))
    first, last = agg.first_start, agg.last_finish
    if last is None or (first is not None and last < first):
        last = first
    kinds_total = {}
    for (kind, _), n in agg.results.items():
        kinds_total[kind] = kinds_total.get(kind, 0) + n
    ordered = sorted(kinds_total, key=lambda k: (-kinds_total[k], k))

    results = {}
    for kind in ordered:
        success = agg.results.get((kind, 'Success'), 0)
        error = agg.results.get((kind, 'Error'), 0)
        decided = success + error
        results[kind] = {
            'Success': success, 'Error': error,
            'other': kinds_total[kind] - decided,
            'failure_rate': _round(error / decided, 6) if decided else None}

    durations, hist = {}, {}
    for kind in ordered:
        if kind not in agg.duration:
            continue
        count, low, high, total = agg.duration[kind]
        h = agg.hist[agg.kinds[kind]]
        hist[kind] = h
        durations[kind] = {
            'count': count, 'zero': int(h[0]), 'min_s': low, 'max_s': high,
            'mean_s': _round(total / count),
            **{f'p{q}_s': _round(hist_quantile(h, q / 100, low, high), 1)
               for q in (50, 90, 99)}}

    top = ordered[:TOP_KINDS]
    days = []
    if first is not None:
        first_day, last_day = first // DAY, last // DAY
        by_kind = np.zeros((last_day - first_day + 1, len(agg.kinds)),
                           np.int64)
        by_kind[agg.day0 - first_day:][:len(agg.per_day)] = agg.per_day
        columns = [agg.kinds[k] for k in top]
        rest = [i for k, i in agg.kinds.items() if k not in top]
        per_day = np.column_stack(
            [by_kind[:, columns], by_kind[:, rest].sum(axis=1)])
        days = [{'date': _date(first_day + i), 'events': int(row.sum()),
                 'by_kind': [int(x) for x in row]}
                for i, row in enumerate(per_day)]

    start = instances['start'].to_numpy(zero_copy_only=False)
    end = instances['end']
    terminated = pc.is_valid(end).to_numpy(zero_copy_only=False)
    end = pc.fill_null(end, last if last is not None else 0) \
        .to_numpy(zero_copy_only=False)
    lifetimes = np.sort((end - start)[terminated]) if len(start) else \
        np.zeros(0, np.int64)
    lifetime_stats = {'terminated': int(terminated.sum()),
                      'open_ended': int((~terminated).sum())}
    if len(lifetimes):
        lifetime_stats.update({
            'min_s': int(lifetimes[0]), 'max_s': int(lifetimes[-1]),
            'mean_s': _round(lifetimes.mean()),
            **{f'p{q}_s': _round(np.percentile(lifetimes, q), 1)
               for q in (50, 90, 99)}})

    times, values, concurrency = _concurrency(start, end, first, last)

    flavor_table = instances.group_by(
        ['vcpus', 'memory_mb'], use_threads=False).aggregate(
        [([], 'count_all')]).to_pydict()
    flavors = sorted(
        ({'vcpus': v, 'memory_mb': m, 'instances': n} for v, m, n in zip(
            flavor_table['vcpus'], flavor_table['memory_mb'],
            flavor_table['count_all'])),
        key=lambda f: (-f['instances'], f['vcpus'] is None, f['vcpus'] or 0,
                       f['memory_mb'] or 0))

    stats = {
        'report_version': 1,
        'starcompactor_version': __version__,
        'trace': {'prefix': prefix, 'format': fmt, 'shards': len(paths)},
        'span': {'first_start': _iso(first), 'last_finish': _iso(last),
                 'seconds': None if first is None else max(last - first, 0),
                 'days': len(days)},
        'counts': {
            'rows': agg.rows,
            'events': agg.rows - kinds_total.get(NO_KIND, 0),
            'instances': instances.num_rows,
            'users': agg.users.result().num_rows,
            'projects': agg.projects.result().num_rows,
            'hosts': agg.hosts.result().num_rows},
        'events_per_kind': {k: kinds_total[k] for k in ordered},
        'results_per_kind': results,
        'event_durations': durations,
        'events_per_day': {'kinds': top + [OTHER], 'days': days},
        'instance_lifetimes': lifetime_stats,
        'concurrent_instances': concurrency,
        'flavors': flavors,
    }
    return stats, PlotData(lifetimes, times, values, hist)


def _concurrency(start, end, first, last):
    """Step function of running instances: change times, value after each
    change, and its summary (peak, daily maxima)."""
    summary = {'peak': 0, 'peak_time': None, 'daily_max': []}
    if not len(start):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), summary
    times = np.concatenate([end, start])
    steps = np.concatenate([np.full(len(end), -1), np.ones(len(start))]) \
        .astype(np.int64)
    order = np.lexsort((steps, times))       # ends before starts
    times, values = times[order], np.cumsum(steps[order])
    peak_at = int(np.argmax(values))
    first_day, last_day = first // DAY, max(last, first) // DAY
    day_starts = np.arange(first_day, last_day + 1) * DAY
    day_index = times // DAY - first_day
    daily = np.zeros(len(day_starts), np.int64)
    np.maximum.at(daily, day_index, values)
    before = np.searchsorted(times, day_starts, side='left') - 1
    carried = np.where(before >= 0, values[np.maximum(before, 0)], 0)
    daily = np.maximum(daily, carried)
    summary.update({
        'peak': int(values[peak_at]), 'peak_time': _iso(times[peak_at]),
        'daily_max': [{'date': _date(first_day + i), 'max': int(m)}
                      for i, m in enumerate(daily)]})
    return times, values, summary
