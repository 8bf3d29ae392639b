"""Columnar Avro Object Container File writing for Arrow tables.

An Avro container file is a header followed by data blocks::

    header: b'Obj\\x01', a metadata map (here 'avro.schema' = the schema as
            JSON, 'avro.codec'), a 16-byte sync marker
    block:  row count (long), payload size (long), payload (the rows'
            binary encodings back to back, compressed by the codec),
            the sync marker again

A row's binary encoding is just its fields' encodings concatenated, in schema
order: a ``long`` is a zigzag varint, a ``string`` a varint byte length plus
the UTF-8 bytes, a union a varint branch index plus the chosen branch.

Why columnar: writing row by row (fastavro, after ``Table.to_pylist()``)
costs microseconds per row in Python, and the trace has millions of rows.
Here every field is encoded a whole column at a time with numpy and Arrow
kernels, with no Python loop per row or per value: varints (lengths, longs,
union branches) are built as byte matrices and packed with a mask, then one
``binary_join_element_wise`` glues each row's pieces (those byte runs and the
string columns' own buffers); the joined array's data buffer *is* the block
payload. Tables are encoded ``BLOCK_ROWS`` rows at a time, which bounds the
temporaries as well as the blocks.

Only the schema subset the trace needs is supported: a record whose fields
are ``'string'``, ``'long'`` or a ``'null'`` union of one of them.
"""
import json
import os
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.pipeline.threads import OrderedWrites

MAGIC = b'Obj\x01'
SYNC_SIZE = 16
CODECS = ('null', 'deflate')
# Readers hold a whole block in memory; this keeps blocks a few MB for
# trace-sized rows.
BLOCK_ROWS = 65536

_PRIMITIVES = ('string', 'long')
# Varint thresholds: a value needs k+1 bytes when it is >= 2**(7k).
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)


def _long_bytes(value):
    """One Avro long (header and block framing only, never row data)."""
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z > 0x7f:
        out.append((z & 0x7f) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _bytes_bytes(data):
    return _long_bytes(len(data)) + data


class _Field:
    """A record field reduced to what encoding needs: its Avro type, and for
    a union which branch-index byte means null and which means a value."""

    def __init__(self, field):
        self.name = field['name']
        typ = field['type']
        if isinstance(typ, str) and typ in _PRIMITIVES:
            self.type, self.union = typ, None
            return
        if (isinstance(typ, list) and len(typ) == 2 and 'null' in typ
                and typ[1 - typ.index('null')] in _PRIMITIVES):
            null_index = typ.index('null')
            self.type = typ[1 - null_index]
            # Branch index as a (one-byte) zigzag varint.
            self.union = (2 * null_index, 2 * (1 - null_index))
            return
        raise ValueError(f'field {self.name!r}: unsupported Avro type {typ!r}'
                         f' (only string, long and null unions of them)')


class _Bytes:
    """Per-row varints of a run of fields, as an (n, width) byte matrix and
    the number of bytes used in each row, so adjacent fields pack together
    with a single mask instead of one Arrow array each."""

    def __init__(self):
        self.matrices = []
        self.counts = []

    def add_varint(self, values, present=None):
        """Rows not ``present`` get no bytes: a null branch has no value.

        The loop is over byte positions (at most 10), never rows; it beats
        one (n, width) uint64 temporary by about 3x.
        """
        # Zigzag; numpy shifts wrap, as the encoding wants for 2**63 - 1.
        z = ((values << 1) ^ (values >> 63)).view(np.uint64)
        width = int(np.searchsorted(_VARINT_LIMITS, z.max(), 'right')) + 1
        matrix = np.empty((len(z), width), np.uint8)
        count = np.ones(len(z), np.int64)
        for k in range(width):  # byte positions, at most 10
            byte = (z >> np.uint64(7 * k)).astype(np.uint8) & 0x7f
            if k < width - 1:
                more = z >= _VARINT_LIMITS[k]
                byte |= more.view(np.uint8) << 7
                count += more
            matrix[:, k] = byte
        if present is not None:
            count[~present] = 0
        self.matrices.append(matrix)
        self.counts.append(count)

    def add_byte(self, column):
        self.matrices.append(column.astype(np.uint8)[:, None])
        self.counts.append(np.ones(len(column), np.int64))

    def take(self):
        """The run as an Arrow binary array (element i = row i's bytes)."""
        n = len(self.counts[0])
        matrix = np.hstack(self.matrices)
        mask = np.hstack([np.arange(m.shape[1]) < c[:, None]
                          for m, c in zip(self.matrices, self.counts)])
        # Often every row uses every byte (1-byte lengths, no nulls): then
        # the matrix is the data as it is.
        data = matrix.reshape(-1) if mask.all() else matrix[mask]
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(sum(self.counts), out=offsets[1:])
        if offsets[-1] >= 2 ** 31:
            raise ValueError('too much data for one block; write fewer rows')
        self.matrices, self.counts = [], []
        buffers = [None, pa.py_buffer(offsets.astype(np.int32)),
                   pa.py_buffer(data)]
        return pa.Array.from_buffers(pa.binary(), n, buffers)


def _payload(array):
    """The bytes of all elements of a binary array, back to back (a
    zero-copy view of its data buffer)."""
    offsets = np.frombuffer(array.buffers()[1], np.int32,
                            count=len(array) + 1, offset=4 * array.offset)
    return array.buffers()[2][int(offsets[0]):int(offsets[-1])]


def _strip_nulls(array, present):
    """A binary array's values with nulls as empty strings (the join kernel
    would turn a null into a null row), and their byte lengths.

    Null slots are normally empty already, so dropping the validity bitmap
    is enough and nothing is copied.
    """
    offsets = np.frombuffer(array.buffers()[1], np.int32,
                            count=len(array) + 1, offset=4 * array.offset)
    lengths = np.diff(offsets).astype(np.int64)
    if present is None:
        return array, lengths
    if lengths[~present].any():
        array = array.fill_null(b'')
        return array, pc.binary_length(array).to_numpy().astype(np.int64)
    return pa.Array.from_buffers(pa.binary(), len(array),
                                 [None] + array.buffers()[1:],
                                 offset=array.offset), lengths


class AvroBlockEncoder:
    """Encodes Arrow tables to Avro binary rows for one record schema.

    The schema is checked once here so that ``encode`` can stay a fixed
    sequence of column operations.
    """

    def __init__(self, schema):
        if not (isinstance(schema, dict) and schema.get('type') == 'record'
                and isinstance(schema.get('fields'), list)):
            raise ValueError('only an Avro record schema is supported')
        self.fields = [_Field(field) for field in schema['fields']]

    def encode(self, table):
        """All rows of ``table`` (columns found by field name), encoded and
        concatenated: a block payload before compression."""
        # Slices bound the temporary matrices and keep every intermediate
        # binary array well inside its 32-bit offsets.
        return b''.join(self.encode_block(table.slice(start, BLOCK_ROWS))
                        for start in range(0, table.num_rows, BLOCK_ROWS))

    def encode_block(self, table):
        """Like ``encode`` but returns a bytes-like buffer, sparing a copy;
        meant for at most ``BLOCK_ROWS`` rows, as every intermediate array
        has 32-bit offsets."""
        n = table.num_rows
        if n == 0:
            return b''
        parts = []
        run = _Bytes()
        for field in self.fields:
            column = self._column(table, field)
            present = None
            if field.union is not None:
                null_byte, value_byte = field.union
                if column.null_count:
                    present = column.is_valid().to_numpy(zero_copy_only=False)
                    run.add_byte(np.where(present, value_byte, null_byte))
                else:
                    run.add_byte(np.full(n, value_byte))
            if field.type == 'long':
                values = column.fill_null(0) if present is not None else column
                run.add_varint(values.to_numpy(), present)
            else:
                column, lengths = _strip_nulls(column, present)
                run.add_varint(lengths, present)
                parts.append(run.take())
                parts.append(column)
        if run.counts:
            parts.append(run.take())
        if not parts:  # a record without fields encodes as nothing
            return b''
        if len(parts) == 1:
            return _payload(parts[0])
        return _payload(pc.binary_join_element_wise(*parts, b''))

    @staticmethod
    def _column(table, field):
        """The field's column as one contiguous int64 or binary array."""
        try:
            column = table.column(field.name)
        except KeyError:
            raise ValueError(f'table has no column {field.name!r}') from None
        if column.null_count and field.union is None:
            raise ValueError(f'column {field.name!r} has nulls but its Avro '
                             f'type is not nullable')
        typ = column.type
        if pa.types.is_null(typ) and field.union is not None:
            column = column.cast(pa.int64() if field.type == 'long'
                                 else pa.binary())
        elif field.type == 'long' and pa.types.is_integer(typ):
            column = column.cast(pa.int64())
        elif field.type == 'string' and (pa.types.is_string(typ)
                                         or pa.types.is_large_string(typ)):
            # Zero-copy for string; binary is what the join kernel takes.
            column = column.cast(pa.binary())
        else:
            raise ValueError(f'column {field.name!r} of type {typ} cannot be '
                             f'written as Avro {field.type!r}')
        return column.combine_chunks()


class AvroFileWriter:
    """Writes an Avro container file from Arrow tables, one or more blocks
    per ``write_table``.

    The handle stays the caller's: blocks are written as soon as they are
    encoded (``flush`` and ``close`` wait for those still being encoded),
    and ``close`` does not close it.
    """

    def __init__(self, handle, schema_dict, codec='deflate', level=1,
                 sync_marker=None):
        if codec not in CODECS:
            raise ValueError(f'unsupported codec {codec!r}; one of {CODECS}')
        if sync_marker is None:
            sync_marker = os.urandom(SYNC_SIZE)
        if len(sync_marker) != SYNC_SIZE:
            raise ValueError(f'sync marker must be {SYNC_SIZE} bytes')
        self.handle = handle
        self.encoder = AvroBlockEncoder(schema_dict)
        self.codec = codec
        self.level = level
        self.sync_marker = bytes(sync_marker)
        metadata = {'avro.schema': json.dumps(schema_dict).encode('utf-8'),
                    'avro.codec': codec.encode('ascii')}
        header = [MAGIC, _long_bytes(len(metadata))]
        for key, value in metadata.items():
            header += [_bytes_bytes(key.encode('utf-8')), _bytes_bytes(value)]
        header += [_long_bytes(0), self.sync_marker]
        handle.write(b''.join(header))
        self._writes = OrderedWrites(self._write_block)

    def write_table(self, table):
        """Blocks are encoded and compressed on every core (zlib and most of
        the encoding run without the GIL), in the background, and written
        in order; ``close`` waits for the last."""
        for start in range(0, table.num_rows, BLOCK_ROWS):
            self._writes.submit(self._encoded_block,
                                table.slice(start, BLOCK_ROWS))

    def _write_block(self, block):
        rows, payload = block
        self.handle.write(_long_bytes(rows) + _long_bytes(len(payload)))
        self.handle.write(memoryview(payload))
        self.handle.write(self.sync_marker)

    def _encoded_block(self, block):
        payload = self.encoder.encode_block(block)
        if self.codec == 'deflate':
            payload = zlib.compress(payload, self.level, wbits=-15)
        return block.num_rows, payload

    def flush(self):
        self._writes.drain()
        if hasattr(self.handle, 'flush'):
            self.handle.flush()

    def close(self):
        self.flush()
