"""The pieces of a dump's SQL the reader needs: statement heads, names,
CREATE TABLE column lists and the values of INSERT statements.

Statement heads are matched on the bytes of a line (most lines are skipped
after their first bytes); the values of a wanted INSERT are tokenized on its
text with one compiled regular expression over the whole statement.
"""
import functools
import re

# --- statement heads, on bytes -----------------------------------------------

_BNAME = rb'(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))'
_BQUALIFIED = _BNAME + rb'(?:\s*\.\s*' + _BNAME + rb')?'
INSERT_HEAD = re.compile(
    rb'\s*(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|'
    rb'IGNORE)\s+)*(?:INTO\s+)?' + _BQUALIFIED, re.I)
USE = re.compile(rb'\s*USE\s+' + _BNAME, re.I)
CREATE_DATABASE = re.compile(
    rb'\s*CREATE\s+(?:DATABASE|SCHEMA)\s+(?:/\*.*?\*/\s*)?'
    rb'(?:IF\s+NOT\s+EXISTS\s+)?' + _BNAME, re.I)
CREATE_TABLE = re.compile(
    rb'\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+'
    rb'(?:/\*.*?\*/\s*)?(?:IF\s+NOT\s+EXISTS\s+)?' + _BQUALIFIED + rb'\s*\(',
    re.I)
# First bytes of the lines that can matter; all others are skipped unread.
STATEMENT_FIRST_BYTES = frozenset(b'IiRrCcUu \t')
# A line that starts a new statement cannot continue an unfinished one.
STATEMENT_START = re.compile(
    rb'\s*(?:(?:INSERT|REPLACE|CREATE|USE|LOCK|UNLOCK|DROP|ALTER|SET|'
    rb'DELIMITER)\b|/\*|--|#)', re.I)


def identifier(groups):
    """An identifier from (backquoted, bare) groups, str or bytes."""
    quoted, bare = groups
    if quoted is None:
        return bare
    tick = '`' if isinstance(quoted, str) else b'`'
    return quoted.replace(tick * 2, tick)


def qualified_name(m, first):
    """(database or None, table) from the groups of a qualified name
    starting at group ``first``."""
    a = identifier(m.group(first, first + 1))
    if m.group(first + 2) is None and m.group(first + 3) is None:
        return None, a
    return a, identifier(m.group(first + 2, first + 3))


# --- CREATE TABLE ------------------------------------------------------------

# Column names are the first identifier of each top-level item that is not a
# key or constraint.
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


# --- INSERT, on text ---------------------------------------------------------

_NAME = r'(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))'
_QUALIFIED = _NAME + r'(?:\s*\.\s*' + _NAME + r')?'
# Groups 1-4: the qualified table name; 5: the column list, if any.
INSERT_TEXT = re.compile(
    r'\s*(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|'
    r'IGNORE)\s+)*(?:INTO\s+)?' + _QUALIFIED +
    r'\s*(?:\(([^)]*)\)\s*)?VALUES?\s*', re.I)
_OPEN_ROW = re.compile(r'\s*\(')
_COLUMN_NAME = re.compile(_NAME)


def column_list(text):
    """The names in an INSERT's column list (the text between its
    parentheses)."""
    return [identifier(m.group(1, 2)) for m in _COLUMN_NAME.finditer(text)]


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
    escaped = m.group(1)
    if escaped is None:
        return "'"
    return _ESCAPES.get(escaped, escaped)


def unescape(text):
    """The value of a MySQL single-quoted string's body."""
    if '\\' not in text and "''" not in text:
        return text
    return _ESCAPE.sub(_unescape_match, text)


def parse_values(text, pos, n, picks):
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
    return _parse_values_loosely(body, n, picks)


def _parse_values_loosely(body, n, picks):
    """``parse_values`` where whitespace may separate values and rows."""
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


def diagnose(text, pos, n):
    """(offset, message) of the first fault in an INSERT's values."""
    column, row = 0, 1
    text = text.rstrip()
    m = _OPEN_ROW.match(text, pos)
    if m is None:
        return pos, f'bad value near {text[pos:pos + 30]!r}'
    for m in _VALUE_LOOSE.finditer(text, m.end()):
        if m.group(4) is not None:
            return _diagnose_bad_value(text, m.start())
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


def _diagnose_bad_value(text, at):
    """(offset, message) of a value the tokenizer cannot read at ``at``."""
    while at < len(text) and text[at].isspace():
        at += 1
    if at >= len(text):
        return at, 'truncated statement'
    if re.match(r"(?:_[A-Za-z0-9]+\s*|[xXbB])?'", text[at:at + 80]):
        string = _STRING_AT.match(text, at)
        if string is None:
            return at, 'unterminated string'
        at = string.end()
    return at, f'bad value near {text[at:at + 30]!r}'
