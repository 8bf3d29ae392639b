"""Reading the three Nova tables from MySQL/MariaDB as Arrow batches.

Each table is cut into primary-key ranges when the pipeline is built;
workers read the ranges in parallel, chunk by chunk (one query per chunk of
rows in id order), so memory stays bounded whatever the table size. The last
range of a table is open-ended: rows added while the trace runs are not
missed.

A range covers the table and its ``shadow_`` copy, where ``nova-manage db
archive_deleted_rows`` moves old deleted rows, keeping their ids: the live
rows of the range are read first, then the archived ones. A row archived
while the trace runs is then read at least once (a row read twice is dropped
by the join), never missed, without any barrier between workers.
"""
import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pa_csv
import pymysql

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.about import about_line, database_names
from starcompactor.pipeline.sources.read import ReadSplits
from starcompactor.pipeline.threads import prefetched
from starcompactor.transforms import counters
from starcompactor.transforms.buckets import concat
from starcompactor.transforms.mask import SOURCE_IDENTITIES
from starcompactor.transforms.schema import (
    DB, EVENTS, NOVA_TABLES, OPTIONAL_COLUMNS, OPTIONAL_TABLES, SHADOW_PREFIX,
    SOURCE_COLUMNS, SOURCE_TABLES, source_schema)

log = logging.getLogger(__name__)

# Errors after which a fresh connection can carry on where the last ended:
# server gone away, lost during query, connection killed.
LOST_CONNECTION = {2006, 2013, 2055, 1927}
SYSTEM_DATABASES = {'information_schema', 'mysql', 'performance_schema',
                    'sys'}


@dataclass(frozen=True)
class TableSplit:
    """A primary-key range ``[first_id, end_id)`` of one logical table, in
    each of its Nova tables, read in that order (live, then ``shadow_``)."""
    database: str
    table: str                 # logical name: instances, actions, events
    nova_tables: Tuple[str, ...]  # e.g. (instance_actions,
    #                                     shadow_instance_actions)
    first_id: Union[int, str]  # str: text ids, read after it (keyset)
    end_id: Optional[int]      # None: to the end of the table
    # ((nova_table, (column, ...)), ...): optional columns it lacks, read
    # as NULL (``schema.OPTIONAL_COLUMNS``)
    missing: Tuple = ()

    def missing_in(self, nova_table):
        return dict(self.missing).get(nova_table, ())


def _quote(name):
    return '`' + name.replace('`', '``') + '`'


# PyMySQL spends its time per row and per field, not per byte. So one query
# returns a whole chunk of rows as ONE result row: the server renders each
# row as a line of CSV, text quoted the standard way (any text, commas,
# quotes and newlines included, survives) and Arrow's CSV reader parses the
# lines in C++: cheaper on both sides than JSON, which needs JSON_QUOTE.
CHUNK_IDS = 5_000     # ids per chunk, so at most as many rows
BATCH_ROWS = 100_000  # rows per batch handed on
GROUP_CONCAT_MAX_LEN = 1 << 30


def _csv_field(name, typ):
    """SQL rendering one column as a CSV field: NULL is an empty field, a
    string is always quoted (so an empty string is ``""``)."""
    column = _quote(name)
    if not pa.types.is_integer(typ):
        column = f"""CONCAT('"', REPLACE({column}, '"', '""'), '"')"""
    return f"IFNULL({column}, '')"


def csv_line(table, missing=()):
    """SQL rendering a row of logical ``table`` as one CSV line
    (``SOURCE_COLUMNS`` order, no header), as ``chunk_to_table`` reads it;
    the ``missing`` columns as NULL."""
    return ", ',', ".join("''" if name in missing else _csv_field(name, typ)
                          for name, typ in SOURCE_COLUMNS[table])


def chunk_statement(split, nova_table, window=(None, None)):
    """SQL and arguments reading one chunk of a split: the rows with ids in
    ``[%s, %s)`` (the first two arguments, left to the caller), with the
    event window pushed down. The result is one row: the chunk's row count
    and its rows as CSV lines (``SOURCE_COLUMNS`` order, no header)."""
    conditions, args = ['id >= %s', 'id < %s'], []
    start, end = window
    if split.table == EVENTS and start:
        conditions.append('start_time >= %s')
        args.append(start)
    if split.table == EVENTS and end:
        conditions.append('start_time < %s')
        args.append(end)
    line = csv_line(split.table, split.missing_in(nova_table))
    sql = (f"SELECT COUNT(*), GROUP_CONCAT(CONCAT({line}) "
           f"SEPARATOR '\\n') FROM {_quote(split.database)}."
           f"{_quote(nova_table)} WHERE {' AND '.join(conditions)}")
    return sql, args


def keyset_statement(split, nova_table):
    """SQL reading one chunk of a table with text ids (Blazar's uuids),
    which cannot be cut into id ranges up front: the first ``CHUNK_IDS``
    rows in id order after the id given as the one argument. The result
    is one row: the chunk's row count, its rows as CSV lines and its last
    id."""
    line = csv_line(split.table, split.missing_in(nova_table))
    return (f"SELECT COUNT(*), GROUP_CONCAT(CONCAT({line}) SEPARATOR '\\n'),"
            f" MAX(id) FROM (SELECT * FROM {_quote(split.database)}."
            f"{_quote(nova_table)} WHERE id > %s ORDER BY id LIMIT "
            f"{CHUNK_IDS}) AS chunk")


def next_id_statement(split, nova_table):
    """The first id at or after a given one (and before the split's end)."""
    sql = (f'SELECT MIN(id) FROM {_quote(split.database)}.'
           f'{_quote(nova_table)} WHERE id >= %s')
    if split.end_id is not None:
        sql += f' AND id < {int(split.end_id)}'
    return sql


def _is_utf8(value):
    try:
        value.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def _read_csv_lines(table, lines, text_type=pa.string()):
    columns = SOURCE_COLUMNS[table]
    return pa_csv.read_csv(
        pa.BufferReader(lines),
        read_options=pa_csv.ReadOptions(
            column_names=[name for name, _ in columns], use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: typ if pa.types.is_integer(typ) else text_type
                          for name, typ in columns},
            null_values=[''], strings_can_be_null=True,
            quoted_strings_can_be_null=False))


def _drop_invalid_utf8(table, lines):
    """The rows of a chunk whose text is all UTF-8 (the rare slow path)."""
    raw = _read_csv_lines(table, lines, pa.binary())
    valid = [True] * raw.num_rows
    for name, typ in SOURCE_COLUMNS[table]:
        if not pa.types.is_integer(typ):
            for row, value in enumerate(raw.column(name).to_pylist()):
                if value is not None and not _is_utf8(value):
                    valid[row] = False
    kept = raw.filter(pa.array(valid))
    return kept.cast(pa.schema(SOURCE_COLUMNS[table])), raw.num_rows - len(kept)


def chunk_to_table(database, table, lines):
    """Arrow batch (``schema.source_schema``) from a chunk's CSV lines, and
    how many rows were dropped because their text is not UTF-8."""
    try:
        parsed, invalid = _read_csv_lines(table, lines), 0
    except pa.ArrowInvalid as e:
        if 'UTF8' not in str(e).upper():
            raise
        parsed, invalid = _drop_invalid_utf8(table, lines)
    parsed = parsed.add_column(
        0, DB, pa.array([database] * parsed.num_rows, pa.string()))
    return parsed.cast(source_schema(table)), invalid


class NovaMySQLSource:
    """What to read: databases, logical tables, live and archived tables,
    an event window.

    ``window`` holds Nova-format time strings (``YYYY-MM-DD HH:MM:SS``).
    """

    def __init__(self, connection, databases, archived=True,
                 window=(None, None), split_ids=250_000,
                 batch_rows=BATCH_ROWS, tables=SOURCE_TABLES):
        self.connection = connection
        self.tables = tuple(tables)
        self.batch_rows = batch_rows
        self.databases = list(databases)
        self.archived = archived
        self.window = window
        self.split_ids = split_ids

    def reader(self, splits):
        return ReadSplits(splits, ReadTableSplits(
            self.connection, self.window, self.batch_rows))

    def raw_identities(self, among=None):
        """Every distinct raw identity (user, project, instance name, host)
        of the tables read; with ``among`` (candidate strings, e.g. the
        values of a sample of the trace), only those of the candidates,
        found by the server."""
        values = set()
        connection = self.connection.connect()
        database = nova_table = None     # where an error happened
        try:
            with connection.cursor() as cursor:
                for database in self.databases:
                    for table in self.tables:
                        for nova_table in self.nova_tables(table):
                            values |= self._identities(
                                cursor, f'{_quote(database)}.'
                                f'{_quote(nova_table)}',
                                self._identity_columns(cursor, database,
                                                       table, nova_table),
                                among)
        except pymysql.err.MySQLError as e:
            raise self.connection.error(e, database, nova_table) from None
        finally:
            connection.close()
        found = {v.decode('utf-8', 'replace') for v in values if v}
        return found if among is None else found & set(among)

    def _identity_columns(self, cursor, database, table, nova_table):
        """The identity columns of ``nova_table``: an optional one only
        where the table has it."""
        columns = SOURCE_IDENTITIES.get(table, ())
        optional = set(columns) & set(OPTIONAL_COLUMNS.get(table, ()))
        if optional:
            missing = optional - self._columns(cursor, database, nova_table)
            columns = tuple(c for c in columns if c not in missing)
        return columns

    @staticmethod
    def _identities(cursor, table, identity_columns, among):
        if among is None:
            values = set()
            for column in identity_columns:
                cursor.execute(f'SELECT DISTINCT {_quote(column)} FROM {table}')
                values.update(v for v, in cursor)
            return values
        if not among or not identity_columns:
            return set()
        candidates = tuple(sorted(among))
        where = ' OR '.join(f'{_quote(column)} IN %s'
                            for column in identity_columns)
        cursor.execute(f'SELECT {", ".join(map(_quote, identity_columns))} '
                       f'FROM {table} WHERE {where}',
                       [candidates] * len(identity_columns))
        return {v for row in cursor for v in row}

    def describe(self):
        start, end = self.window
        return {'kind': 'mysql', 'server': self.connection.describe(),
                'databases': self.databases, 'archived': self.archived,
                'window': {'start': start, 'end': end}}

    def about(self):
        return about_line(f'MySQL {self.connection.describe()}',
                          database_names(self.databases), self.archived,
                          self.window)

    def nova_tables(self, table):
        """The Nova tables of a logical table, in the order they are read."""
        prefixes = ('', SHADOW_PREFIX) if self.archived else ('',)
        return tuple(prefix + NOVA_TABLES[table] for prefix in prefixes)

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
                self._check_databases(cursor)
                for database in self.databases:
                    for table in self.tables:
                        nova_tables = self.nova_tables(table)
                        present = {t: self._columns(cursor, database, t)
                                   for t in nova_tables}
                        if table in OPTIONAL_TABLES and \
                                not any(present.values()):
                            continue
                        missing = tuple(
                            (t, tuple(c for c in OPTIONAL_COLUMNS.get(
                                table, ()) if c not in present[t]))
                            for t in nova_tables)
                        ranges = [self._id_range(cursor, database, table,
                                                 nova_table, dict(missing))
                                  for nova_table in nova_tables]
                        if SOURCE_COLUMNS[table][0][1] == pa.string():
                            # text ids: the whole table, chunk after chunk
                            table_splits = [TableSplit(
                                database, table, nova_tables, '', None)]
                        else:
                            table_splits = self._split(database, table,
                                                       nova_tables, ranges)
                        splits += [dataclasses.replace(split,
                                                       missing=missing)
                                   for split in table_splits]
                        if table == EVENTS:
                            estimated_events += sum(
                                last - first + 1 for first, last in ranges
                                if last is not None)
        finally:
            connection.close()
        return splits, estimated_events

    def _check_databases(self, cursor):
        """Every database asked for is on the server, and visible to the
        user (else a missing database reads as a missing table or grant)."""
        try:
            cursor.execute(
                'SELECT SCHEMA_NAME FROM information_schema.SCHEMATA')
        except pymysql.err.MySQLError as e:
            raise self.connection.error(e) from None
        visible = {name.decode('utf-8', 'replace') for name, in cursor}
        missing = [d for d in self.databases if d not in visible]
        if missing:
            shown = ', '.join(sorted(visible - SYSTEM_DATABASES))
            raise UserError(
                f'unknown or inaccessible database '
                f'{", ".join(map(repr, missing))} on '
                f'{self.connection.describe()} ({self.connection.user} sees '
                f'{shown or "no database"})')

    def _columns(self, cursor, database, nova_table):
        """The columns ``nova_table`` has that the user sees (none: the
        table is missing, or hidden from the user)."""
        try:
            cursor.execute('SELECT COLUMN_NAME FROM information_schema.'
                           'COLUMNS WHERE TABLE_SCHEMA = %s AND '
                           'TABLE_NAME = %s', (database, nova_table))
        except pymysql.err.MySQLError as e:
            raise self.connection.error(e, database, nova_table) from None
        return {name.decode('utf-8', 'replace') if isinstance(name, bytes)
                else name for name, in cursor}

    def _id_range(self, cursor, database, table, nova_table, missing):
        """The first and last id of ``nova_table``, once the columns read
        (but those ``missing`` for it) are known to be there."""
        columns = ', '.join(_quote(name) for name, _ in SOURCE_COLUMNS[table]
                            if name not in missing.get(nova_table, ()))
        try:
            cursor.execute(f'SELECT {columns} FROM {_quote(database)}.'
                           f'{_quote(nova_table)} LIMIT 0')
            cursor.execute(f'SELECT MIN(id), MAX(id) FROM '
                           f'{_quote(database)}.{_quote(nova_table)}')
        except pymysql.err.MySQLError as e:
            raise self.connection.error(e, database, nova_table) from None
        return cursor.fetchone()

    def _split(self, database, table, nova_tables, ranges):
        """Id ranges of ``split_ids`` ids up to the last id now, then an
        open-ended one for rows added while the trace runs."""
        firsts = [first for first, _ in ranges if first is not None]
        lasts = [last for _, last in ranges if last is not None]
        if not firsts:   # empty now, maybe not when read
            return [TableSplit(database, table, nova_tables, 0, None)]
        end = max(lasts) + 1
        bounds = list(range(min(firsts), end, self.split_ids))[1:]
        starts = [0] + bounds + [end]
        ends = bounds + [end, None]
        return [TableSplit(database, table, nova_tables, s, e)
                for s, e in zip(starts, ends)]


def _parts(split, count):
    """``split`` cut into ``count`` id ranges (an open-ended or small split
    stays whole); each keeps the live-then-shadow order for its ids."""
    if split.end_id is None or count < 2 or \
            split.end_id - split.first_id < count * CHUNK_IDS:
        return [split]
    step = -(-(split.end_id - split.first_id) // count)
    bounds = list(range(split.first_id, split.end_id, step)) + [split.end_id]
    return [dataclasses.replace(split, first_id=first, end_id=end)
            for first, end in zip(bounds, bounds[1:])]


def _round_robin(streams):
    """Items of all ``streams``, taking turns; every stream is closed."""
    active = list(streams)
    try:
        while active:
            for stream in list(active):
                try:
                    yield next(stream)
                except StopIteration:
                    active.remove(stream)
    finally:
        for stream in streams:
            stream.close()


class ReadTableSplits(beam.DoFn):
    """TableSplit -> ``(logical table, Arrow batch)`` pairs.

    A split is read in chunks of rows in id order, each chunk one query: a
    connection lost mid-split (a server restart, a ``KILL``) is resumed at
    the chunk it broke, so nothing is lost or read twice; after
    ``MAX_RESUMES`` in one part of a split the read fails. The split's
    halves are read at once, each on its own connection by its own thread,
    a few chunks ahead: MariaDB renders one chunk while the other thread
    receives one and this one parses and processes a third. Chunks are
    gathered into batches of about ``batch_rows`` rows: memory holds a batch
    and a few chunks per connection, whatever the table size.
    """
    MAX_RESUMES = 3
    PREFETCH_CHUNKS = 4
    CONNECTIONS = 2

    def __init__(self, connection, window, batch_rows=BATCH_ROWS):
        self.connection = connection
        self.window = window
        self.batch_rows = batch_rows
        self._connections = []
        self._resumes = []

    def setup(self):
        self._connections = [self._connect() for _ in range(self.CONNECTIONS)]

    def _connect(self):
        db = self.connection.connect()
        with db.cursor() as cursor:
            cursor.execute(
                f'SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}')
        return db

    def _query(self, slot, split, nova_table, sql, args):
        """The one result row of ``sql`` on connection ``slot``,
        reconnecting after a lost connection (each query reads a whole
        chunk, or nothing), at most ``MAX_RESUMES`` times per part."""
        while True:
            try:
                with self._connections[slot].cursor() as cursor:
                    cursor.execute(sql, args)
                    return cursor.fetchone()
            except pymysql.err.OperationalError as e:
                if e.args[0] not in LOST_CONNECTION or \
                        self._resumes[slot] == self.MAX_RESUMES:
                    raise self.connection.error(
                        e, split.database, nova_table) from None
                self._resumes[slot] += 1
                log.warning('lost the connection reading %s.%s (%s); '
                            'resuming at id %s (%d/%d)', split.database,
                            nova_table, e.args[0], args[0],
                            self._resumes[slot], self.MAX_RESUMES)
                self._connections[slot] = self._connect()
            except pymysql.err.MySQLError as e:
                raise self.connection.error(
                    e, split.database, nova_table) from None

    def _chunks(self, slot, split, nova_table):
        """``(nova table, first id, row count, CSV lines)`` of each chunk
        of one Nova table of the split, read on connection ``slot``."""
        if isinstance(split.first_id, str):
            yield from self._keyset_chunks(slot, split, nova_table)
            return
        sql, window_args = chunk_statement(split, nova_table, self.window)
        next_id = next_id_statement(split, nova_table)
        first_id, read = split.first_id, 0
        while split.end_id is None or first_id < split.end_id:
            end_id = first_id + CHUNK_IDS
            if split.end_id is not None:
                end_id = min(end_id, split.end_id)
            rows, lines = self._query(slot, split, nova_table, sql,
                                      [first_id, end_id] + window_args)
            if rows:
                read += rows
                yield nova_table, first_id, rows, lines
                first_id = end_id
            else:   # a gap in the ids (or the end): jump to the next row
                first_id, = self._query(slot, split, nova_table, next_id,
                                        [end_id])
                if first_id is None:
                    break
        log.info('read %s.%s ids %d..%s: %d rows', split.database,
                 nova_table, split.first_id,
                 '' if split.end_id is None else split.end_id - 1, read)

    def _keyset_chunks(self, slot, split, nova_table):
        """``_chunks`` of a table with text ids: each chunk the rows after
        the last one read."""
        sql = keyset_statement(split, nova_table)
        after, read = split.first_id, 0
        while True:
            rows, lines, last = self._query(slot, split, nova_table, sql,
                                            [after])
            if not rows:
                break
            read += rows
            yield nova_table, after, rows, lines
            after = last.decode() if isinstance(last, bytes) else last
        log.info('read %s.%s: %d rows', split.database, nova_table, read)

    def _split_chunks(self, slot, split):
        for nova_table in split.nova_tables:   # live first, then shadow_
            yield from self._chunks(slot, split, nova_table)

    def process(self, split):
        parts = _parts(split, len(self._connections))
        schema = source_schema(split.table)
        self._resumes = [0] * len(self._connections)
        gathered, gathered_rows = [], 0
        for nova_table, first_id, rows, lines in _round_robin([
                prefetched(self._split_chunks(slot, part),
                           self.PREFETCH_CHUNKS)
                for slot, part in enumerate(parts)]):
            batch, invalid = chunk_to_table(split.database, split.table,
                                            lines)
            if batch.num_rows + invalid != rows:
                raise UserError(
                    f'{split.database}.{nova_table}: {rows} rows from id '
                    f'{first_id} came back incomplete; raise the server\'s '
                    f'max_allowed_packet')
            counters.count_read(split.table, invalid)
            counters.count_rejected(split.table, counters.INVALID_UTF8,
                                    invalid)
            gathered.append(batch)
            gathered_rows += batch.num_rows
            if gathered_rows >= self.batch_rows:
                yield split.table, concat(gathered, schema)
                gathered, gathered_rows = [], 0
        if gathered_rows:
            yield split.table, concat(gathered, schema)

    def teardown(self):
        for db in self._connections:
            if db.open:
                db.close()
