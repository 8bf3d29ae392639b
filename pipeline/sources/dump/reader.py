"""``DumpReader``: the Nova tables of one dump file, or of a split of it, as
Arrow batches in the source-table schemas."""
import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.pipeline.sources.dump.columns import BadValue, column_array
from starcompactor.pipeline.sources.dump.files import (
    compression_of, dump_lines, error_at)
from starcompactor.pipeline.sources.dump.lexer import (
    CREATE_DATABASE, CREATE_TABLE, INSERT_HEAD, INSERT_TEXT, USE, column_list,
    create_table_columns, diagnose, identifier, parse_values, qualified_name)
from starcompactor.transforms.schema import (
    EVENTS, NOVA_TABLES, OPTIONAL_COLUMNS, SHADOW_PREFIX, SOURCE_COLUMNS,
    SOURCE_TABLES, source_schema)

BATCH_ROWS = 50_000


@dataclass(frozen=True)
class DumpSplit:
    """Lines of one dump file starting in ``[start, end)`` (bytes).

    ``database`` and ``columns`` are the context at ``start``: the current
    database and the CREATE TABLE column orders seen before it, as
    ``((database, nova_table, (column, ...)), ...)``.
    """
    path: str
    start: int = 0
    end: Optional[int] = None
    line: int = 1
    database: Optional[str] = None
    columns: Tuple = ()
    compression: Optional[str] = None


def nova_table_map(archived=True):
    """Nova table name -> logical table (instances, compute_nodes, ...)."""
    prefixes = ('', SHADOW_PREFIX) if archived else ('',)
    return {prefix + nova_table: table
            for table, nova_table in NOVA_TABLES.items()
            for prefix in prefixes}


ALL_NOVA_TABLES = nova_table_map(archived=True)


def _decoded(name):
    return name.decode('utf-8', 'replace')


class _Context:
    """What the lines of a dump are read in, kept current line by line:
    the current database and the column order of each Nova table created
    so far, ``{(database, nova_table): (column, ...)}``; ``seen`` gathers
    the databases with a Nova table (a CREATE TABLE or an INSERT)."""

    def __init__(self, database, columns, seen):
        self.database = database
        self.columns = columns
        self.seen = seen

    def use(self, m):
        """The database a ``USE`` or ``CREATE DATABASE`` names is the
        current one from now on."""
        self.database = _decoded(identifier(m.group(1, 2)))

    def table(self, m):
        """(database, table) named by a statement head, as text."""
        database, table = qualified_name(m, 1)
        return (self.database if database is None else _decoded(database),
                _decoded(table))


class _Batch:
    """Rows of one (database, logical table) gathered for conversion:
    ``strings[j]`` and ``tokens[j]`` of the table's j-th source column."""

    def __init__(self, database, table):
        self.database = database
        self.table = table
        width = len(SOURCE_COLUMNS[table])
        self.strings = [[] for _ in range(width)]
        self.tokens = [[] for _ in range(width)]
        self.rows = 0
        self.escaped = False
        self.lines = []      # (line, nova_table, rows): where rows came from

    def add(self, values, rows, escaped, line, nova_table):
        for j, (strings, tokens) in enumerate(values):
            self.strings[j] += strings
            self.tokens[j] += tokens
        self.rows += rows
        self.escaped = self.escaped or escaped
        self.lines.append((line, nova_table, rows))

    def where(self, index):
        """(line, nova_table) of the row at ``index``."""
        for line, nova_table, rows in self.lines:
            if index < rows:
                return line, nova_table
            index -= rows
        return self.lines[-1][:2]


class DumpReader:
    """Reads the Nova tables of one dump file, or of a split of it.

    ``read()`` yields ``(logical_table, pyarrow.Table)`` in
    ``source_schema(logical_table)``, about ``batch_rows`` rows each, one
    database per batch. ``databases`` selects databases (None: all);
    ``archived=False`` skips the ``shadow_`` tables; ``window`` = (start,
    end), Nova-format time strings, keeps events with start <= start_time <
    end (either may be None). Rows before any ``USE``/``CREATE DATABASE``
    belong to ``default_database``. ``of_tables``: the logical tables a
    database must have one of to be *seen* (``scan``); None: any.
    """

    def __init__(self, path, databases=None, archived=True,
                 window=(None, None), default_database='nova',
                 batch_rows=BATCH_ROWS, of_tables=None):
        self.path = path
        self.databases = None if databases is None else set(databases)
        self.tables = nova_table_map(archived)
        # Nova's, Ironic's and Blazar's databases share a dump: each
        # source sees the databases of its own tables.
        self.seen_tables = {name for name, table in ALL_NOVA_TABLES.items()
                            if of_tables is None or table in of_tables}
        self.window = tuple(window or (None, None))
        self.default_database = default_database
        self.batch_rows = batch_rows

    def _error(self, line, message):
        return error_at(self.path, line, message)

    # -- statements -----------------------------------------------------------

    def scan(self, split, wanted, marks=(), snapshots=None, seen=None):
        """Walk the lines of a split, keeping the context current.

        Yields ``(database, nova_table, statement bytes, line, columns)``
        for the INSERTs into ``wanted`` tables of selected databases, where
        columns is the CREATE TABLE order known for the table (or None).
        Appends the context at the first line start at or after each of the
        ascending offsets ``marks`` to ``snapshots`` as ``(offset, line,
        database, {(database, nova_table): columns})``; adds the databases
        that have Nova tables (a CREATE TABLE or an INSERT) to the set
        ``seen``.
        """
        context = _Context(split.database or self.default_database,
                           {(db, table): cols
                            for db, table, cols in split.columns},
                           set() if seen is None else seen)

        def snapshot(offset, line):
            snapshots.append((offset, line, context.database,
                              dict(context.columns)))

        with dump_lines(self.path, split.compression, split.start,
                        split.line) as lines:
            for number, line in lines.statement_starts(split.end, marks,
                                                       snapshot):
                insert = self._follow_statement(line, number, lines, context,
                                                wanted)
                if insert is not None:
                    yield insert

    def _follow_statement(self, line, number, lines, context, wanted):
        """Keeps ``context`` current with the statement starting at
        ``line``; what ``scan`` yields if it is a wanted INSERT."""
        kind = line.lstrip()[:1].upper()
        if kind in (b'I', b'R'):
            return self._insert(line, number, lines, context, wanted)
        if kind == b'U':
            m = USE.match(line)
            if m is not None:
                context.use(m)
        elif kind == b'C':
            self._create(line, number, lines, context)
        return None

    def _insert(self, line, number, lines, context, wanted):
        m = INSERT_HEAD.match(line)
        if m is None:
            return None
        database, table = context.table(m)
        if table not in ALL_NOVA_TABLES:
            return None
        if table in self.seen_tables:
            context.seen.add(database)
        if table not in wanted or (self.databases is not None
                                   and database not in self.databases):
            return None
        statement = lines.statement(line, number, f'INSERT into {table}')
        return (database, table, statement, number,
                context.columns.get((database, table)))

    def _create(self, line, number, lines, context):
        m = CREATE_DATABASE.match(line)
        if m is not None:
            context.use(m)
            return
        m = CREATE_TABLE.match(line)
        if m is None:
            return
        database, table = context.table(m)
        if table not in ALL_NOVA_TABLES:
            return
        statement = lines.statement(line, number, f'CREATE TABLE {table}')
        columns = create_table_columns(statement, m.end())
        if columns is None:
            raise self._error(number,
                              f'truncated statement: CREATE TABLE {table}')
        context.columns[(database, table)] = tuple(columns)
        if table in self.seen_tables:
            context.seen.add(database)

    def parse_insert(self, nova_table, data, line, columns):
        """(rows, [(strings, tokens) per source column], escaped) of one
        INSERT statement; escaped: whether any string may hold escapes."""
        text = self._decode(data)
        what = f'INSERT into {nova_table}'
        m = INSERT_TEXT.match(text)
        if m is None:
            raise self._error(line, f'cannot read {what} (expected '
                                    f'INSERT INTO table [(columns)] VALUES)')
        if m.group(5) is not None:
            names = column_list(m.group(5))
        elif columns is not None:
            names = columns
        else:
            raise self._error(
                line, f'{what} has no column list and no CREATE TABLE '
                      f'{nova_table} precedes it (dump with CREATE TABLE '
                      f'statements or --complete-insert)')
        table = ALL_NOVA_TABLES[nova_table]
        picks, absent = [], []     # absent: optional columns, all NULL
        for j, (column, _) in enumerate(SOURCE_COLUMNS[table]):
            if column in names:
                picks.append(names.index(column))
            elif column in OPTIONAL_COLUMNS.get(table, ()):
                absent.append(j)
            else:
                raise self._error(line, f'{what}: no column {column} in '
                                        f'its column list')
        values = parse_values(text, m.end(), len(names), picks)
        if values is None:
            offset, message = diagnose(text, m.end(), len(names))
            raise self._error(line + text.count('\n', 0, offset),
                              f'{message} in {what}')
        rows, columns = values
        for j in absent:
            columns.insert(j, ([None] * rows, [None] * rows))
        escaped = '\\' in text or "''" in text
        return rows, columns, escaped

    @staticmethod
    def _decode(data):
        """Text of a statement; bytes that are not UTF-8 become lone
        surrogates, and the rows whose wanted text holds one are dropped
        (counted as ``invalid_utf8``) when the batch is converted."""
        try:
            return data.decode('utf-8')
        except UnicodeDecodeError:
            return data.decode('utf-8', 'surrogateescape')

    # -- batches --------------------------------------------------------------

    def read(self, split=None, tables=SOURCE_TABLES):
        """Yield ``(logical_table, pyarrow.Table)`` batches of the split
        (default: the whole file), of the given logical tables (the others'
        lines are skipped unparsed). Rows dropped because their text is not
        UTF-8 are added up in ``self.invalid_utf8[logical_table]``."""
        for table, batch, _ in self.read_counted(split, tables):
            yield table, batch

    def read_counted(self, split=None, tables=SOURCE_TABLES):
        """Like ``read``, as ``(logical_table, table, invalid_utf8_rows)``;
        a batch may be empty when all its rows were invalid."""
        if split is None:
            split = DumpSplit(self.path)
        if (split.compression is None and split.start == 0
                and split.end is None):    # the whole file, as it is
            split = dataclasses.replace(split, compression=compression_of(
                self.path))
        self.invalid_utf8 = {table: 0 for table in tables}
        batch = None
        wanted = {nova_table for nova_table, table in self.tables.items()
                  if table in tables}
        for db, nova_table, data, line, columns in self.scan(split, wanted):
            table = self.tables[nova_table]
            rows, values, escaped = self.parse_insert(nova_table, data, line,
                                                      columns)
            if batch is not None and (batch.database != db
                                      or batch.table != table):
                yield from self._flush(batch)
                batch = None
            if batch is None:
                batch = _Batch(db, table)
            batch.add(values, rows, escaped, line, nova_table)
            if batch.rows >= self.batch_rows:
                yield from self._flush(batch)
                batch = None
        if batch is not None:
            yield from self._flush(batch)

    def _flush(self, batch):
        result, invalid = self._to_table(batch)
        self.invalid_utf8[batch.table] += invalid
        if result.num_rows or invalid:
            yield batch.table, result, invalid

    def _to_table(self, batch):
        """(Arrow table, rows dropped for text that is not UTF-8)."""
        arrays, invalid = self._arrays(batch)
        result = pa.Table.from_arrays(arrays,
                                      schema=source_schema(batch.table))
        in_window = self._in_window(batch.table, result)
        if in_window is not None:
            result = result.filter(in_window)
        if not invalid:
            return result, 0
        valid = pa.array([i not in invalid for i in range(batch.rows)])
        if in_window is not None:
            valid = valid.filter(in_window)
        return result.filter(valid), len(valid) - (pc.sum(valid).as_py() or 0)

    def _arrays(self, batch):
        """The batch's columns, database first, and the rows with text
        that is not UTF-8 (nulled in them)."""
        arrays = [pa.repeat(pa.scalar(batch.database, pa.string()),
                            batch.rows)]
        invalid = set()
        for j, (name, typ) in enumerate(SOURCE_COLUMNS[batch.table]):
            try:
                array, not_utf8 = column_array(
                    name, typ, batch.strings[j], batch.tokens[j],
                    batch.escaped)
            except BadValue as e:
                line, nova_table = batch.where(e.index)
                raise self._error(line, f'{e} in INSERT into '
                                        f'{nova_table}') from None
            arrays.append(array)
            invalid |= not_utf8
        return arrays, invalid

    def _in_window(self, table, result):
        """Which rows of a batch are in the event window (None: all)."""
        start, end = self.window
        if table != EVENTS or not (start or end):
            return None
        times = result.column('start_time')
        mask = None
        if start:
            mask = pc.greater_equal(times, start)
        if end:
            below = pc.less(times, end)
            mask = below if mask is None else pc.and_(mask, below)
        return mask
