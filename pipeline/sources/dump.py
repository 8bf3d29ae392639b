"""Reading the three Nova tables straight from mysqldump / mariadb-dump files.

A dump is read as a stream of lines, so memory stays bounded whatever its
size: mysqldump writes one INSERT statement per line, mariadb-dump (10.x)
one row per line, and statements over several lines are gathered up to
their ``;``. Plain, gzip, bzip2 and xz files are read, by magic bytes or
extension.

Only three kinds of statement matter:

* ``CREATE DATABASE`` / ``USE``: the current database (a dump of a single
  database made without ``--databases`` names none: ``default_database``);
* ``CREATE TABLE`` of a Nova table: its column order, for INSERTs without a
  column list;
* ``INSERT`` / ``INSERT IGNORE`` / ``REPLACE`` into a Nova table (live or
  ``shadow_``), extended or single-row, with or without a column list.

Everything else, and INSERTs into other tables (most of a dump), is skipped by
looking at the first bytes of the line only. The values of a wanted INSERT are
tokenized with one compiled regular expression over the whole statement, and
the wanted columns converted to Arrow by pyarrow compute, a batch at a time.

For Beam, an uncompressed file is cut into byte ranges aligned to line
starts; a cheap pre-scan in ``plan()`` records, at each cut, the current
database and the CREATE TABLE column orders seen so far, so each range starts
with the right context. A compressed file is one split.
"""
import bz2
import dataclasses
import functools
import gzip
import lzma
import os
import re
import zlib
from dataclasses import dataclass
from typing import Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.pipeline.errors import UserError
from starcompactor.transforms.mask import DEFAULT_MASKED as IDENTITY_COLUMNS
from starcompactor.transforms import counters as c
from starcompactor.transforms.schema import (
    EVENTS, INSTANCES, NOVA_TABLES, SHADOW_PREFIX, SOURCE_COLUMNS, SOURCE_TABLES,
    source_schema)

BATCH_ROWS = 50_000
SPLIT_BYTES = 128 << 20
_READ_BUFFER = 1 << 20

# --- compression -------------------------------------------------------------

_MAGIC = ((b'\x1f\x8b', 'gzip'), (b'BZh', 'bzip2'), (b'\xfd7zXZ\x00', 'xz'))
_EXTENSIONS = {'.gz': 'gzip', '.bz2': 'bzip2', '.xz': 'xz'}
_OPENERS = {'gzip': gzip.open, 'bzip2': bz2.open, 'xz': lzma.open}
_DECOMPRESS_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)

# Rough size of an uncompressed dump per compressed byte, and share of
# instance_actions_events rows per uncompressed byte, to estimate event counts
# of compressed files without reading them.
_COMPRESSION_RATIO = 6
_EVENT_ROWS_PER_BYTE = 1 / 500


def compression_of(path):
    """'gzip', 'bzip2', 'xz' or None (plain): by magic bytes, else by
    extension."""
    try:
        with open(path, 'rb') as f:
            head = f.read(6)
    except FileNotFoundError:
        raise UserError(f'{path}: no such dump file') from None
    except OSError as e:
        raise UserError(f'{path}: cannot read ({e.strerror or e})') from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def open_dump(path, compression=None):
    """A binary file object over the dump's (decompressed) bytes."""
    if compression:
        return _OPENERS[compression](path, 'rb')
    return open(path, 'rb', buffering=_READ_BUFFER)


# --- lexical pieces ----------------------------------------------------------

_BNAME = rb'(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))'
_BQUALIFIED = _BNAME + rb'(?:\s*\.\s*' + _BNAME + rb')?'
_INSERT_HEAD = re.compile(
    rb'\s*(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|'
    rb'IGNORE)\s+)*(?:INTO\s+)?' + _BQUALIFIED, re.I)
_USE = re.compile(rb'\s*USE\s+' + _BNAME, re.I)
_CREATE_DATABASE = re.compile(
    rb'\s*CREATE\s+(?:DATABASE|SCHEMA)\s+(?:/\*.*?\*/\s*)?'
    rb'(?:IF\s+NOT\s+EXISTS\s+)?' + _BNAME, re.I)
_CREATE_TABLE = re.compile(
    rb'\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+'
    rb'(?:/\*.*?\*/\s*)?(?:IF\s+NOT\s+EXISTS\s+)?' + _BQUALIFIED + rb'\s*\(',
    re.I)
# First bytes of the lines that can matter; all others are skipped unread.
_FIRST = frozenset(b'IiRrCcUu \t')
# A line that starts a new statement cannot continue an unfinished one.
_STATEMENT_START = re.compile(
    rb'\s*(?:(?:INSERT|REPLACE|CREATE|USE|LOCK|UNLOCK|DROP|ALTER|SET|'
    rb'DELIMITER)\b|/\*|--|#)', re.I)

_NAME = r'(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))'
_QUALIFIED = _NAME + r'(?:\s*\.\s*' + _NAME + r')?'
_INSERT_TEXT = re.compile(
    r'\s*(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|'
    r'IGNORE)\s+)*(?:INTO\s+)?' + _QUALIFIED +
    r'\s*(?:\(([^)]*)\)\s*)?VALUES?\s*', re.I)
_OPEN_ROW = re.compile(r'\s*\(')
_COLUMN_NAME = re.compile(_NAME)

# Values: NULL (no capture), a quoted string's body, or another unquoted
# token: a number, a hex/bit literal or a string with a charset introducer
# (``_binary '...'``, whole, for the slow path). So NULL is (None, None).
_STRING = r"'([^'\\]*+(?:(?:\\.|'')[^'\\]*+)*+)'"
_TOKEN = (r"(-?+(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][-+]?+\d++)?+"
          r"|0x[0-9A-Fa-f]++|0b[01]++|_[A-Za-z0-9]++\s*+'(?:[^'\\]|\\.|'')*+'"
          r"|[xXbB]'[0-9A-Fa-f]*+')")
_NULL = '(?:NULL|null)'
_VALUE_CAPTURED = '(?:' + _NULL + '|' + _STRING + '|' + _TOKEN + ')'
_VALUE_SKIPPED = '(?:' + _NULL + '|' + _STRING.replace('(', '(?:', 1) + '|' \
    + _TOKEN.replace('(', '(?:', 1) + ')'


@functools.lru_cache(maxsize=256)
def _row_pattern(n, captured):
    """Fast path: one row as mysqldump writes it, ``(v,v,...)``, capturing
    (string, token) of the ``captured`` columns only. ``split`` with it
    gives [between, captures..., between, ...]; the betweens must be exactly
    '', ',', ..., ';', so anything else (garbage, spaces) fails the check
    and goes to the loose parser."""
    return re.compile(
        r'\(' + ','.join(_VALUE_CAPTURED if i in captured else _VALUE_SKIPPED
                         for i in range(n)) + r'\)', re.S)


# Loose path: whitespace allowed; each match is one value and its separator,
# or (group 4) any one other character, so faults show up.
_VALUE_LOOSE = re.compile(
    r"\s*(?:" + _NULL + '|' + _STRING + '|' + _TOKEN +
    r")\s*(,|\)\s*(?:,\s*\(|;))|(.)", re.S)
_STRING_AT = re.compile(r"(?:_[A-Za-z0-9]+\s*|[xXbB](?='))?" + _STRING, re.S)

_ESCAPE = re.compile(r"\\(.)|''", re.S)
# MySQL escapes; \% and \_ keep their backslash, any other \x is x.
_ESCAPES = {'0': '\0', "'": "'", '"': '"', 'b': '\b', 'n': '\n', 'r': '\r',
            't': '\t', 'Z': '\x1a', '\\': '\\', '%': '\\%', '_': '\\_'}


def _unescape_match(m):
    c = m.group(1)
    if c is None:
        return "'"
    return _ESCAPES.get(c, c)


def unescape(text):
    """The value of a MySQL single-quoted string's body."""
    if '\\' not in text and "''" not in text:
        return text
    return _ESCAPE.sub(_unescape_match, text)


def _name(groups):
    """An identifier from (backquoted, bare) groups, str or bytes."""
    quoted, bare = groups
    if quoted is None:
        return bare
    tick = '`' if isinstance(quoted, str) else b'`'
    return quoted.replace(tick * 2, tick)


def _qualified(m, first):
    """(database or None, table) from the groups of a _QUALIFIED match."""
    a = _name(m.group(first, first + 1))
    if m.group(first + 2) is None and m.group(first + 3) is None:
        return None, a
    return a, _name(m.group(first + 2, first + 3))


# CREATE TABLE bodies: column names are the first identifier of each
# top-level item that is not a key or constraint.
_DDL_TOKEN = re.compile(
    rb"`((?:[^`]|``)*)`|'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\""
    rb"|([(),])|([A-Za-z0-9_$]+)|(\s+)|.", re.S)
_NOT_COLUMNS = {b'PRIMARY', b'KEY', b'INDEX', b'UNIQUE', b'CONSTRAINT',
                b'FOREIGN', b'FULLTEXT', b'SPATIAL', b'CHECK', b'PERIOD',
                b'SYSTEM'}


def create_table_columns(data, pos):
    """Column names of a CREATE TABLE (bytes) whose ``(`` ends at pos, or
    None when the statement ends first."""
    columns, depth, item_start = [], 1, True
    for m in _DDL_TOKEN.finditer(data, pos):
        quoted, punct, word, space = m.groups()
        if space is not None:
            continue
        if punct == b'(':
            depth += 1
        elif punct == b')':
            depth -= 1
            if depth == 0:
                return columns
        elif punct == b',':
            if depth == 1:
                item_start = True
                continue
        elif depth == 1 and item_start:
            if quoted is not None:
                columns.append(quoted.replace(b'``', b'`').decode(
                    'utf-8', 'replace'))
            elif word is not None and word.upper() not in _NOT_COLUMNS:
                columns.append(word.decode('utf-8', 'replace'))
        item_start = False
    return None


# --- splits and context ------------------------------------------------------

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
    """Nova table name -> logical table (instances, actions, events)."""
    prefixes = ('', SHADOW_PREFIX) if archived else ('',)
    return {prefix + NOVA_TABLES[table]: table
            for table in SOURCE_TABLES for prefix in prefixes}


_ALL_NOVA_TABLES = nova_table_map(archived=True)


# --- value conversion --------------------------------------------------------

_INT = pa.int64()
_TYPE_NAMES = {pa.int64(): 'integer', pa.string(): 'text'}


def _python_value(s, u, typ):
    """One value the slow way (prefixed and hex literals, quoted numbers,
    unquoted numbers in text columns)."""
    if u is None:
        if s is None:
            return None
        text = unescape(s)
    elif u[:2] in ('0x', '0b'):
        raw = bytes.fromhex(u[2:]) if u[1] == 'x' else _bits(u[2:])
        return int.from_bytes(raw, 'big') if typ == _INT else raw.decode()
    elif u[0] == '_':                        # _binary 'text'
        text = unescape(u[u.index("'") + 1:-1])
    elif u[1:2] == "'":                      # X'4142', b'0101'
        raw = bytes.fromhex(u[2:-1]) if u[0] in 'xX' else _bits(u[2:-1])
        return int.from_bytes(raw, 'big') if typ == _INT else raw.decode()
    else:
        text = u
    return int(text) if typ == _INT else text


def _encodes(text):
    try:
        text.encode('utf-8')
        return True
    except UnicodeEncodeError:
        return False


def _bits(digits):
    return int(digits or '0', 2).to_bytes((len(digits) + 7) // 8, 'big')


class _BadValue(Exception):
    def __init__(self, index, message):
        super().__init__(message)
        self.index = index


def _slow_column(name, typ, s, u):
    values = []
    for i, (sv, uv) in enumerate(zip(s, u)):
        try:
            values.append(_python_value(sv, uv, typ))
        except (ValueError, UnicodeDecodeError):
            raise _BadValue(i, f'bad {_TYPE_NAMES[typ]} value for column '
                               f'{name}: {(uv or sv)[:40]!r}') from None
    try:
        return pa.array(values, typ)
    except (OverflowError, pa.ArrowInvalid):
        i = next(i for i, v in enumerate(values)
                 if v is not None and not -2**63 <= v < 2**63)
        raise _BadValue(i, f'integer out of range for column {name}: '
                           f'{values[i]}') from None


def _column_array(name, typ, s, u, escaped):
    """Arrow array of one column from the tokenizer's pieces: ``s`` the
    quoted strings (None where unquoted), ``u`` the unquoted tokens (None
    where quoted)."""
    if typ != _INT:
        if u.count(None) != len(u):        # unquoted numbers, literals
            return _slow_column(name, typ, s, u)
        values = pa.array(s, pa.string())      # None where NULL
        if escaped and len(values):
            data = values.buffers()[2]
            data = data.to_pybytes() if data is not None else b''
            if b'\\' in data or b"''" in data:
                values = pa.array([None if v is None else unescape(v)
                                   for v in s], pa.string())
        return values
    if s.count(None) != len(s):            # quoted numbers, literals
        return _slow_column(name, typ, s, u)
    try:
        return pa.array(u, pa.string()).cast(_INT)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _slow_column(name, typ, s, u)


class _Batch:
    """Rows of one (database, logical table) gathered for conversion."""

    def __init__(self, database, table):
        self.database = database
        self.table = table
        width = len(SOURCE_COLUMNS[table])
        self.s = [[] for _ in range(width)]
        self.u = [[] for _ in range(width)]
        self.rows = 0
        self.escaped = False
        self.lines = []      # (line, nova_table, rows): where rows came from

    def add(self, values, rows, escaped, line, nova_table):
        for j, (s, u) in enumerate(values):
            self.s[j] += s
            self.u[j] += u
        self.rows += rows
        self.escaped = self.escaped or escaped
        self.lines.append((line, nova_table, rows))

    def where(self, index):
        for line, nova_table, rows in self.lines:
            if index < rows:
                return line, nova_table
            index -= rows
        return self.lines[-1][:2]


# --- the reader --------------------------------------------------------------

def _parse_values(text, pos, n, picks):
    """The values of the INSERT's rows in ``text[pos:]`` (from the ``(``
    after VALUES), n per row, as ``(rows, [(strings, tokens) per pick])``:
    strings holds quoted strings' bodies (None where unquoted), tokens the
    unquoted tokens (None where quoted). None when malformed."""
    body = text[pos:]
    captured = tuple(sorted(set(picks)))
    res = _row_pattern(n, captured).split(body)
    stride = 2 * len(captured) + 1
    between = res[0::stride]
    rows = len(between) - 1
    if (rows and between[0] == '' and between[-1].rstrip() == ';'
            and between.count(',') + between.count(',\n')
            + between.count(',\r\n') == rows - 1):
        rank = {k: r for r, k in enumerate(captured)}
        return rows, [(res[1 + 2 * rank[k]::stride],
                       res[2 + 2 * rank[k]::stride]) for k in picks]
    m = _OPEN_ROW.match(body)
    if m is None:
        return None
    body = body.rstrip()
    s, u = [], []
    column = 0
    for m in _VALUE_LOOSE.finditer(body, m.end()):
        string, token, sep, fault = m.groups()
        if fault is not None:
            return None
        s.append(string)
        u.append(token)
        column += 1
        if sep == ',':
            if column == n:
                return None
        elif column != n:
            return None
        elif sep[-1] == ';':
            if m.end() != len(body):
                return None
            return len(s) // n, [(s[k::n], u[k::n]) for k in picks]
        else:
            column = 0
    return None


def _diagnose(text, pos, n):
    """(offset, message) of the first fault in an INSERT's values."""
    column, row = 0, 1
    text = text.rstrip()
    m = _OPEN_ROW.match(text, pos)
    if m is None:
        return pos, f'bad value near {text[pos:pos + 30]!r}'
    for m in _VALUE_LOOSE.finditer(text, m.end()):
        if m.group(4) is not None:
            at = m.start()
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return at, 'truncated statement'
            if re.match(r"(?:_[A-Za-z0-9]+\s*|[xXbB])?'", text[at:at + 80]):
                string = _STRING_AT.match(text, at)
                if string is None:
                    return at, 'unterminated string'
                at = string.end()
            near = text[at:at + 30]
            return at, f'bad value near {near!r}'
        column += 1
        sep = m.group(3)
        if sep == ',':
            if column >= n:
                return m.start(), (f'row {row} has more than {n} values '
                                   f'(the table has {n} columns)')
            continue
        if column != n:
            return m.start(), f'row {row} has {column} values, expected {n}'
        if sep.endswith(';'):
            if m.end() < len(text):
                return m.end(), 'text after the end of the statement'
            return m.end(), 'bad statement'
        column, row = 0, row + 1
    return len(text), 'truncated statement'


class DumpReader:
    """Reads the Nova tables of one dump file, or of a split of it.

    ``read()`` yields ``(logical_table, pyarrow.Table)`` in
    ``source_schema(logical_table)``, about ``batch_rows`` rows each, one
    database per batch. ``databases`` selects databases (None: all);
    ``archived=False`` skips the ``shadow_`` tables; ``window`` = (start,
    end), Nova-format time strings, keeps events with start <= start_time <
    end (either may be None).
    """

    def __init__(self, path, databases=None, archived=True,
                 window=(None, None), default_database='nova',
                 batch_rows=BATCH_ROWS):
        self.path = path
        self.databases = None if databases is None else set(databases)
        self.tables = nova_table_map(archived)
        self.window = tuple(window or (None, None))
        self.default_database = default_database
        self.batch_rows = batch_rows

    def _error(self, line, message):
        return UserError(f'{self.path} line {line}: {message}')

    # -- line level ---------------------------------------------------------

    def scan(self, split, wanted, marks=(), snapshots=None, seen=None):
        """Walk the lines of a split, keeping the context current.

        Yields ``(database, nova_table, statement bytes, line, columns)``
        for the INSERTs into ``wanted`` tables of selected databases, where
        columns is the CREATE TABLE order known for the table (or None).
        Appends the context at the first line start at or after each of the
        ascending offsets ``marks`` to ``snapshots`` as ``(offset, line,
        database, {(database, nova_table): columns})``; adds the databases
        that have Nova tables to the set ``seen``.
        """
        compression = split.compression
        database = split.database or self.default_database
        columns = {(db, table): cols for db, table, cols in split.columns}
        selected = self.databases
        end = split.end
        marks = list(marks)
        next_mark = marks.pop(0) if marks else None
        pos, line_no = split.start, split.line
        first = _FIRST
        try:
            f = open_dump(self.path, compression)
        except OSError as e:
            raise UserError(f'{self.path}: cannot read ({e.strerror or e})') \
                from None
        try:
            with f:
                if pos:
                    f.seek(pos)
                elif f.peek(3)[:3] == b'\xef\xbb\xbf':      # UTF-8 BOM
                    pos = len(f.read(3))
                lines = iter(f)
                for line in lines:
                    if next_mark is not None and pos >= next_mark:
                        snapshots.append((pos, line_no, database,
                                          dict(columns)))
                        while next_mark is not None and pos >= next_mark:
                            next_mark = marks.pop(0) if marks else None
                    if end is not None and pos >= end:
                        return
                    start_line = line_no
                    pos += len(line)
                    line_no += 1
                    if not line or line[0] not in first:
                        continue
                    c = line.lstrip()[:1]
                    if not c:
                        continue
                    if c in b'IiRr':
                        m = _INSERT_HEAD.match(line)
                        if m is None:
                            continue
                        db, table = _qualified(m, 1)
                        table = table.decode('utf-8', 'replace')
                        if table not in wanted:
                            continue
                        db = (database if db is None
                              else db.decode('utf-8', 'replace'))
                        if selected is not None and db not in selected:
                            continue
                        if not (line.endswith(b';\n')
                                or line.rstrip().endswith(b';')):
                            more = self._rest_of_statement(
                                lines, start_line, f'INSERT into {table}')
                            pos += sum(map(len, more))
                            line_no += len(more)
                            line = b''.join([line] + more)
                        yield db, table, line, start_line, columns.get(
                            (db, table))
                    elif c in b'Uu':
                        m = _USE.match(line)
                        if m is not None:
                            database = _name(m.group(1, 2)).decode(
                                'utf-8', 'replace')
                    elif c in b'Cc':
                        m = _CREATE_DATABASE.match(line)
                        if m is not None:
                            database = _name(m.group(1, 2)).decode(
                                'utf-8', 'replace')
                            continue
                        m = _CREATE_TABLE.match(line)
                        if m is None:
                            continue
                        db, table = _qualified(m, 1)
                        table = table.decode('utf-8', 'replace')
                        if table not in _ALL_NOVA_TABLES:
                            continue
                        db = (database if db is None
                              else db.decode('utf-8', 'replace'))
                        if not line.rstrip().endswith(b';'):
                            more = self._rest_of_statement(
                                lines, start_line, f'CREATE TABLE {table}')
                            pos += sum(map(len, more))
                            line_no += len(more)
                            line = b''.join([line] + more)
                        cols = create_table_columns(line, m.end())
                        if cols is None:
                            raise self._error(
                                start_line,
                                f'truncated statement: CREATE TABLE {table}')
                        columns[(db, table)] = tuple(cols)
                        if seen is not None:
                            seen.add(db)
        except _DECOMPRESS_ERRORS as e:
            raise UserError(f'{self.path} line {line_no}: corrupt or '
                            f'truncated {compression or "file"} data '
                            f'({e})') from None

    def _rest_of_statement(self, lines, start_line, what):
        """The lines continuing a statement to the one ending in ``;``."""
        more = []
        append = more.append
        for line in lines:
            append(line)
            if line.endswith(b'),\n') and line.startswith(b'('):
                continue             # mariadb-dump: one row a line
            if (not line.startswith(b'(') and line.strip()
                    and _STATEMENT_START.match(line)):
                raise self._error(start_line, f'truncated statement: {what}')
            if b';' in line[-16:] and line.rstrip().endswith(b';'):
                return more
        raise self._error(start_line,
                          f'truncated statement: {what} (end of file)')

    @staticmethod
    def _decode(data):
        """Text of a statement; bytes that are not UTF-8 become lone
        surrogates, and the rows whose wanted text holds one are dropped
        (counted as ``invalid_utf8``) when the batch is converted."""
        try:
            return data.decode('utf-8')
        except UnicodeDecodeError:
            return data.decode('utf-8', 'surrogateescape')

    # -- statement level ----------------------------------------------------

    def parse_insert(self, db, nova_table, data, line, columns):
        """(rows, [(strings, tokens) per source column], escaped) of one
        INSERT statement; escaped: whether any string may hold escapes."""
        text = self._decode(data)
        what = f'INSERT into {nova_table}'
        m = _INSERT_TEXT.match(text)
        if m is None:
            raise self._error(line, f'cannot read {what} (expected '
                                    f'INSERT INTO table [(columns)] VALUES)')
        if m.group(5) is not None:
            names = [_name(c.group(1, 2))
                     for c in _COLUMN_NAME.finditer(m.group(5))]
        elif columns is not None:
            names = columns
        else:
            raise self._error(
                line, f'{what} has no column list and no CREATE TABLE '
                      f'{nova_table} precedes it (dump with CREATE TABLE '
                      f'statements or --complete-insert)')
        n = len(names)
        picks = []
        for column, _ in SOURCE_COLUMNS[_ALL_NOVA_TABLES[nova_table]]:
            try:
                picks.append(names.index(column))
            except ValueError:
                raise self._error(line, f'{what}: no column {column} in '
                                        f'its column list') from None
        values = _parse_values(text, m.end(), n, picks)
        if values is None:
            offset, message = _diagnose(text, m.end(), n)
            raise self._error(line + text.count('\n', 0, offset),
                              f'{message} in {what}')
        rows, columns = values
        escaped = '\\' in text or "''" in text
        return rows, columns, escaped

    # -- output ---------------------------------------------------------------

    def _to_table(self, batch):
        """(Arrow table, rows dropped for text that is not UTF-8)."""
        table = batch.table
        arrays = [pa.repeat(pa.scalar(batch.database, pa.string()),
                            batch.rows)]
        invalid = set()
        for j, (name, typ) in enumerate(SOURCE_COLUMNS[table]):
            s, u = batch.s[j], batch.u[j]
            while True:
                try:
                    arrays.append(_column_array(name, typ, s, u,
                                                batch.escaped))
                    break
                except UnicodeEncodeError:      # lone surrogates: not UTF-8
                    bad = {i for i, v in enumerate(s) if v is not None
                           and not _encodes(v)}
                    bad |= {i for i, v in enumerate(u) if v is not None
                            and not _encodes(v)}
                    invalid |= bad
                    s = [None if i in bad else v for i, v in enumerate(s)]
                    u = [None if i in bad else v for i, v in enumerate(u)]
                except _BadValue as e:
                    line, nova_table = batch.where(e.index)
                    raise self._error(line, f'{e} in INSERT into '
                                            f'{nova_table}') from None
        result = pa.Table.from_arrays(arrays, schema=source_schema(table))
        if invalid:
            valid = pa.array([i not in invalid for i in range(batch.rows)])
        start, end = self.window
        if table == EVENTS and (start or end):
            times = result.column('start_time')
            mask = None
            if start:
                mask = pc.greater_equal(times, start)
            if end:
                below = pc.less(times, end)
                mask = below if mask is None else pc.and_(mask, below)
            result = result.filter(mask)
            if invalid:
                valid = valid.filter(mask)
        if not invalid:
            return result, 0
        return result.filter(valid), len(valid) - (pc.sum(valid).as_py() or 0)

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
                and split.end is None):
            split = dataclasses.replace(split, compression=compression_of(
                self.path))
        self.invalid_utf8 = {table: 0 for table in SOURCE_TABLES}
        batch = None
        wanted = {nova_table for nova_table, table in self.tables.items()
                  if table in tables}
        for db, nova_table, data, line, columns in self.scan(split, wanted):
            table = self.tables[nova_table]
            rows, values, escaped = self.parse_insert(
                db, nova_table, data, line, columns)
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


def read_dump(path, **options):
    """All ``(logical_table, pyarrow.Table)`` batches of one dump file;
    options as ``DumpReader``."""
    return DumpReader(path, **options).read()


# --- Beam --------------------------------------------------------------------

class NovaDumpSource:
    """What to read: dump files, databases, live and archived tables, an
    event window (Nova-format time strings, applied while reading).

    ``databases`` None reads every database found. Rows before any
    ``USE``/``CREATE DATABASE`` (a dump made without ``--databases``) belong
    to ``default_database``.
    """

    def __init__(self, paths, databases=None, archived=True,
                 window=(None, None), default_database='nova',
                 split_bytes=SPLIT_BYTES, batch_rows=BATCH_ROWS):
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) \
            else list(paths)
        self.paths = [os.fspath(p) for p in self.paths]
        self.databases = None if databases is None else list(databases)
        self.archived = archived
        self.window = tuple(window or (None, None))
        self.default_database = default_database
        self.split_bytes = split_bytes
        self.batch_rows = batch_rows
        self.found_databases = None

    def dump_reader(self, path):
        return DumpReader(path, self.databases, self.archived, self.window,
                          self.default_database, self.batch_rows)

    def reader(self, splits):
        return ReadNovaDump(self, splits)

    def describe(self):
        start, end = self.window
        return {'kind': 'mysqldump',
                'files': [os.path.basename(p) for p in self.paths],
                'databases': self.databases or self.found_databases,
                'archived': self.archived,
                'window': {'start': start, 'end': end}}

    def raw_identities(self, among=None):
        """Every distinct raw user, project, instance name and host; with
        ``among`` (candidate strings), only those of the candidates."""
        values = set()
        for path in self.paths:
            for _, batch in self.dump_reader(path).read(tables=[INSTANCES]):
                for column in IDENTITY_COLUMNS:
                    values.update(
                        v for v in batch.column(column).to_pylist() if v)
        return values if among is None else values & set(among)

    def plan(self):
        """Check every file and cut it into splits.

        Runs where the pipeline is built: a missing or unreadable file, a
        corrupt compressed file or malformed CREATE TABLE are reported before
        anything starts. Uncompressed files are pre-scanned (every line
        looked at, no values parsed). Returns the splits and the estimated
        number of event rows (counted in uncompressed files, guessed from
        the size of compressed ones).
        """
        if not self.paths:
            raise UserError('no dump files given')
        splits, estimated_events, found, scanned_all = [], 0, set(), True
        for path in self.paths:
            if not os.path.isfile(path):
                raise UserError(f'{path}: no such dump file')
            try:
                compression = compression_of(path)
                if compression:
                    with open_dump(path, compression) as f:
                        f.read(1)
            except PermissionError as e:
                raise UserError(f'{path}: cannot read ({e.strerror})') \
                    from None
            except _DECOMPRESS_ERRORS as e:
                raise UserError(f'{path}: not a readable {compression} '
                                f'file ({e})') from None
            if compression:
                splits.append(DumpSplit(path, compression=compression))
                estimated_events += int(os.path.getsize(path)
                                        * _COMPRESSION_RATIO
                                        * _EVENT_ROWS_PER_BYTE)
                scanned_all = False
                continue
            file_splits, events = self._prescan(path, found)
            splits += file_splits
            estimated_events += events
        if scanned_all:
            self.found_databases = sorted(found)
            missing = [d for d in self.databases or () if d not in found]
            if found and missing:
                raise UserError(
                    f'database {", ".join(missing)} not found in the dump '
                    f'(it has Nova tables of {", ".join(sorted(found))})')
        return splits, estimated_events

    def _prescan(self, path, found):
        size = os.path.getsize(path)
        marks = range(self.split_bytes, size, self.split_bytes)
        snapshots, events = [], 0
        reader = self.dump_reader(path)
        event_tables = {t for t, logical in reader.tables.items()
                        if logical == EVENTS}
        try:
            for _, _, data, _, _ in reader.scan(DumpSplit(path),
                                                event_tables, marks,
                                                snapshots, found):
                events += (data.count(b'),(') + data.count(b'),\n(')
                           + data.count(b'),\r\n(') + 1)
        except PermissionError as e:
            raise UserError(f'{path}: cannot read ({e.strerror})') from None
        bounds = [(0, 1, None, {})] + [s for s in snapshots if s[0] < size]
        splits = []
        for i, (start, line, database, columns) in enumerate(bounds):
            end = bounds[i + 1][0] if i + 1 < len(bounds) else None
            splits.append(DumpSplit(
                path, start, end, line, database,
                tuple((db, table, cols) for (db, table), cols
                      in sorted(columns.items()))))
        return splits, events


class ReadDumpSplits(beam.DoFn):
    """DumpSplit -> ``(logical table, Arrow batch)`` pairs."""

    def __init__(self, source):
        self.source = source

    def process(self, split):
        reader = self.source.dump_reader(split.path)
        for table, batch, invalid in reader.read_counted(split):
            # Like the MySQL source: rows with text that is not UTF-8 are
            # counted read and rejected here; the rest when validated.
            c.count_read(table, invalid)
            c.count_rejected(table, c.INVALID_UTF8, invalid)
            if batch.num_rows:
                yield table, batch


class ReadNovaDump(beam.PTransform):
    """PBegin -> ``(logical table, Arrow batch)`` pairs of every table."""

    def __init__(self, source, splits):
        super().__init__()
        self.source = source
        self.splits = splits

    def expand(self, pbegin):
        return (pbegin
                | 'DumpSplits' >> beam.Create(self.splits)
                | 'SpreadDumpSplits' >> beam.Reshuffle()
                | 'ReadDumpSplits' >> beam.ParDo(ReadDumpSplits(self.source)))
