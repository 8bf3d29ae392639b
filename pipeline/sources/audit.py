"""``AuditSource``: audit-table exports (Parquet) as a source (the
interface is documented in ``starcompactor.pipeline.sources``; the format
and the as-of rule in ``transforms.audit``)::

    row groups ── snapshots ── latest ── bucket ── group ── latest ── rows
    (splits)      (rejects     (per      by id     by       (per site
                  counted)     batch)              bucket   and id)

A folder (``--audit-dir``) holds the three audit tables of one Nova
database: its site. Only the flat files are read; dated copies in
sub-folders are not. Each file is cut into splits of whole row groups, read
by workers in parallel, a batch at a time. Every snapshot is keyed by its
site and id, so ids that collide across sites (each Nova database counts
from 1) stay apart; the grouping brings all snapshots of an id together,
wherever they were read, and the latest of them becomes the source row.
"""
import math
import os
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.about import about_line
from starcompactor.pipeline.sources.read import ReadSplits
from starcompactor.pipeline.times import to_seconds
from starcompactor.transforms import audit, counters
from starcompactor.transforms.buckets import split_into_buckets
from starcompactor.transforms.mask import SOURCE_IDENTITIES
from starcompactor.transforms.schema import EVENTS, INSTANCES, SOURCE_TABLES

SPLIT_ROWS = 500_000          # audit rows per split (whole row groups)
BATCH_ROWS = 100_000          # audit rows per batch read
SNAPSHOTS_PER_BUCKET = 500_000
# Snapshots per source event in a usual history (an INSERT when it starts,
# an UPDATE when it finishes), for the estimate of events.
SNAPSHOTS_PER_EVENT = 2


@dataclass(frozen=True)
class AuditSplit:
    """Row groups ``[first, end)`` of one audit table's export."""
    path: str
    site: int        # index of its folder among the source's
    table: str       # logical name: instances, actions, events
    first: int
    end: int


class AuditSource:
    """What to read: one folder of audit exports per Nova database, an
    event window (Nova-format time strings), and the moment the rows are
    taken as of (``cut``, an aware datetime; None: every snapshot)."""

    def __init__(self, folders, window=(None, None), cut=None,
                 split_rows=SPLIT_ROWS, batch_rows=BATCH_ROWS):
        self.folders = [os.path.normpath(os.fspath(f)) for f in folders]
        self.window = tuple(window or (None, None))
        self.cut = cut
        self.split_rows = split_rows
        self.batch_rows = batch_rows
        self.buckets = {}

    def path(self, site, table):
        return os.path.join(self.folders[site], audit.file_name(table))

    def reader(self, splits):
        return ReadAuditExports(
            splits, self.folders, self.window,
            None if self.cut is None else to_seconds(self.cut),
            self.buckets, self.batch_rows)

    def describe(self):
        start, end = self.window
        return {'kind': 'audit-exports',
                'folders': [os.path.basename(f) for f in self.folders],
                'files': [audit.file_name(t) for t in SOURCE_TABLES],
                'window': {'start': start, 'end': end}}

    def about(self):
        folders = ('folder ' if len(self.folders) == 1 else 'folders ') + \
            ', '.join(self.folders)
        # The audit holds every row, archived ones included.
        return about_line('audit exports', folders, True, self.window)

    def raw_identities(self, among=None):
        """Every distinct raw identity (user, project, instance name, host)
        of every instance snapshot; with ``among``, only those of the
        candidates."""
        values = set()
        for site in range(len(self.folders)):
            exports = _open(self.path(site, INSTANCES))
            for batch in exports.iter_batches(self.batch_rows,
                                              columns=['data']):
                parsed, _ = audit.parse_data(batch.column('data'), INSTANCES)
                for column in SOURCE_IDENTITIES[INSTANCES]:
                    values.update(v for v in parsed.column(column).to_pylist()
                                  if v)
        return values if among is None else values & set(among)

    def plan(self):
        """Check every folder holds the three audit tables, readable, with
        the audit columns, and cut them into splits. Returns the splits and
        an estimate of the events (from the export's row counts)."""
        if len(set(self.folders)) != len(self.folders):
            raise UserError('an --audit-dir is given twice: each folder is '
                            'one Nova database')
        splits, rows = [], dict.fromkeys(SOURCE_TABLES, 0)
        for site, folder in enumerate(self.folders):
            if not os.path.isdir(folder):
                raise UserError(f'{folder}: no such folder of audit exports')
            for table in SOURCE_TABLES:
                path = self.path(site, table)
                if not os.path.isfile(path):
                    raise UserError(
                        f'{path}: missing audit table '
                        f'{audit.AUDIT_DATABASE}.{audit.AUDIT_TABLES[table]}')
                metadata = _checked(path)
                rows[table] += metadata.num_rows
                splits += self._split(path, site, table, metadata)
        self.buckets = {table: max(1, math.ceil(n / SNAPSHOTS_PER_BUCKET))
                        for table, n in rows.items()}
        return splits, rows[EVENTS] // SNAPSHOTS_PER_EVENT

    def _split(self, path, site, table, metadata):
        """Splits of whole row groups, about ``split_rows`` audit rows
        each."""
        splits, first, count = [], 0, 0
        for group in range(metadata.num_row_groups):
            count += metadata.row_group(group).num_rows
            if count >= self.split_rows:
                splits.append(AuditSplit(path, site, table, first, group + 1))
                first, count = group + 1, 0
        if first < metadata.num_row_groups:
            splits.append(AuditSplit(path, site, table, first,
                                     metadata.num_row_groups))
        return splits


def _open(path):
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise UserError(f'{path}: no such audit export') from None
    except (OSError, pa.ArrowException) as e:
        raise UserError(f'{path}: not a readable Parquet file ({e})') from None


def _checked(path):
    """The metadata of an export that has the columns read, of types the
    source reads."""
    exports = _open(path)
    schema = exports.schema_arrow
    missing = [name for name in audit.READ_COLUMNS
               if name not in schema.names]
    if missing:
        raise UserError(f'{path}: not an audit table export (no column '
                        f'{", ".join(missing)})')
    when = schema.field('audit_event_time').type
    if pa.types.is_dictionary(when):
        when = when.value_type
    if not (pa.types.is_timestamp(when) or pa.types.is_string(when)
            or pa.types.is_large_string(when)):
        raise UserError(f'{path}: audit_event_time is {when}, not a '
                        f'timestamp or text')
    return exports.metadata


class ReadSnapshots(beam.DoFn):
    """AuditSplit -> ``((table, bucket), snapshots)``: the latest snapshot
    of each id in each batch read, keyed by the bucket of its id. Audit
    rows that hold no snapshot are counted read and rejected, by reason."""

    def __init__(self, cut, buckets, batch_rows):
        self.cut = cut
        self.buckets = buckets
        self.batch_rows = batch_rows

    def process(self, split):
        exports = pq.ParquetFile(split.path)
        for batch in exports.iter_batches(
                self.batch_rows, row_groups=range(split.first, split.end),
                columns=list(audit.READ_COLUMNS)):
            snaps, rejects = audit.snapshots(pa.Table.from_batches([batch]),
                                             split.table, self.cut)
            for reason, n in rejects.items():
                counters.count_read(split.table, n)
                counters.count_rejected(split.table, reason, n)
            snaps = snaps.append_column(audit.SITE, pa.array(
                [split.site] * snaps.num_rows, pa.int32()))
            for bucket, piece in split_into_buckets(
                    audit.latest(snaps), ['id'],
                    self.buckets[split.table]):
                yield (split.table, bucket), piece


def _as_of_cut(keyed, sites, window):
    """All snapshots of a bucket -> the source rows they end in."""
    (table, _), pieces = keyed
    snaps = audit.latest(pa.concat_tables(list(pieces)))
    rows = audit.source_rows(snaps, table, sites)
    start, end = window
    if table == EVENTS and (start or end):
        # As the databases' sources push it down: start_time in [start, end)
        rows = rows.filter(_in_window(rows.column('start_time'), start, end))
    if rows.num_rows:
        yield table, rows


def _in_window(start_times, start, end):
    inside = pc.is_valid(start_times)
    if start:
        inside = pc.and_kleene(inside, pc.greater_equal(start_times, start))
    if end:
        inside = pc.and_kleene(inside, pc.less(start_times, end))
    return pc.fill_null(inside, False)


class ReadAuditExports(beam.PTransform):
    """PBegin -> ``(table, Arrow batch)`` pairs: the source rows as of the
    cut, one per id of each site that has a snapshot at or before it."""

    def __init__(self, splits, sites, window, cut, buckets, batch_rows):
        super().__init__()
        self.splits = splits
        self.sites = sites
        self.window = window
        self.cut = cut
        self.buckets = buckets
        self.batch_rows = batch_rows

    def expand(self, pbegin):
        return (pbegin
                | 'Snapshots' >> ReadSplits(self.splits, ReadSnapshots(
                    self.cut, self.buckets, self.batch_rows))
                | 'ById' >> beam.GroupByKey()
                | 'AsOfCut' >> beam.FlatMap(_as_of_cut, self.sites,
                                            self.window))
