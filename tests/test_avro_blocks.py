"""The columnar Avro writer must produce files any Avro reader (here
fastavro) reads back as exactly the rows of the table written."""
import io
import json
import uuid

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from starcompactor.pipeline.sinks.avro_blocks import (
    BLOCK_ROWS, AvroBlockEncoder, AvroFileWriter)
from starcompactor.transforms.schema import AVRO_SCHEMA, TRACE_SCHEMA

SYNC = bytes(range(16))

# Every supported field type, unions in both branch orders.
EDGE_SCHEMA = {
    'type': 'record', 'name': 'Edge',
    'fields': [
        {'name': 's', 'type': 'string'},
        {'name': 'l', 'type': 'long'},
        {'name': 'ns', 'type': ['null', 'string']},
        {'name': 'sn', 'type': ['string', 'null']},
        {'name': 'nl', 'type': ['null', 'long']},
        {'name': 'ln', 'type': ['long', 'null']},
    ],
}
EDGE_ARROW = pa.schema([('s', pa.string()), ('l', pa.int64()),
                        ('ns', pa.string()), ('sn', pa.string()),
                        ('nl', pa.int64()), ('ln', pa.int64())])

STRINGS = ['', 'a', 'héllo', '日本語テキスト', 'emoji \U0001F600', 'x' * 63,
           'x' * 64, 'é' * 40, 'y' * 127, 'y' * 128, 'z' * 8191,
           'z' * 8192, 'w' * 20000, '\x00nul inside\x00']
LONGS = [0, 1, -1, 63, -64, 64, -65, 127, 128, 8191, 8192, -8193,
         2 ** 31, -2 ** 31, 2 ** 62, -2 ** 62, 2 ** 63 - 1, -2 ** 63,
         1456833600]


def edge_rows():
    """Each edge value in each column, nulls interleaved in the nullable
    ones."""
    n = max(len(STRINGS), len(LONGS)) * 2
    rows = []
    for i in range(n):
        s = STRINGS[i % len(STRINGS)]
        v = LONGS[i % len(LONGS)]
        rows.append({'s': s, 'l': v,
                     'ns': None if i % 3 == 0 else s,
                     'sn': None if i % 4 == 1 else STRINGS[-1 - i % 5],
                     'nl': None if i % 2 == 0 else v,
                     'ln': None if i % 5 == 2 else -v if v > -2 ** 63 else v})
    return rows


def trace_table(n, seed=0):
    """Rows shaped like the trace: uuids, a few event names, ISO times,
    ints, masked hex ids, and nulls where the schema allows them."""
    rng = np.random.default_rng(seed)
    uuids = [str(uuid.UUID(int=int(x))) for x in
             rng.integers(0, 2 ** 62, n // 10 + 1)]
    events = [f'compute_event_{i}' for i in range(20)]
    hexes = [f'{int(x):032x}' for x in rng.integers(0, 2 ** 62, 50)]
    start = rng.integers(1456833600, 1556833600, n)
    duration = rng.integers(0, 100000, n)

    def iso(seconds):
        return [s + 'Z' for s in
                np.datetime_as_string(seconds.astype('datetime64[s]'))]

    def sometimes_null(values, p):
        return pa.array(values, mask=rng.random(n) < p)

    columns = {
        'instance_uuid': [uuids[i] for i in rng.integers(0, len(uuids), n)],
        'event': sometimes_null(
            [events[i] for i in rng.integers(0, 20, n)], 0.1),
        'start_time': iso(start),
        'start_sec': start,
        'finish_time': iso(start + duration),
        'finish_sec': start + duration,
        'event_duration': duration,
        'result': sometimes_null(
            ['Success' if x else 'Error' for x in rng.random(n) < 0.9], 0.1),
        'memory_mb': sometimes_null(rng.choice([512, 2048, 196608], n), 0.2),
        'disk_gb': sometimes_null(rng.choice([0, 20, 240], n), 0.2),
        'vcpus': sometimes_null(rng.choice([1, 2, 48], n), 0.2),
        'instance_name': sometimes_null(
            [hexes[i] for i in rng.integers(0, 50, n)], 0.2),
        'user_id': sometimes_null(
            [hexes[i] for i in rng.integers(0, 50, n)], 0.2),
        'project_id': sometimes_null(
            [hexes[i] for i in rng.integers(0, 50, n)], 0.2),
        'host_name_physical': sometimes_null(
            [hexes[i] for i in rng.integers(0, 50, n)], 0.2),
    }
    return pa.table(columns, schema=TRACE_SCHEMA)


def write(tables, schema, **kwargs):
    buffer = io.BytesIO()
    writer = AvroFileWriter(buffer, schema, **kwargs)
    for table in tables:
        writer.write_table(table)
    writer.close()
    return buffer.getvalue()


def read(data):
    return list(fastavro.reader(io.BytesIO(data)))


def schemaless(schema, rows):
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    for row in rows:
        fastavro.schemaless_writer(buffer, parsed, row)
    return buffer.getvalue()


@pytest.mark.parametrize('codec', ['deflate', 'null'])
def test_trace_round_trip(codec):
    table = trace_table(3000)
    assert table.column('event').null_count > 0
    assert table.column('memory_mb').null_count > 0
    assert read(write([table], AVRO_SCHEMA, codec=codec)) == table.to_pylist()


@pytest.mark.parametrize('codec', ['deflate', 'null'])
def test_edge_values_round_trip(codec):
    rows = edge_rows()
    table = pa.Table.from_pylist(rows, schema=EDGE_ARROW)
    assert read(write([table], EDGE_SCHEMA, codec=codec)) == rows


def test_encode_matches_fastavro_bytes():
    rows = edge_rows()
    table = pa.Table.from_pylist(rows, schema=EDGE_ARROW)
    assert AvroBlockEncoder(EDGE_SCHEMA).encode(table) == schemaless(
        EDGE_SCHEMA, rows)

    trace = trace_table(200)
    assert AvroBlockEncoder(AVRO_SCHEMA).encode(trace) == schemaless(
        AVRO_SCHEMA, trace.to_pylist())


def test_encode_of_one_record_per_type():
    cases = [('string', ''), ('string', 'é' * 64), ('long', -1),
             ('long', 2 ** 62), (['null', 'long'], None),
             (['long', 'null'], None), (['long', 'null'], 5),
             (['string', 'null'], 'ü'), (['null', 'string'], '')]
    for avro_type, value in cases:
        schema = {'type': 'record', 'name': 'One',
                  'fields': [{'name': 'f', 'type': avro_type}]}
        arrow_type = pa.string() if 'string' in avro_type else pa.int64()
        table = pa.table({'f': pa.array([value], arrow_type)})
        expected = schemaless(schema, [{'f': value}])
        assert AvroBlockEncoder(schema).encode(table) == expected, avro_type


def test_chunked_and_sliced_columns():
    rows = edge_rows()
    whole = pa.Table.from_pylist(rows, schema=EDGE_ARROW)
    chunked = pa.concat_tables(
        [whole.slice(0, 5), whole.slice(5, 1), whole.slice(6)])
    assert chunked.column('s').num_chunks == 3
    assert read(write([chunked], EDGE_SCHEMA)) == rows

    sliced = whole.slice(7, 11)
    assert read(write([sliced], EDGE_SCHEMA)) == rows[7:18]
    assert AvroBlockEncoder(EDGE_SCHEMA).encode(sliced) == schemaless(
        EDGE_SCHEMA, rows[7:18])


def test_null_slots_with_bytes_behind_them():
    # Arrow allows a null string slot to span bytes; they must not leak.
    values = pa.array(['ab', 'cd', 'ef'])
    validity = pa.array([True, False, True]).buffers()[1]
    masked = pa.Array.from_buffers(pa.string(), 3,
                                   [validity] + values.buffers()[1:])
    schema = {'type': 'record', 'name': 'R',
              'fields': [{'name': 'f', 'type': ['null', 'string']}]}
    table = pa.table({'f': masked})
    assert read(write([table], schema)) == [{'f': 'ab'}, {'f': None},
                                            {'f': 'ef'}]


def test_other_arrow_types_of_the_same_values():
    schema = {'type': 'record', 'name': 'R',
              'fields': [{'name': 'ls', 'type': 'string'},
                         {'name': 'i', 'type': 'long'},
                         {'name': 'none', 'type': ['null', 'long']},
                         {'name': 'nones', 'type': ['string', 'null']}]}
    table = pa.table({'ls': pa.array(['a', 'bé'], pa.large_string()),
                      'i': pa.array([-3, 2 ** 31 - 1], pa.int32()),
                      'none': pa.nulls(2), 'nones': pa.nulls(2),
                      'ignored': [1.5, 2.5]})
    assert read(write([table], schema)) == [
        {'ls': 'a', 'i': -3, 'none': None, 'nones': None},
        {'ls': 'bé', 'i': 2 ** 31 - 1, 'none': None, 'nones': None}]


def test_several_tables_and_blocks():
    n = 2 * BLOCK_ROWS + 7
    schema = {'type': 'record', 'name': 'R',
              'fields': [{'name': 'i', 'type': 'long'},
                         {'name': 's', 'type': ['null', 'string']}]}
    values = np.arange(n, dtype=np.int64) * 12345 - 10 ** 9
    strings = pa.array([str(i) for i in range(n)],
                       mask=np.arange(n) % 7 == 0)
    big = pa.table({'i': values, 's': strings})
    small = big.slice(0, 3)
    empty = big.slice(0, 0)
    data = write([small, big, empty, small], schema)

    expected = small.to_pylist() + big.to_pylist() + small.to_pylist()
    assert read(data) == expected
    blocks = [block.num_records
              for block in fastavro.block_reader(io.BytesIO(data))]
    assert blocks == [3, BLOCK_ROWS, BLOCK_ROWS, 7, 3]


def test_empty_table_writes_no_block():
    schema = EDGE_SCHEMA
    empty = pa.Table.from_pylist([], schema=EDGE_ARROW)
    header_only = write([], schema, sync_marker=SYNC)
    assert write([empty], schema, sync_marker=SYNC) == header_only
    assert header_only.endswith(SYNC)
    assert read(header_only) == []
    assert AvroBlockEncoder(schema).encode(empty) == b''


@pytest.mark.parametrize('codec', ['deflate', 'null'])
def test_header_as_fastavro_reads_it(codec):
    reader = fastavro.reader(io.BytesIO(
        write([trace_table(10)], AVRO_SCHEMA, codec=codec)))
    assert reader.codec == codec
    assert reader.metadata['avro.codec'] == codec
    assert json.loads(reader.metadata['avro.schema']) == AVRO_SCHEMA
    assert reader.writer_schema['name'] == 'org.starcompactor.trace.' \
                                           'InstanceEvent'
    assert [f['name'] for f in reader.writer_schema['fields']] == \
        TRACE_SCHEMA.names


def test_null_codec_block_layout():
    table = pa.Table.from_pylist(edge_rows()[:3], schema=EDGE_ARROW)
    payload = AvroBlockEncoder(EDGE_SCHEMA).encode(table)
    data = write([table], EDGE_SCHEMA, codec='null', sync_marker=SYNC)
    header = write([], EDGE_SCHEMA, codec='null', sync_marker=SYNC)
    assert data.startswith(b'Obj\x01')
    counts = io.BytesIO()
    fastavro.schemaless_writer(counts, 'long', 3)
    fastavro.schemaless_writer(counts, 'long', len(payload))
    assert data == header + counts.getvalue() + payload + SYNC


def test_deflate_level_and_random_sync_markers():
    table = trace_table(2000)
    fast = write([table], AVRO_SCHEMA, level=1)
    small = write([table], AVRO_SCHEMA, level=9)
    assert read(fast) == read(small) == table.to_pylist()
    assert len(small) < len(fast)
    assert fast[-16:] != small[-16:]  # os.urandom, not a constant


def test_real_file(tmp_path):
    path = tmp_path / 'trace.avro'
    table = trace_table(500)
    with open(path, 'wb') as handle:
        writer = AvroFileWriter(handle, AVRO_SCHEMA)
        writer.write_table(table)
        writer.flush()
        writer.write_table(table)
        writer.close()
        assert not handle.closed  # the handle is the caller's
    with open(path, 'rb') as handle:
        assert list(fastavro.reader(handle)) == table.to_pylist() * 2


@pytest.mark.parametrize('avro_type', [
    'int', 'double', 'bytes', 'boolean', 'null', ['null', 'int'],
    ['null', 'string', 'long'], ['string', 'long'], ['null'],
    {'type': 'array', 'items': 'long'}, {'type': 'string'},
])
def test_unsupported_field_type(avro_type):
    schema = {'type': 'record', 'name': 'R',
              'fields': [{'name': 'f', 'type': avro_type}]}
    with pytest.raises(ValueError, match='unsupported Avro type'):
        AvroBlockEncoder(schema)
    with pytest.raises(ValueError):
        AvroFileWriter(io.BytesIO(), schema)


@pytest.mark.parametrize('schema', [
    'string', {'type': 'enum', 'name': 'E', 'symbols': ['A']},
    {'type': 'record', 'name': 'R'}, ['null', 'string'],
])
def test_unsupported_schema(schema):
    with pytest.raises(ValueError, match='record'):
        AvroBlockEncoder(schema)


def test_tables_that_do_not_fit_the_schema():
    encoder = AvroBlockEncoder(EDGE_SCHEMA)
    table = pa.Table.from_pylist(edge_rows()[:2], schema=EDGE_ARROW)
    with pytest.raises(ValueError, match="no column 'ln'"):
        encoder.encode(table.drop_columns(['ln']))
    with pytest.raises(ValueError, match="'l' has nulls"):
        encoder.encode(table.set_column(1, 'l', pa.array([1, None])))
    with pytest.raises(ValueError, match="'s' of type int64"):
        encoder.encode(table.set_column(0, 's', pa.array([1, 2])))
    with pytest.raises(ValueError, match="'l' of type double"):
        encoder.encode(table.set_column(1, 'l', pa.array([1.0, 2.0])))


def test_bad_writer_arguments():
    with pytest.raises(ValueError, match='codec'):
        AvroFileWriter(io.BytesIO(), EDGE_SCHEMA, codec='snappy')
    with pytest.raises(ValueError, match='sync marker'):
        AvroFileWriter(io.BytesIO(), EDGE_SCHEMA, sync_marker=b'short')
