"""Reading the three Nova tables from MySQL/MariaDB as Arrow batches.

Each table (and its ``shadow_`` copy, where ``archive_deleted_rows`` moves old
deleted instances) is cut into primary-key ranges when the pipeline is built;
workers read the ranges in parallel, chunk by chunk (one query per chunk of
rows in id order), so memory stays bounded whatever the table size. The last
range of a table is open-ended: rows added while the trace runs are not
missed.
"""
import io
import logging
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.json as pa_json
import pymysql

from starcompactor.pipeline.errors import UserError
from starcompactor.transforms import counters as c
from starcompactor.transforms.mask import DEFAULT_MASKED as IDENTITY_COLUMNS
from starcompactor.transforms.schema import (
    DB, EVENTS, INSTANCES, NOVA_TABLES, SHADOW_PREFIX, SOURCE_COLUMNS,
    SOURCE_TABLES, source_schema)

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


# PyMySQL spends its time per row and per field, not per byte. So one query
# returns a whole chunk of rows as ONE result row: the server renders each
# row as a line of JSON (which escapes any text correctly) and Arrow's JSON
# reader parses the lines in C++.
CHUNK_IDS = 5_000     # ids per chunk, so at most as many rows
GROUP_CONCAT_MAX_LEN = 1 << 30


def _json_member(name, typ):
    """SQL rendering one column as a JSON member; JSON_QUOTE escapes text.
    (Cheaper for the server than JSON_OBJECT, and the same JSON.)"""
    value = _quote(name) if pa.types.is_integer(typ) else \
        f'JSON_QUOTE({_quote(name)})'
    return f"'\"{name}\":', IFNULL({value}, 'null')"


def chunk_statement(split, window=(None, None)):
    """SQL and arguments reading one chunk of a split: the rows with ids in
    ``[%s, %s)`` (the first two arguments, left to the caller), with the
    event window pushed down. The result is one row: the chunk's row count
    and its rows as JSON lines."""
    columns = SOURCE_COLUMNS[split.table]
    conditions, args = ['id >= %s', 'id < %s'], []
    start, end = window
    if split.table == EVENTS and start:
        conditions.append('start_time >= %s')
        args.append(start)
    if split.table == EVENTS and end:
        conditions.append('start_time < %s')
        args.append(end)
    line = ", ',', ".join(_json_member(name, typ) for name, typ in columns)
    sql = (f"SELECT COUNT(*), GROUP_CONCAT(CONCAT('{{', {line}, '}}') "
           f"SEPARATOR '\\n') FROM {_quote(split.database)}."
           f"{_quote(split.nova_table)} WHERE {' AND '.join(conditions)}")
    return sql, args


def next_id_statement(split):
    """The first id at or after a given one (and before the split's end)."""
    sql = (f'SELECT MIN(id) FROM {_quote(split.database)}.'
           f'{_quote(split.nova_table)} WHERE id >= %s')
    if split.end_id is not None:
        sql += f' AND id < {int(split.end_id)}'
    return sql


def _is_utf8(line):
    try:
        line.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def _read_json_lines(table, lines):
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema(SOURCE_COLUMNS[table]))
    parsed = pa_json.read_json(io.BytesIO(lines), parse_options=options)
    parsed.validate(full=True)   # the JSON reader does not check UTF-8
    return parsed


def chunk_to_table(database, table, lines):
    """Arrow batch (``schema.source_schema``) from a chunk's JSON lines, and
    how many rows were dropped because their text is not UTF-8."""
    try:
        parsed, invalid = _read_json_lines(table, lines), 0
    except pa.ArrowInvalid:
        rows = lines.split(b'\n')
        valid = [row for row in rows if _is_utf8(row)]
        invalid = len(rows) - len(valid)
        parsed = (_read_json_lines(table, b'\n'.join(valid)) if valid
                  else pa.schema(SOURCE_COLUMNS[table]).empty_table())
    parsed = parsed.add_column(
        0, DB, pa.array([database] * parsed.num_rows, pa.string()))
    return parsed.cast(source_schema(table)), invalid


class NovaMySQLSource:
    """What to read: databases, live and archived tables, an event window.

    ``window`` holds Nova-format time strings (``YYYY-MM-DD HH:MM:SS``).
    """

    def __init__(self, connection, databases, archived=True,
                 window=(None, None), split_ids=250_000):
        self.connection = connection
        self.databases = list(databases)
        self.archived = archived
        self.window = window
        self.split_ids = split_ids

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
        columns = ', '.join(_quote(name) for name, _ in SOURCE_COLUMNS[table])
        try:
            cursor.execute(f'SELECT {columns} FROM {_quote(database)}.'
                           f'{_quote(nova_table)} LIMIT 0')
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

    A split is read in chunks of rows in id order, each chunk one query: a
    connection lost mid-split (a server restart, a ``KILL``) is resumed at
    the chunk it broke, so nothing is lost or read twice; after
    ``MAX_RESUMES`` in one split the read fails. Memory holds one chunk.
    """
    MAX_RESUMES = 3

    def __init__(self, connection, window):
        self.connection = connection
        self.window = window
        self._db = None
        self._resumes = 0

    def setup(self):
        self._connect()

    def _connect(self):
        self._db = self.connection.connect()
        with self._db.cursor() as cursor:
            cursor.execute(
                f'SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}')

    def _query(self, split, sql, args):
        """The one result row of ``sql``, reconnecting after a lost
        connection (each query reads a whole chunk, or nothing), at most
        ``MAX_RESUMES`` times per split."""
        while True:
            try:
                with self._db.cursor() as cursor:
                    cursor.execute(sql, args)
                    return cursor.fetchone()
            except pymysql.err.OperationalError as e:
                if e.args[0] not in LOST_CONNECTION or \
                        self._resumes == self.MAX_RESUMES:
                    raise self.connection.error(
                        e, split.database, split.nova_table) from None
                self._resumes += 1
                log.warning('lost the connection reading %s.%s (%s); '
                            'resuming at id %d (%d/%d)', split.database,
                            split.nova_table, e.args[0], args[0],
                            self._resumes, self.MAX_RESUMES)
                self._connect()
            except pymysql.err.MySQLError as e:
                raise self.connection.error(
                    e, split.database, split.nova_table) from None

    def process(self, split, after=None):
        sql, window_args = chunk_statement(split, self.window)
        next_id = next_id_statement(split)
        first_id, read, self._resumes = split.first_id, 0, 0
        while split.end_id is None or first_id < split.end_id:
            end_id = first_id + CHUNK_IDS
            if split.end_id is not None:
                end_id = min(end_id, split.end_id)
            rows, lines = self._query(split, sql,
                                      [first_id, end_id] + window_args)
            if rows:
                batch, invalid = chunk_to_table(split.database, split.table,
                                                lines)
                if batch.num_rows + invalid != rows:
                    raise UserError(
                        f'{split.database}.{split.nova_table}: {rows} rows '
                        f'from id {first_id} came back incomplete; raise '
                        f'the server\'s max_allowed_packet')
                c.count_read(split.table, invalid)
                c.count_rejected(split.table, c.INVALID_UTF8, invalid)
                read += rows
                yield beam.pvalue.TaggedOutput(split.table, batch)
                first_id = end_id
            else:   # a gap in the ids (or the end): jump to the next row
                first_id, = self._query(split, next_id, [end_id])
                if first_id is None:
                    break
        log.info('read %s.%s ids %d..%s: %d rows', split.database,
                 split.nova_table, split.first_id,
                 '' if split.end_id is None else split.end_id - 1, read)

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
        read_fn = ReadTableSplits(source.connection, source.window)
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
