"""Hash-partitioning of Arrow tables, so that a join can run per bucket.

Rows are not Beam elements here: a batch of rows is. To join batches, each
batch is cut into one piece per bucket of its join key, keyed by the bucket
number; a ``GroupByKey`` on that number brings all rows with the same key
together in one bucket, where ``pyarrow.Table.join`` joins them.

The bucket of a key must be the same in every process (a runner shuffles
between workers), so it is computed from the key's bytes with integer
arithmetic, never with Python's per-process salted ``hash()``.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MIX = np.uint64(1_000_003)
_TAIL_BYTES = 8


def _tail_codes(array):
    """A code per string of a StringArray, from its length and its last
    eight bytes, computed for the whole array at once (no Python per value,
    no hash table). Buckets need spread, not uniqueness: uuids end in
    random hex digits. Nulls get code 0 (they never match in a join)."""
    array = array.cast(pa.string())   # a chunk; large strings are not keys
    offsets = np.frombuffer(array.buffers()[1], np.int32,
                            len(array) + 1, array.offset * 4)
    data = array.buffers()[2]
    data = (np.frombuffer(data, np.uint8) if data is not None
            else np.zeros(0, np.uint8))
    ends = offsets[1:].astype(np.int64)
    lengths = ends - offsets[:-1]
    codes = np.zeros(len(array), np.uint64)
    whole = lengths >= _TAIL_BYTES
    if whole.any():
        # Every 8-byte window of the data, as an unaligned uint64 view.
        windows = np.ndarray((len(data) - _TAIL_BYTES + 1,), '<u8', data,
                             strides=(1,))
        codes[whole] = windows[ends[whole] - _TAIL_BYTES]
    short = np.flatnonzero((lengths > 0) & ~whole)
    for row in short:   # short keys are rare (and few bytes)
        tail = data[ends[row] - lengths[row]:ends[row]].tobytes()
        codes[row] = int.from_bytes(tail, 'little')
    codes = codes * _MIX + lengths.astype(np.uint64)
    if array.null_count:
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        codes = np.where(valid, codes, np.uint64(0))
    return codes


def _mixed(codes):
    """MurmurHash3's 64-bit finalizer: every input bit moves the low bits
    that pick the bucket."""
    codes = codes ^ (codes >> np.uint64(33))
    codes = codes * np.uint64(0xFF51AFD7ED558CCD)
    codes = codes ^ (codes >> np.uint64(33))
    codes = codes * np.uint64(0xC4CEB9FE1A85EC53)
    return codes ^ (codes >> np.uint64(33))


def _string_codes(column):
    """``_tail_codes`` of a string or dictionary column (a dictionary's
    values get the codes their text would: both kinds meet in a join)."""
    if isinstance(column, pa.ChunkedArray):
        if not column.num_chunks:
            return np.zeros(0, np.uint64)
        return np.concatenate([_string_codes(chunk)
                               for chunk in column.chunks])
    if pa.types.is_dictionary(column.type):
        codes = np.append(_tail_codes(column.dictionary), np.uint64(0))
        indices = column.indices.fill_null(len(column.dictionary))
        return codes[indices.to_numpy(zero_copy_only=False)]
    return _tail_codes(column)


def dictionary_encoded(column):
    """``column`` as one DictionaryArray (as it is, if it is one)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    if isinstance(column, pa.ChunkedArray):
        column = column.unify_dictionaries().combine_chunks() \
            if column.num_chunks != 1 else column.chunk(0)
    return column


def _int_codes(column):
    values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
    return values.astype(np.uint64)


def bucket_numbers(table, key_columns, num_buckets):
    """The bucket of every row of ``table`` for the given key columns."""
    codes = np.zeros(table.num_rows, dtype=np.uint64)
    for name in key_columns:
        column = table.column(name)
        column_codes = (_int_codes(column) if pa.types.is_integer(column.type)
                        else _string_codes(column))
        codes = codes * _MIX + column_codes   # wraps around in uint64: fine
    return (_mixed(codes) % np.uint64(num_buckets)).astype(np.int64)


def split_into_buckets(table, key_columns, num_buckets):
    """Yield ``(bucket, table)`` for each non-empty bucket of ``table``.

    Pieces are copied with ``take``: a sliced table would drag its parent's
    whole buffers along when a runner pickles it.
    """
    if table.num_rows == 0:
        return
    buckets = bucket_numbers(table, key_columns, num_buckets)
    order = np.argsort(buckets, kind='stable')
    ordered = buckets[order]
    starts = np.flatnonzero(np.diff(ordered)) + 1
    for rows in np.split(order, starts):
        yield int(buckets[rows[0]]), table.take(pa.array(rows))


def concat(tables, schema):
    """One table from the pieces a grouping delivered (maybe none)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).combine_chunks()


def drop_duplicates(table, keys):
    """``table`` without repeated keys (the first row of each key is kept),
    and how many rows were dropped."""
    if table.num_rows < 2:
        return table, 0
    distinct = table.group_by(keys).aggregate([])
    if distinct.num_rows == table.num_rows:
        return table, 0
    row = '_row'
    first = (table.select(keys)
             .append_column(row, pa.array(np.arange(table.num_rows)))
             .group_by(keys, use_threads=False)
             .aggregate([(row, 'min')]))
    rows = pc.sort_indices(first.column(f'{row}_min'))
    kept = table.take(first.column(f'{row}_min').take(rows))
    return kept, table.num_rows - kept.num_rows
