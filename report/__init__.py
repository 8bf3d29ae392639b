"""``starcompactor report``: statistics and plots of a written trace.

Reads the shards ``PREFIX-SSSSS-of-NNNNN.csv`` (or ``.avro`` when there is
no CSV) and writes

* ``PREFIX.report.json``: the statistics, and
* ``PREFIX.report.html``: one self-contained page (plots as base64 PNGs)
  showing the same numbers.

``write_report(prefix, html_path, json_path)`` does both and returns the
statistics dict, for other commands to reuse.

Streaming, and the memory bound
-------------------------------
The trace is read one record batch at a time: CSV through pyarrow's
streaming reader (``pyarrow.csv.open_csv``, explicit column types from
``transforms.schema``, blocks of ``CSV_BLOCK_BYTES`` = 1 MiB; its read-ahead
holds some 40 blocks, about 40 MiB, and grows with the block size), Avro
through fastavro, ``AVRO_BATCH_ROWS`` = 50,000 records per batch. A batch is
folded into the aggregates below and dropped; rows are never accumulated.
What is kept:

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

Extra sections (e.g. host capacity over time from a host-event trace) plug
in through ``write_report(..., extra_sections=[...])``: each is a callable
taking the statistics dict and returning a ``Section``; its figures and
HTML are appended to the page and its ``stats`` stored under
``stats['extra'][section.key]``.
"""
import argparse
import base64
import dataclasses
import datetime as dt
import glob
import html
import io
import json
import logging
import os
import re
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from starcompactor import __version__
from starcompactor.pipeline.errors import UserError
from starcompactor.transforms.schema import TRACE_COLUMNS

log = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 1 << 20
AVRO_BATCH_ROWS = 50_000
MERGE_ROWS = 200_000   # per-batch aggregate rows held before a merge, at least
PARTS = 16             # instance partitions (by the uuid's last character)

TERMINATE = 'compute_terminate_instance'
NO_KIND = '(none)'
OTHER = 'other'
TOP_KINDS = 6          # kinds stacked in the events-per-day plot
DURATION_KINDS = 10    # kinds shown in the duration plot
BINS_PER_DECADE = 20
DECADES = 9
DURATION_BINS = 1 + BINS_PER_DECADE * DECADES
DAY = 86400

# The columns the report reads, by Avro/JSON field name.
FIELDS = ('instance_uuid', 'event', 'start_time', 'finish_time',
          'event_duration', 'result', 'memory_mb', 'vcpus', 'user_id',
          'project_id', 'host_name_physical')
_TYPE = {field: typ for _, field, typ in TRACE_COLUMNS}
_HEADER = {field: header for header, field, _ in TRACE_COLUMNS}
_SCHEMA = pa.schema([(field, _TYPE[field]) for field in FIELDS])
_SHARD = re.compile(r'-(\d+)-of-(\d+)\.(csv|avro|jsonl)')


# --- finding and reading shards -------------------------------------------

def find_shards(prefix):
    """(format, shard paths in order): CSV if there is any, else Avro."""
    found = {}
    for path in glob.glob(glob.escape(prefix) + '-*-of-*.*'):
        match = _SHARD.fullmatch(path[len(prefix):])
        if match:
            found.setdefault(match[3], []).append(
                (int(match[1]), int(match[2]), path))
    fmt = next((f for f in ('csv', 'avro') if f in found), None)
    if fmt is None:
        if 'jsonl' in found:
            raise UserError(f'only JSON-lines shards at {prefix}; the report '
                            'reads the CSV or Avro shards')
        raise UserError(f'no trace at {prefix}: no '
                        f'{prefix}-SSSSS-of-NNNNN.csv or .avro files')
    shards = sorted(found[fmt])
    totals = {total for _, total, _ in shards}
    if (len(totals) != 1
            or [n for n, _, _ in shards] != list(range(totals.pop()))):
        names = ', '.join(os.path.basename(p) for *_, p in shards[:3])
        raise UserError(f'incomplete or mixed trace at {prefix}: '
                        f'{len(shards)} .{fmt} shards, {names}'
                        f'{", ..." if len(shards) > 3 else ""}')
    return fmt, [path for *_, path in shards]


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _csv_batches(path):
    options = pa_csv.ConvertOptions(
        column_types={_HEADER[f]: _TYPE[f] for f in FIELDS},
        include_columns=[_HEADER[f] for f in FIELDS],
        # Strings are quoted: "" is an empty string, an empty field null.
        strings_can_be_null=True, quoted_strings_can_be_null=False)
    try:
        reader = pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=options)
        for batch in reader:
            yield batch.rename_columns(list(FIELDS))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f'{path}: not a readable trace CSV: {_first_line(e)}')


def _avro_batches(path):
    import fastavro
    try:
        with open(path, 'rb') as handle:
            reader = fastavro.reader(handle)
            fields = {f['name'] for f in reader.writer_schema['fields']}
            missing = [f for f in FIELDS if f not in fields]
            if missing:
                raise UserError(f'{path}: not a trace: no field '
                                f'{", ".join(missing)}')
            chunk = []
            for record in reader:
                chunk.append(record)
                if len(chunk) == AVRO_BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist(chunk, schema=_SCHEMA)
                    chunk = []
            if chunk:
                yield pa.RecordBatch.from_pylist(chunk, schema=_SCHEMA)
    except (ValueError, EOFError, OSError, KeyError, TypeError,
            pa.ArrowException) as e:
        raise UserError(f'{path}: not a readable trace Avro file: '
                        f'{_first_line(e)}')


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


def _hist_quantile(hist, q, low, high):
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
class _PlotData:
    """What the plots need beyond the stats dict (arrays, not JSON)."""
    lifetimes: np.ndarray
    change_times: np.ndarray
    change_values: np.ndarray
    hist: dict


def _statistics(agg, prefix, fmt, shards):
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
            **{f'p{q}_s': _round(_hist_quantile(h, q / 100, low, high), 1)
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
        'trace': {'prefix': prefix, 'format': fmt, 'shards': len(shards)},
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
    return stats, _PlotData(lifetimes, times, values, hist)


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


# --- plots ------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _ticker():
    _pyplot()
    import matplotlib.ticker
    return matplotlib.ticker


def _png(fig):
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)
    return buffer.getvalue()


def _no_data(title):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.6))
    ax.set_axis_off()
    ax.text(0.5, 0.5, f'{title}: no data', ha='center', va='center',
            fontsize=14, color='0.4', transform=ax.transAxes)
    return _png(fig)


def _dates(seconds):
    return np.array(seconds, dtype='datetime64[s]')


def _plot_events_per_day(stats):
    daily = stats['events_per_day']
    if not daily['days']:
        return None
    plt = _pyplot()
    counts = np.array([d['by_kind'] for d in daily['days']], np.int64)
    first = np.datetime64(daily['days'][0]['date'], 'D')
    # Long spans: sum into buckets of several days (at most ~500 drawn).
    width = -(-len(counts) // 500)
    if width > 1:
        padded = np.zeros((-(-len(counts) // width) * width, counts.shape[1]),
                          np.int64)
        padded[:len(counts)] = counts
        counts = padded.reshape(-1, width, counts.shape[1]).sum(axis=1)
    edges = first + np.arange(len(counts) + 1) * width
    colors = plt.get_cmap('tab10').colors
    shown = [i for i, _ in enumerate(daily['kinds']) if counts[:, i].any()]
    labels = [daily['kinds'][i] for i in shown]
    palette = ['0.7' if k == OTHER and i == len(daily['kinds']) - 1
               else colors[i % 10] for i, k in zip(shown, labels)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if len(counts) <= 90:
        bottom = np.zeros(len(counts), np.int64)
        for i, label, color in zip(shown, labels, palette):
            ax.bar(edges[:-1], counts[:, i], width=width, bottom=bottom,
                   align='edge', label=label, color=color, linewidth=0)
            bottom += counts[:, i]
    else:   # one polygon per kind: fast for thousands of days
        ys = [np.append(counts[:, i], counts[-1, i]) for i in shown]
        ax.stackplot(edges, *ys, labels=labels, colors=palette, step='post',
                     linewidth=0)
    ax.set_ylabel('events per day (UTC)' if width == 1
                  else f'events per {width} days (UTC)')
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.autofmt_xdate()
    return _png(fig)


def _plot_concurrency(stats, data):
    if not len(data.change_times):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    if len(data.change_times) <= 20_000:
        times = np.concatenate([[data.change_times[0]], data.change_times])
        values = np.concatenate([[0], data.change_values])
        ax.step(_dates(times), values, where='post', linewidth=1)
        ax.set_ylabel('running instances')
    else:   # too many steps to draw: the daily maxima
        daily = stats['concurrent_instances']['daily_max']
        days = np.array([d['date'] for d in daily], dtype='datetime64[D]')
        ax.step(days, [d['max'] for d in daily], where='post', linewidth=1)
        ax.set_ylabel('running instances (daily maximum)')
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    fig.autofmt_xdate()
    return _png(fig)


def _plot_lifetimes(data):
    if not len(data.lifetimes):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.maximum(data.lifetimes, 1)   # 0 s drawn at 1 s on the log axis
    y = np.arange(1, len(x) + 1) / len(x)
    if len(x) > 5000:   # enough points for the eye
        keep = np.unique(np.linspace(0, len(x) - 1, 5000).astype(np.int64))
        x, y = x[keep], y[keep]
    ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0], y]),
            where='post')
    ax.set_xscale('log')
    ax.set_ylim(0, 1.1)
    ax.set_xlabel('lifetime, seconds (log; < 1 s drawn at 1 s)')
    ax.set_ylabel('fraction of terminated instances')
    for seconds, label in ((60, '1 min'), (3600, '1 h'), (DAY, '1 d'),
                           (30 * DAY, '30 d')):
        ax.axvline(seconds, color='0.85', linewidth=0.8, zorder=0)
        ax.text(seconds, 1.03, label, fontsize=7, color='0.5',
                ha='center', va='bottom')
    ax.grid(True, which='major', axis='y', color='0.92')
    return _png(fig)


def _plot_durations(stats, data):
    kinds = [k for k in stats['event_durations']][:DURATION_KINDS]
    if not kinds:
        return None
    plt = _pyplot()
    boxes = []
    for kind in kinds:
        s, h = stats['event_durations'][kind], data.hist[kind]

        def q(p):
            return max(_hist_quantile(h, p, s['min_s'], s['max_s']), 0.5)
        boxes.append({'label': f'{kind} (n={s["count"]})',
                      'whislo': q(0.05), 'q1': q(0.25), 'med': q(0.5),
                      'q3': q(0.75), 'whishi': q(0.95),
                      'mean': max(s['mean_s'], 0.5), 'fliers': []})
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(kinds) + 1.5))
    ax.bxp(boxes[::-1], orientation='horizontal', showmeans=True,
           showfliers=False)
    ax.set_xscale('log')
    ax.set_xlabel('event duration, seconds (log; box 25-75 %, whiskers '
                  '5-95 %, triangle: mean; 0 s drawn at 0.5 s)')
    ax.tick_params(axis='y', labelsize=8)
    return _png(fig)


def _plot_flavors(stats):
    flavors = [f for f in stats['flavors']
               if f['vcpus'] is not None and f['memory_mb'] is not None]
    if not flavors:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    counts = np.array([f['instances'] for f in flavors])
    x = [f['vcpus'] for f in flavors]
    y = [f['memory_mb'] / 1024 for f in flavors]
    ax.scatter(x, y, s=30 + 1500 * counts / counts.max(), alpha=0.5,
               edgecolors='k', linewidths=0.5)
    for xi, yi, n in list(zip(x, y, counts))[:30]:
        ax.annotate(str(n), (xi, yi), fontsize=7, ha='center', va='center')
    plain = _ticker().FuncFormatter(lambda v, _: f'{v:g}')
    if max(x) > 4 * max(min(x), 1):
        ax.set_xscale('log', base=2)
        ax.xaxis.set_major_formatter(plain)
    if max(y) > 4 * max(min(y), 1 / 1024):
        ax.set_yscale('log', base=2)
        ax.yaxis.set_major_formatter(plain)
    ax.set_xlabel('vCPUs')
    ax.set_ylabel('memory, GiB')
    ax.margins(0.15)
    return _png(fig)


# --- HTML -------------------------------------------------------------------

@dataclasses.dataclass
class Figure:
    """A plot; ``png`` None means no data: a "no data" image is shown."""
    title: str
    alt: str
    png: bytes = None

    def image(self):
        if self.png is None:
            return _no_data(self.title), f'No data. {self.alt}'
        return self.png, self.alt


@dataclasses.dataclass
class Section:
    """One part of the page: a heading, figures, trusted HTML (tables),
    and, for extra sections, the statistics stored in the JSON."""
    key: str
    title: str
    figures: list = dataclasses.field(default_factory=list)
    html: str = ''
    stats: dict = None


def _table(header, rows):
    head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in header or ())
    body = ''.join(
        '<tr>' + ''.join(f'<td>{html.escape(_fmt(v))}</td>' for v in row)
        + '</tr>' for row in rows)
    head = f'<thead><tr>{head}</tr></thead>' if head else ''
    return f'<table>{head}<tbody>{body}</tbody></table>'


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:,.6g}' if abs(value) < 1e6 else f'{value:,.0f}'
    if isinstance(value, int):
        return f'{value:,}'
    return str(value)


def _seconds_text(value):
    if value is None:
        return None
    for size, unit in ((DAY, 'd'), (3600, 'h'), (60, 'min')):
        if value >= size:
            return f'{value / size:.3g} {unit} ({value:,.0f} s)'
    return f'{value:g} s'


def _sections(stats, data):
    counts, span = stats['counts'], stats['span']
    summary = Section('summary', 'Summary', html=_table(
        None,
        [('first event start', span['first_start']),
         ('last event finish', span['last_finish']),
         ('span', _seconds_text(span['seconds'])),
         ('rows (finished events)', counts['rows']),
         ('events with a kind', counts['events']),
         ('instances', counts['instances']),
         ('users', counts['users']), ('projects', counts['projects']),
         ('hosts', counts['hosts'])]))
    kinds = Section('kinds', 'Events and results per kind', html=_table(
        ['event', 'events', 'Success', 'Error', 'other result',
         'failure rate', 'median duration', 'p99 duration', 'max duration'],
        [(k, n, r['Success'], r['Error'], r['other'],
          None if r['failure_rate'] is None
          else f'{100 * r["failure_rate"]:.2f} %',
          _seconds_text(stats['event_durations'].get(k, {}).get('p50_s')),
          _seconds_text(stats['event_durations'].get(k, {}).get('p99_s')),
          _seconds_text(stats['event_durations'].get(k, {}).get('max_s')))
         for (k, n), r in zip(stats['events_per_kind'].items(),
                              stats['results_per_kind'].values())]))
    top = ', '.join(stats['events_per_day']['kinds'])
    per_day = Section('events_per_day', 'Events per day', figures=[Figure(
        'Events per day',
        f'Stacked bar chart of events per UTC day, by event kind ({top}).',
        _plot_events_per_day(stats))])
    conc = stats['concurrent_instances']
    concurrency = Section(
        'concurrent_instances', 'Concurrent instances over time',
        figures=[Figure(
            'Concurrent instances',
            'Step plot of instances running over time, from each '
            'instance\'s first event to its terminate finish; instances '
            'never terminated run to the end of the span.',
            _plot_concurrency(stats, data))],
        html=_table(['peak', 'first reached at', 'open-ended instances'],
                    [(conc['peak'], conc['peak_time'],
                      stats['instance_lifetimes']['open_ended'])]))
    life = stats['instance_lifetimes']
    lifetimes = Section(
        'instance_lifetimes', 'Instance lifetimes (CDF)',
        figures=[Figure(
            'Instance lifetimes',
            'Cumulative distribution of lifetimes of terminated instances, '
            'log time axis.', _plot_lifetimes(data))],
        html=_table(['terminated', 'open-ended (not in the CDF)', 'min',
                     'median', 'p90', 'p99', 'max', 'mean'],
                    [(life['terminated'], life['open_ended'],
                      *(_seconds_text(life.get(k)) for k in (
                          'min_s', 'p50_s', 'p90_s', 'p99_s', 'max_s',
                          'mean_s')))]))
    durations = Section(
        'event_durations', 'Event durations per kind', figures=[Figure(
            'Event durations',
            'Horizontal box plots of event durations for the most common '
            'event kinds, log time axis.', _plot_durations(stats, data))])
    flavors = Section(
        'flavors', 'Flavor mix', figures=[Figure(
            'Flavor mix',
            'Scatter plot of instance flavors: vCPUs against memory, marker '
            'size proportional to the number of instances.',
            _plot_flavors(stats))],
        html=_table(['vCPUs', 'memory MB', 'instances'],
                    [(f['vcpus'], f['memory_mb'], f['instances'])
                     for f in stats['flavors'][:50]])
        + (f'<p>{len(stats["flavors"]) - 50} more flavors in the JSON.</p>'
           if len(stats['flavors']) > 50 else ''))
    return [summary, kinds, per_day, concurrency, lifetimes, durations,
            flavors]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child { text-align: left; }
img { max-width: 100%; }
nav a { margin-right: 1em; }
.note { color: #666; font-size: 0.85em; }
"""


def render_html(stats, sections, png_dir=None):
    title = f'Trace report: {stats["trace"]["prefix"]}'
    parts = [
        '<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
        f'<title>{html.escape(title)}</title><style>{_STYLE}</style>',
        '</head><body>', f'<h1>{html.escape(title)}</h1>',
        f'<p class="note">{stats["trace"]["shards"]} '
        f'{html.escape(stats["trace"]["format"])} shard(s); starcompactor '
        f'{html.escape(stats["starcompactor_version"])}. The same numbers '
        'are in the JSON report.</p>',
        '<nav>' + ''.join(
            f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>'
            for s in sections) + '</nav>']
    for section in sections:
        parts.append(f'<section id="{html.escape(section.key)}">'
                     f'<h2>{html.escape(section.title)}</h2>')
        for number, figure in enumerate(section.figures, start=1):
            png, alt = figure.image()
            if png_dir:
                with open(os.path.join(png_dir, f'{section.key}-{number}.png'),
                          'wb') as f:
                    f.write(png)
            data = base64.b64encode(png).decode('ascii')
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(alt)}" '
                f'title="{html.escape(figure.title)}"></figure>')
        parts.append(section.html)
        parts.append('</section>')
    parts.append('</body></html>')
    return '\n'.join(parts)


# --- entry points -----------------------------------------------------------

def compute_stats(prefix):
    """(stats dict, plot data) of the trace at ``prefix``, streaming."""
    fmt, shards = find_shards(prefix)
    batches = _csv_batches if fmt == 'csv' else _avro_batches
    agg = TraceAggregate()
    for path in shards:
        for batch in batches(path):
            try:
                agg.add(batch)
            except pa.ArrowInvalid as e:
                raise UserError(f'{path}: {_first_line(e)}')
        log.debug('read %s: %d rows so far', path, agg.rows)
    return _statistics(agg, prefix, fmt, shards)


def _write_atomically(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temp = tempfile.mkstemp(dir=directory, prefix='.report-')
        with os.fdopen(handle, 'w', encoding='utf-8') as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as e:
        raise UserError(f'cannot write {path}: {e.strerror or e}')


def write_report(prefix, html_path=None, json_path=None, extra_sections=(),
                 png_dir=None):
    """Write the HTML and JSON reports of the trace at ``prefix`` (default
    ``PREFIX.report.html`` / ``.json``); return the statistics dict.

    ``extra_sections``: callables ``f(stats) -> Section`` appended to the
    page; each section's ``stats`` go to ``stats['extra'][key]``.
    ``png_dir``: also write each plot there as a PNG file."""
    html_path = html_path or f'{prefix}.report.html'
    json_path = json_path or f'{prefix}.report.json'
    stats, data = compute_stats(prefix)
    sections = _sections(stats, data)
    for make in extra_sections:
        section = make(stats)
        sections.append(section)
        if section.stats is not None:
            stats.setdefault('extra', {})[section.key] = section.stats
    _write_atomically(json_path, json.dumps(stats, indent=1) + '\n')
    if png_dir:
        os.makedirs(png_dir, exist_ok=True)
    _write_atomically(html_path, render_html(stats, sections, png_dir))
    return stats


def main(argv):
    parser = argparse.ArgumentParser(
        prog='starcompactor report',
        description='Statistics and plots of a trace, as a self-contained '
                    'HTML page and a JSON file.')
    parser.add_argument('prefix', metavar='PREFIX',
                        help='the trace: PREFIX-SSSSS-of-NNNNN.csv (or .avro '
                             'when there is no CSV)')
    parser.add_argument('--html', metavar='OUT.html',
                        help='default: PREFIX.report.html')
    parser.add_argument('--json', metavar='OUT.json',
                        help='default: PREFIX.report.json')
    parser.add_argument('--png-dir', metavar='DIR',
                        help='also write each plot as a PNG file into DIR')
    args = parser.parse_args(argv)
    html_path = args.html or f'{args.prefix}.report.html'
    json_path = args.json or f'{args.prefix}.report.json'
    stats = write_report(args.prefix, html_path, json_path,
                         png_dir=args.png_dir)
    counts, span = stats['counts'], stats['span']
    print(f'starcompactor report: {counts["rows"]:,} rows, '
          f'{counts["instances"]:,} instances, '
          f'{span["first_start"] or "-"} .. {span["last_finish"] or "-"}')
    print(f'  wrote {html_path}')
    print(f'  wrote {json_path}')
