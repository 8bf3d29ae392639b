"""A trace's shards as Arrow record batches of the columns the report reads,
one batch at a time: Parquet through pyarrow (only those columns; times
come as UTC timestamps, which the aggregate takes as they are), CSV through
pyarrow's streaming reader, Avro through fastavro.

CSV is read in blocks of ``CSV_BLOCK_BYTES`` = 1 MiB, with explicit column
types from ``transforms.schema``; the reader's read-ahead holds some 40
blocks, about 40 MiB, and grows with the block size. Avro is read
``AVRO_BATCH_ROWS`` = 50,000 records per batch, Parquet
``PARQUET_BATCH_ROWS`` = 65,536 rows.
"""
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from starcompactor.pipeline.errors import UserError
from starcompactor.transforms.schema import TRACE_COLUMNS

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
_TYPE = {field: typ for _, field, typ in TRACE_COLUMNS}
_HEADER = {field: header for header, field, _ in TRACE_COLUMNS}
_SCHEMA = pa.schema([(field, _TYPE[field]) for field in FIELDS])


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def batches(path, fmt):
    """The record batches of one shard, columns named as in ``FIELDS``."""
    return {'parquet': parquet_batches, 'csv': csv_batches,
            'avro': avro_batches}[fmt](path)


def parquet_batches(path):
    try:
        with pq.ParquetFile(path) as parquet_file:
            names = parquet_file.schema_arrow.names
            missing = [f for f in FIELDS if f not in names]
            if missing:
                raise UserError(f'{path}: not a trace: no field '
                                f'{", ".join(missing)}')
            yield from parquet_file.iter_batches(PARQUET_BATCH_ROWS,
                                                 columns=list(FIELDS))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f'{path}: not a readable trace Parquet file: '
                        f'{first_line(e)}')


def csv_batches(path):
    options = pa_csv.ConvertOptions(
        column_types={_HEADER[f]: _TYPE[f] for f in FIELDS},
        include_columns=[_HEADER[f] for f in FIELDS],
        # Strings are quoted: "" is an empty string, an empty field null.
        strings_can_be_null=True, quoted_strings_can_be_null=False)
    try:
        reader = pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=options)
        for batch in reader:
            yield batch.rename_columns(list(FIELDS))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f'{path}: not a readable trace CSV: {first_line(e)}')


def avro_batches(path):
    import fastavro
    try:
        with open(path, 'rb') as handle:
            reader = fastavro.reader(handle)
            fields = {f['name'] for f in reader.writer_schema['fields']}
            missing = [f for f in FIELDS if f not in fields]
            if missing:
                raise UserError(f'{path}: not a trace: no field '
                                f'{", ".join(missing)}')
            chunk = []
            for record in reader:
                chunk.append(record)
                if len(chunk) == AVRO_BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist(chunk, schema=_SCHEMA)
                    chunk = []
            if chunk:
                yield pa.RecordBatch.from_pylist(chunk, schema=_SCHEMA)
    except (ValueError, EOFError, OSError, KeyError, TypeError,
            pa.ArrowException) as e:
        raise UserError(f'{path}: not a readable trace Avro file: '
                        f'{first_line(e)}')
