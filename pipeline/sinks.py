"""Writing trace batches as sharded CSV, Avro and JSON-lines files.

Each format is a Beam ``FileBasedSink``: shards are written under temporary
names and renamed to ``PREFIX-SSSSS-of-NNNNN.<ext>`` only when the whole
write succeeded, so a failed run leaves no final-named partial files.
Elements are Arrow tables (``schema.TRACE_SCHEMA``), a record per batch.
"""
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pa_csv
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from fastavro import parse_schema
from fastavro.write import Writer as AvroWriter

from starcompactor.transforms.schema import AVRO_SCHEMA, CSV_HEADER

FORMATS = ('csv', 'avro', 'jsonl')
DEFAULT_FORMATS = ('csv', 'avro')
# deflate: the codec every Avro reader has; level 1 keeps it off the critical
# path while still shrinking the (very repetitive) trace several times.
AVRO_CODEC = 'deflate'
AVRO_CODEC_LEVEL = 1
_PARSED_AVRO_SCHEMA = parse_schema(AVRO_SCHEMA)


class _TraceSink(filebasedsink.FileBasedSink):
    extension = None
    mime_type = 'application/octet-stream'

    def __init__(self, prefix, num_shards):
        super().__init__(
            prefix, coder=coders.coders.ToBytesCoder(),
            file_name_suffix='.' + self.extension, num_shards=num_shards,
            mime_type=self.mime_type,
            compression_type=CompressionTypes.UNCOMPRESSED)


class CsvTraceSink(_TraceSink):
    """CSV with the published header in every shard; strings quoted."""
    extension = 'csv'
    mime_type = 'text/csv'
    _options = pa_csv.WriteOptions(include_header=False)

    def open(self, temp_path):
        handle = super().open(temp_path)
        handle.write(','.join(CSV_HEADER).encode('utf-8') + b'\n')
        return handle

    def write_record(self, handle, table):
        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(table, buffer, self._options)
        handle.write(buffer.getvalue().to_pybytes())


class JsonLinesTraceSink(_TraceSink):
    extension = 'jsonl'
    mime_type = 'application/jsonl'

    def write_record(self, handle, table):
        lines = (json.dumps(row, separators=(',', ':'), ensure_ascii=False)
                 for row in table.to_pylist())
        handle.write(('\n'.join(lines) + '\n').encode('utf-8'))


class _AvroFile:
    def __init__(self, handle):
        self.handle = handle
        self.writer = AvroWriter(handle, _PARSED_AVRO_SCHEMA, codec=AVRO_CODEC,
                                 compression_level=AVRO_CODEC_LEVEL)


class AvroTraceSink(_TraceSink):
    extension = 'avro'
    mime_type = 'application/avro'

    def open(self, temp_path):
        return _AvroFile(super().open(temp_path))

    def write_record(self, avro_file, table):
        write = avro_file.writer.write
        for record in table.to_pylist():
            write(record)

    def close(self, avro_file):
        avro_file.writer.flush()
        super().close(avro_file.handle)


SINKS = {'csv': CsvTraceSink, 'avro': AvroTraceSink,
         'jsonl': JsonLinesTraceSink}


class WriteTrace(beam.PTransform):
    """Trace batches -> one sharded file set per format; outputs the file
    names written."""

    def __init__(self, prefix, formats=DEFAULT_FORMATS, num_shards=0):
        super().__init__()
        self.prefix = prefix
        self.formats = tuple(formats)
        self.num_shards = num_shards

    def expand(self, trace):
        written = [
            trace | f'Write{fmt.capitalize()}' >> beam.io.Write(
                SINKS[fmt](self.prefix, self.num_shards))
            for fmt in self.formats]
        return written | 'AllFiles' >> beam.Flatten()
