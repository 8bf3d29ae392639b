"""A dump file's bytes: its compression, and its lines with their byte
offsets and numbers, statements over several lines gathered whole."""
import bz2
import contextlib
import gzip
import lzma
import math
import os
import zlib

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.dump.lexer import (
    STATEMENT_FIRST_BYTES, STATEMENT_START)

_READ_BUFFER = 1 << 20
_MAGIC = ((b'\x1f\x8b', 'gzip'), (b'BZh', 'bzip2'), (b'\xfd7zXZ\x00', 'xz'))
_EXTENSIONS = {'.gz': 'gzip', '.bz2': 'bzip2', '.xz': 'xz'}
_OPENERS = {'gzip': gzip.open, 'bzip2': bz2.open, 'xz': lzma.open}
DECOMPRESS_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)
_BYTE_ORDER_MARK = b'\xef\xbb\xbf'


def error_at(path, line, message):
    """A ``UserError`` about one line of a dump."""
    return UserError(f'{path} line {line}: {message}')


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


@contextlib.contextmanager
def dump_lines(path, compression, offset=0, number=1):
    """The ``Lines`` of a dump from the line starting at byte ``offset``
    (line ``number``); corrupt compressed data is a ``UserError``."""
    try:
        f = open_dump(path, compression)
    except OSError as e:
        raise UserError(f'{path}: cannot read ({e.strerror or e})') from None
    with f:
        if offset:
            f.seek(offset)
        elif f.peek(3)[:3] == _BYTE_ORDER_MARK:
            offset = len(f.read(3))
        lines = Lines(path, f, offset, number)
        try:
            yield lines
        except DECOMPRESS_ERRORS as e:
            raise error_at(path, lines.number,
                           f'corrupt or truncated {compression or "file"} '
                           f'data ({e})') from None


class Lines:
    """The lines of a dump from a split's start: ``statement_starts`` gives
    the lines that may start a statement, ``statement`` takes the lines of
    the rest of one. ``offset`` and ``number`` are those of the line after
    the last one handed out."""

    def __init__(self, path, f, offset, number):
        self.path = path
        self._lines = iter(f)
        self.offset = offset
        self.number = number

    def statement_starts(self, end=None, marks=(), at_mark=None):
        """``(number, line)`` of each line whose first byte may start a
        statement, up to the first line starting at or after byte ``end``;
        ``at_mark(offset, number)`` is called at the first line start at
        or after each of the ascending offsets ``marks``."""
        # The other lines, most lines of a dump, cost two comparisons.
        marks = iter(marks)
        next_mark = next(marks, math.inf)
        end = math.inf if end is None else end
        offset, number = self.offset, self.number
        try:
            for line in self._lines:
                if offset >= next_mark:
                    at_mark(offset, number)
                    next_mark = next((m for m in marks if m > offset),
                                     math.inf)
                if offset >= end:
                    return
                if line[0] not in STATEMENT_FIRST_BYTES:
                    offset += len(line)
                    number += 1
                    continue
                self.offset, self.number = offset + len(line), number + 1
                yield number, line
                offset, number = self.offset, self.number
        except DECOMPRESS_ERRORS:
            self.number = number      # for the error's line number
            raise

    def statement(self, line, number, what):
        """The whole statement starting with ``line`` (line ``number``):
        it, and the lines after it up to the one ending in ``;``."""
        if line.endswith(b';\n') or line.rstrip().endswith(b';'):
            return line
        more = [line]
        append = more.append
        for line in self._lines:
            append(line)
            if line.endswith(b'),\n') and line.startswith(b'('):
                continue             # mariadb-dump: one row a line
            if (not line.startswith(b'(') and line.strip()
                    and STATEMENT_START.match(line)):
                raise error_at(self.path, number,
                               f'truncated statement: {what}')
            if b';' in line[-16:] and line.rstrip().endswith(b';'):
                self.offset += sum(map(len, more)) - len(more[0])
                self.number += len(more) - 1
                return b''.join(more)
        raise error_at(self.path, number,
                       f'truncated statement: {what} (end of file)')
