"""Reading the three Nova tables from MySQL/MariaDB as Arrow batches.

Each table (and its ``shadow_`` copy, where ``archive_deleted_rows`` moves old
deleted instances) is cut into primary-key ranges when the pipeline is built;
workers read the ranges in parallel, each with a server-side (streaming)
cursor, so memory stays bounded whatever the table size. The last range of a
table is open-ended: rows added while the trace runs are not missed.
"""
from dataclasses import dataclass, replace
from typing import Optional

import logging

import apache_beam as beam
import pyarrow as pa
import pymysql

from starcompactor.transforms import counters as c
from starcompactor.transforms.mask import DEFAULT_MASKED as IDENTITY_COLUMNS
from starcompactor.transforms.schema import (
    EVENTS, INSTANCES, NOVA_TABLES, SHADOW_PREFIX, SOURCE_COLUMNS, SOURCE_TABLES,
    source_schema)

log = logging.getLogger(__name__)

# Errors after which a fresh connection can carry on where the last ended:
# server gone away, lost during query, connection killed.
LOST_CONNECTION = {2006, 2013, 2055, 1927}


@dataclass(frozen=True)
class TableSplit:
    """A primary-key range ``[first_id, end_id)`` of one Nova table."""
    database: str
    table: str                 # logical name: instances, actions, events
    nova_table: str            # e.g. shadow_instance_actions
    first_id: int
    end_id: Optional[int]      # None: to the end of the table


def _quote(name):
    return '`' + name.replace('`', '``') + '`'


def select_statement(split, window=(None, None)):
    """SQL and arguments reading one split, the event window pushed down."""
    columns = ', '.join(_quote(name) for name, _ in SOURCE_COLUMNS[split.table])
    sql = (f'SELECT {columns} FROM {_quote(split.database)}.'
           f'{_quote(split.nova_table)} WHERE id >= %s')
    args = [split.first_id]
    if split.end_id is not None:
        sql += ' AND id < %s'
        args.append(split.end_id)
    start, end = window
    if split.table == EVENTS and start:
        sql += ' AND start_time >= %s'
        args.append(start)
    if split.table == EVENTS and end:
        sql += ' AND start_time < %s'
        args.append(end)
    return sql + ' ORDER BY id', args


def _to_table(database, table, rows):
    columns = list(zip(*rows)) if rows else [()] * len(SOURCE_COLUMNS[table])
    arrays = [pa.array([database] * len(rows), pa.string())]
    for values, (_, typ) in zip(columns, SOURCE_COLUMNS[table]):
        if typ == pa.string():
            # Text arrives undecoded; Arrow checks it is UTF-8, in C++.
            arrays.append(pa.array(values, pa.binary()).cast(typ))
        else:
            arrays.append(pa.array(values, typ))
    return pa.Table.from_arrays(arrays, schema=source_schema(table))


def _is_utf8(row):
    try:
        for value in row:
            if isinstance(value, bytes):
                value.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def rows_to_table(database, table, rows):
    """Arrow batch (``schema.source_schema``) from PyMySQL row tuples, and
    how many rows were dropped because their text is not UTF-8."""
    try:
        return _to_table(database, table, rows), 0
    except pa.ArrowInvalid:
        valid = [row for row in rows if _is_utf8(row)]
        return _to_table(database, table, valid), len(rows) - len(valid)


class NovaMySQLSource:
    """What to read: databases, live and archived tables, an event window.

    ``window`` holds Nova-format time strings (``YYYY-MM-DD HH:MM:SS``).
    """

    def __init__(self, connection, databases, archived=True,
                 window=(None, None), split_ids=250_000, batch_rows=50_000):
        self.connection = connection
        self.databases = list(databases)
        self.archived = archived
        self.window = window
        self.split_ids = split_ids
        self.batch_rows = batch_rows

    def reader(self, splits):
        return ReadNovaMySQL(self, splits)

    def raw_identities(self):
        """Every distinct raw user, project, instance name and host."""
        values = set()
        connection = self.connection.connect()
        try:
            with connection.cursor() as cursor:
                for database in self.databases:
                    for table, nova_table in self.nova_tables():
                        if table != INSTANCES:
                            continue
                        for column in IDENTITY_COLUMNS:
                            cursor.execute(
                                f'SELECT DISTINCT {_quote(column)} FROM '
                                f'{_quote(database)}.{_quote(nova_table)}')
                            values.update(v.decode('utf-8', 'replace')
                                          for v, in cursor if v)
        except pymysql.err.MySQLError as e:
            raise self.connection.error(e) from None
        finally:
            connection.close()
        return values

    def describe(self):
        start, end = self.window
        return {'kind': 'mysql', 'server': self.connection.describe(),
                'databases': self.databases, 'archived': self.archived,
                'window': {'start': start, 'end': end}}

    def nova_tables(self):
        prefixes = ('', SHADOW_PREFIX) if self.archived else ('',)
        return [(table, prefix + NOVA_TABLES[table])
                for table in SOURCE_TABLES for prefix in prefixes]

    def plan(self):
        """Check every table is readable and cut it into splits.

        Runs where the pipeline is built, so a wrong password, a missing
        database, table or column is reported before anything starts.
        Returns the splits and the estimated number of event rows.
        """
        splits, estimated_events = [], 0
        connection = self.connection.connect()
        try:
            with connection.cursor() as cursor:
                for database in self.databases:
                    for table, nova_table in self.nova_tables():
                        first, last = self._id_range(
                            cursor, database, table, nova_table)
                        splits += self._split(database, table, nova_table,
                                              first, last)
                        if table == EVENTS and last is not None:
                            estimated_events += last - first + 1
        finally:
            connection.close()
        return splits, estimated_events

    def _id_range(self, cursor, database, table, nova_table):
        probe = TableSplit(database, table, nova_table, 0, 0)
        sql, args = select_statement(probe)
        try:
            cursor.execute(sql.replace(' ORDER BY id', ' LIMIT 0'), args)
            cursor.execute(f'SELECT MIN(id), MAX(id) FROM '
                           f'{_quote(database)}.{_quote(nova_table)}')
        except pymysql.err.MySQLError as e:
            raise self.connection.error(e, database, nova_table) from None
        return cursor.fetchone()

    def _split(self, database, table, nova_table, first, last):
        if first is None:   # empty now, maybe not by the time it is read
            return [TableSplit(database, table, nova_table, 0, None)]
        bounds = list(range(first, last + 1, self.split_ids))[1:]
        starts = [0] + bounds
        ends = bounds + [None]
        return [TableSplit(database, table, nova_table, s, e)
                for s, e in zip(starts, ends)]


class ReadTableSplits(beam.DoFn):
    """TableSplit -> Arrow batches, tagged with the logical table name.

    Rows come ordered by id, so a connection lost mid-split (a server
    restart, a ``KILL``) is resumed after the last id of the last batch
    handed on: nothing is lost or read twice. After ``MAX_RESUMES`` in one
    split the read fails.
    """
    MAX_RESUMES = 3

    def __init__(self, connection, window, batch_rows):
        self.connection = connection
        self.window = window
        self.batch_rows = batch_rows
        self._db = None

    def setup(self):
        self._db = self.connection.connect(streaming=True)

    def _batches(self, split):
        sql, args = select_statement(split, self.window)
        cursor = self._db.cursor()
        try:
            cursor.execute(sql, args)
            while True:
                rows = cursor.fetchmany(self.batch_rows)
                if not rows:
                    break
                yield rows
        except pymysql.err.MySQLError:
            self._abandon(cursor)
            raise
        cursor.close()

    def _abandon(self, cursor):
        """Drop a broken connection without draining its half-read result
        (PyMySQL would try, on a dead socket)."""
        result = getattr(cursor, '_result', None)
        if result is not None:
            result.unbuffered_active = False
        cursor._result = None
        self._db._force_close()

    def process(self, split, after=None):
        read, resumes = 0, 0
        remaining = split
        while True:
            try:
                for rows in self._batches(remaining):
                    read += len(rows)
                    remaining = replace(remaining, first_id=rows[-1][0] + 1)
                    batch, invalid = rows_to_table(split.database,
                                                   split.table, rows)
                    c.count_read(split.table, invalid)
                    c.count_rejected(split.table, c.INVALID_UTF8, invalid)
                    yield beam.pvalue.TaggedOutput(split.table, batch)
                break
            except pymysql.err.OperationalError as e:
                if e.args[0] not in LOST_CONNECTION or \
                        resumes == self.MAX_RESUMES:
                    raise self.connection.error(
                        e, split.database, split.nova_table) from None
                resumes += 1
                log.warning('lost the connection reading %s.%s (%s); '
                            'resuming at id %d (%d/%d)', split.database,
                            split.nova_table, e.args[0], remaining.first_id,
                            resumes, self.MAX_RESUMES)
                self._reconnect()
            except pymysql.err.MySQLError as e:
                raise self.connection.error(
                    e, split.database, split.nova_table) from None
        log.info('read %s.%s ids %d..%s: %d rows', split.database,
                 split.nova_table, split.first_id,
                 '' if split.end_id is None else split.end_id - 1, read)

    def _reconnect(self):
        self._db = self.connection.connect(streaming=True)

    def teardown(self):
        if self._db is not None and self._db.open:
            self._db.close()


def _row_count(table):
    return table.num_rows


class ReadNovaMySQL(beam.PTransform):
    """PBegin -> ``{'instances', 'actions', 'events'}`` of Arrow batches.

    Live tables are read before their ``shadow_`` copies: a row that
    ``archive_deleted_rows`` moves while the trace runs is then read at least
    once (and a row read twice is dropped by the join), never missed. The
    shadow reads wait for the live reads through a side input.
    """

    def __init__(self, source, splits):
        super().__init__()
        self.source = source
        self.splits = splits

    def _read(self, pbegin, stage, splits, after=None):
        source = self.source
        read_fn = ReadTableSplits(source.connection, source.window,
                                  source.batch_rows)
        return (pbegin
                | f'{stage}Splits' >> beam.Create(splits)
                | f'Spread{stage}Splits' >> beam.Reshuffle()
                | f'Read{stage}Splits' >> beam.ParDo(read_fn, after=after)
                .with_outputs(*SOURCE_TABLES))

    def expand(self, pbegin):
        live = [s for s in self.splits
                if not s.nova_table.startswith(SHADOW_PREFIX)]
        shadow = [s for s in self.splits
                  if s.nova_table.startswith(SHADOW_PREFIX)]
        live_read = self._read(pbegin, 'Live', live)
        if not shadow:
            return {table: live_read[table] for table in SOURCE_TABLES}
        live_rows = (
            [live_read[table] for table in SOURCE_TABLES]
            | 'AllLiveBatches' >> beam.Flatten()
            | 'LiveBatchRows' >> beam.Map(_row_count)
            | 'LiveRowsRead' >> beam.CombineGlobally(sum))
        shadow_read = self._read(pbegin, 'Shadow', shadow,
                                 after=beam.pvalue.AsSingleton(live_rows))
        return {table: (live_read[table], shadow_read[table])
                | f'LiveAndArchived{table.capitalize()}' >> beam.Flatten()
                for table in SOURCE_TABLES}
