"""The history's rows as SQL text: values written as MySQL's own dumps write
them, rows grouped into extended INSERT statements."""
import functools

from starcompactor.synth.nova_schema import table_columns
from starcompactor.synth.tables import (
    ANY, COLUMN_KINDS, COLUMNS, NUMBER, PLAIN_TEXT, PLAIN_TEXT_OR_NULL)

# Longest INSERT statement, in characters (about: a statement ends with
# the row that reaches it), well below the servers' max_allowed_packet.
MAX_STATEMENT = 1 << 20

_ESCAPES = str.maketrans({'\\': '\\\\', "'": "\\'", '"': '\\"', '\n': '\\n',
                          '\r': '\\r', '\0': '\\0', '\x1a': '\\Z'})


def sql_literal(value):
    """A value as MySQL writes it in a dump."""
    if value is None:
        return 'NULL'
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).translate(_ESCAPES) + "'"


def _plain_text_or_null(value):
    """A text known to need no escapes (or None) as an SQL literal."""
    return 'NULL' if value is None else "'" + value + "'"


# A row is one ``%`` over a template of all of the table's columns: numbers
# and plain text that is never NULL (quoted by the template) go in as they
# are, which keeps formatting fast; values that may be NULL or need escapes
# are made literals first.
_PLACEHOLDERS = {NUMBER: '%s', PLAIN_TEXT: "'%s'", PLAIN_TEXT_OR_NULL: '%s',
                 ANY: '%s'}
_TO_LITERAL = {PLAIN_TEXT_OR_NULL: _plain_text_or_null, ANY: sql_literal}


@functools.cache
def row_formatter(table):
    """A function: row tuple over ``COLUMNS[table]`` -> ``'(v1,v2,...)'``
    over all of the table's columns in Nova's schema (NULL for the ones the
    history does not fill)."""
    kinds = dict(COLUMN_KINDS[table])
    pieces, conversions = [], []
    for column in table_columns(table):
        kind = kinds.get(column)
        pieces.append('NULL' if kind is None else _PLACEHOLDERS[kind])
        if kind in _TO_LITERAL:
            conversions.append((COLUMNS[table].index(column),
                                _TO_LITERAL[kind]))
    template = '(' + ','.join(pieces) + ')'

    def format_row(row):
        values = list(row)
        for index, to_literal in conversions:
            values[index] = to_literal(values[index])
        return template % tuple(values)
    return format_row


class ExtendedInserts:
    """Turns row chunks into extended INSERT statements of at most about
    ``MAX_STATEMENT`` characters, in row order per table; ``emit(db, table,
    statement)`` gets them. ``qualify``: name the table with its database
    (for a server) rather than alone (for a dump, after its ``USE``)."""

    def __init__(self, emit, qualify):
        self.emit, self.qualify = emit, qualify
        self.pending = {}

    def add(self, db, table, rows):
        parts, size = self.pending.get((db, table), ([], 0))
        for text in map(row_formatter(table), rows):
            parts.append(text)
            size += len(text) + 1
            if size >= MAX_STATEMENT:
                self._flush(db, table, parts)
                parts, size = [], 0
        self.pending[db, table] = (parts, size)

    def _flush(self, db, table, parts):
        target = f'`{db}`.`{table}`' if self.qualify else f'`{table}`'
        self.emit(db, table,
                  f'INSERT INTO {target} VALUES ' + ','.join(parts))

    def close(self):
        """Emit what is still pending."""
        for (db, table), (parts, _) in self.pending.items():
            if parts:
                self._flush(db, table, parts)
        self.pending = {}
