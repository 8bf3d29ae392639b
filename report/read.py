"""A trace's shards as Arrow record batches of the columns the report reads,
one batch at a time: Parquet through pyarrow (only those columns; times
come as UTC timestamps, which the aggregate takes as they are), CSV through
pyarrow's streaming reader, Avro through fastavro.

CSV is read in blocks of ``CSV_BLOCK_BYTES`` = 1 MiB, with explicit column
types from ``transforms.schema``; the reader's read-ahead holds some 40
blocks, about 40 MiB, and grows with the block size. Avro is read
``AVRO_BATCH_ROWS`` = 50,000 records per batch, Parquet
``PARQUET_BATCH_ROWS`` = 65,536 rows.

A v0.3 table holds the flavor figures in PROPERTIES, a JSON object as
text: its batches are read with that column instead and handed on as v0.2
batches, ``FIGURES`` taken from it (``property_figures``: a whole number
under the key of the v0.2 field, else null).
"""
import csv
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from starcompactor.pipeline.errors import UserError
from starcompactor.transforms.schema import INSTANCE_TRACES

CSV_BLOCK_BYTES = 1 << 20
AVRO_BATCH_ROWS = 50_000
PARQUET_BATCH_ROWS = 65_536
# When a trace has several, the first is read: Parquet is typed and
# columnar, the cheapest to read.
FORMATS = ('parquet', 'csv', 'avro')

# The columns the report reads, by Avro/JSON field name.
FIELDS = ('instance_uuid', 'event', 'start_time', 'finish_time',
          'event_duration', 'result', 'memory_mb', 'vcpus', 'user_id',
          'project_id', 'host_name_physical')
# What a v0.3 table has in PROPERTIES instead, and so what is read there.
FIGURES = ('memory_mb', 'vcpus')
V03_FIELDS = tuple(f for f in FIELDS if f not in FIGURES) + ('properties',)
_COLUMNS = [column for table in INSTANCE_TRACES.values()
            for column in table.columns]
_TYPE = {field: typ for _, field, typ in _COLUMNS}
_HEADER = {field: header for header, field, _ in _COLUMNS}


def _fields(has_properties):
    return V03_FIELDS if has_properties else FIELDS


def _schema(fields):
    return pa.schema([(field, _TYPE[field]) for field in fields])


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def batches(path, fmt):
    """The record batches of one shard, columns named as in ``FIELDS``."""
    reader = {'parquet': parquet_batches, 'csv': csv_batches,
              'avro': avro_batches}[fmt]
    for batch in reader(path):
        yield (with_figures(path, batch)
               if 'properties' in batch.schema.names else batch)


def _json_object(text):
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f'a JSON {type(value).__name__}, not an object')
    return value


def _whole_number(value):
    return value if type(value) is int else None


def property_figures(path, properties, keys):
    """An int64 array per key of ``keys``: each row's whole number under
    that key of its PROPERTIES (a JSON object as text), null where the
    object has none (bare metal: no flavor; a node's capabilities). The
    objects repeat (one per flavor, or per lease): each distinct one is
    parsed once."""
    encoded = pc.dictionary_encode(properties)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    try:
        objects = [_json_object(text)
                   for text in encoded.dictionary.to_pylist()]
    except (ValueError, TypeError) as e:
        raise UserError(f'{path}: a PROPERTIES value is no JSON object: '
                        f'{first_line(e)}') from None
    return [pa.array([_whole_number(o.get(key)) for o in objects],
                     pa.int64()).take(encoded.indices) for key in keys]


def with_figures(path, batch):
    """A batch of ``V03_FIELDS`` as one of ``FIELDS``: ``FIGURES`` from
    PROPERTIES."""
    figures = dict(zip(FIGURES, property_figures(
        path, batch.column('properties'), FIGURES)))
    return pa.RecordBatch.from_arrays(
        [figures[f] if f in figures else batch.column(f) for f in FIELDS],
        names=list(FIELDS))


def parquet_batches(path):
    try:
        with pq.ParquetFile(path) as parquet_file:
            names = parquet_file.schema_arrow.names
            fields = _fields('properties' in names)
            missing = [f for f in fields if f not in names]
            if missing:
                raise UserError(f'{path}: not a trace: no field '
                                f'{", ".join(missing)}')
            yield from parquet_file.iter_batches(PARQUET_BATCH_ROWS,
                                                 columns=list(fields))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f'{path}: not a readable trace Parquet file: '
                        f'{first_line(e)}')


def _csv_header(path):
    with open(path, newline='', encoding='utf-8') as f:
        return next(csv.reader(f), [])


def csv_batches(path):
    try:
        fields = _fields(_HEADER['properties'] in _csv_header(path))
        options = pa_csv.ConvertOptions(
            column_types={_HEADER[f]: _TYPE[f] for f in fields},
            include_columns=[_HEADER[f] for f in fields],
            # Strings are quoted: "" is an empty string, an empty field null.
            strings_can_be_null=True, quoted_strings_can_be_null=False)
        reader = pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=options)
        for batch in reader:
            yield batch.rename_columns(list(fields))
    except (pa.ArrowException, OSError, ValueError, csv.Error) as e:
        raise UserError(f'{path}: not a readable trace CSV: {first_line(e)}')


def avro_batches(path):
    import fastavro
    try:
        with open(path, 'rb') as handle:
            reader = fastavro.reader(handle)
            names = {f['name'] for f in reader.writer_schema['fields']}
            schema = _schema(_fields('properties' in names))
            missing = [f for f in schema.names if f not in names]
            if missing:
                raise UserError(f'{path}: not a trace: no field '
                                f'{", ".join(missing)}')
            chunk = []
            for record in reader:
                chunk.append(record)
                if len(chunk) == AVRO_BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist(chunk, schema=schema)
                    chunk = []
            if chunk:
                yield pa.RecordBatch.from_pylist(chunk, schema=schema)
    except (ValueError, EOFError, OSError, KeyError, TypeError,
            pa.ArrowException) as e:
        raise UserError(f'{path}: not a readable trace Avro file: '
                        f'{first_line(e)}')
