"""Hash-partitioning of Arrow tables, so that a join can run per bucket.

Rows are not Beam elements here: a batch of rows is. To join batches with a
CoGroupByKey, each batch is cut into one piece per bucket of its join key,
keyed by the bucket number; all rows with the same key meet in one bucket and
are joined there with ``pyarrow.Table.join``.

The bucket of a key must be the same in every process (a runner shuffles
between workers), so it is computed with CRC-32 and integer arithmetic, never
with Python's per-process salted ``hash()``.
"""
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MIX = np.uint64(1_000_003)


def _string_codes(column):
    """CRC-32 of each value, computed once per distinct value."""
    encoded = dictionary_encoded(column)
    distinct = encoded.dictionary.to_pylist()
    codes = np.fromiter(
        (zlib.crc32(value.encode('utf-8')) for value in distinct),
        dtype=np.uint64, count=len(distinct))
    # Null keys never match in a join; send them to code 0.
    codes = np.append(codes, np.uint64(0))
    indices = encoded.indices.fill_null(len(distinct))
    return codes[indices.to_numpy(zero_copy_only=False)]


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
    return (codes % np.uint64(num_buckets)).astype(np.int64)


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
    """One table from the pieces a CoGroupByKey delivered (maybe none)."""
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
