"""Tokenized INSERT values -> Arrow arrays, a column at a time.

The tokenizer hands each column as two lists: the quoted strings' bodies
(None where unquoted) and the unquoted tokens (None where quoted). A text
column of plain strings and an integer column of plain numbers convert in
C++; anything else (hex and bit literals, ``_binary '...'``, quoted numbers,
unquoted numbers in a text column) takes the slow path, value by value.
"""
import pyarrow as pa

from starcompactor.pipeline.sources.dump.lexer import unescape

INT = pa.int64()
_TYPE_NAMES = {pa.int64(): 'integer', pa.string(): 'text'}


class BadValue(Exception):
    """A value that does not fit its column; ``index`` is its row."""

    def __init__(self, index, message):
        super().__init__(message)
        self.index = index


def column_array(name, typ, strings, tokens, escaped):
    """Arrow array of one column, and the rows nulled in it because their
    text is not UTF-8 (statements are decoded with lone surrogates for such
    bytes); ``escaped``: whether any string may hold escapes. Raises
    ``BadValue``."""
    try:
        return _column_array(name, typ, strings, tokens, escaped), set()
    except UnicodeEncodeError:
        not_utf8 = _not_utf8(strings) | _not_utf8(tokens)
        return _column_array(name, typ, _without(strings, not_utf8),
                             _without(tokens, not_utf8), escaped), not_utf8


def _column_array(name, typ, strings, tokens, escaped):
    if typ != INT:
        if tokens.count(None) != len(tokens):   # unquoted numbers, literals
            return _slow_column(name, typ, strings, tokens)
        values = pa.array(strings, pa.string())      # None where NULL
        if escaped and len(values):
            data = values.buffers()[2]
            data = data.to_pybytes() if data is not None else b''
            if b'\\' in data or b"''" in data:
                values = pa.array([None if v is None else unescape(v)
                                   for v in strings], pa.string())
        return values
    if strings.count(None) != len(strings):   # quoted numbers, literals
        return _slow_column(name, typ, strings, tokens)
    try:
        return pa.array(tokens, pa.string()).cast(INT)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _slow_column(name, typ, strings, tokens)


def _not_utf8(values):
    return {i for i, v in enumerate(values)
            if v is not None and not _encodes_as_utf8(v)}


def _encodes_as_utf8(text):
    try:
        text.encode('utf-8')
        return True
    except UnicodeEncodeError:
        return False


def _without(values, indices):
    return [None if i in indices else v for i, v in enumerate(values)]


def _slow_column(name, typ, strings, tokens):
    values = []
    for i, (string, token) in enumerate(zip(strings, tokens)):
        try:
            values.append(_python_value(string, token, typ))
        except (ValueError, UnicodeDecodeError):
            raise BadValue(i, f'bad {_TYPE_NAMES[typ]} value for column '
                              f'{name}: {(token or string)[:40]!r}') from None
    try:
        return pa.array(values, typ)
    except (OverflowError, pa.ArrowInvalid):
        i = next(i for i, v in enumerate(values)
                 if v is not None and not -2**63 <= v < 2**63)
        raise BadValue(i, f'integer out of range for column {name}: '
                          f'{values[i]}') from None


def _python_value(string, token, typ):
    """One value the slow way."""
    if token is None:
        if string is None:
            return None
        text = unescape(string)
    elif token[:2] in ('0x', '0b'):
        raw = bytes.fromhex(token[2:]) if token[1] == 'x' \
            else _bits(token[2:])
        return int.from_bytes(raw, 'big') if typ == INT else raw.decode()
    elif token[0] == '_':                        # _binary 'text'
        text = unescape(token[token.index("'") + 1:-1])
    elif token[1:2] == "'":                      # X'4142', b'0101'
        raw = bytes.fromhex(token[2:-1]) if token[0] in 'xX' \
            else _bits(token[2:-1])
        return int.from_bytes(raw, 'big') if typ == INT else raw.decode()
    else:
        text = token
    return int(text) if typ == INT else text


def _bits(digits):
    return int(digits or '0', 2).to_bytes((len(digits) + 7) // 8, 'big')
