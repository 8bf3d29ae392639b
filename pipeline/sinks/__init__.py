"""Writing trace batches as sharded CSV, Avro and JSON-lines files.

Each format is a Beam ``FileBasedSink``: shards are written under temporary
names and renamed to ``PREFIX-SSSSS-of-NNNNN.<ext>`` only when the whole
write succeeded, so a failed run leaves no final-named partial files.
Elements are Arrow tables (``schema.TRACE_SCHEMA``), a record per batch;
each batch is encoded in slices on every core, in the background while the
pipeline goes on, and written in order.
"""
import json
import math
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pa_csv
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from starcompactor.pipeline.sinks.avro_blocks import AvroFileWriter
from starcompactor.pipeline.shards import FORMATS
from starcompactor.pipeline.threads import OrderedWrites
from starcompactor.transforms.schema import AVRO_SCHEMA, CSV_HEADER

DEFAULT_FORMATS = ('csv', 'avro')
# deflate: the codec every Avro reader has; level 1 keeps it off the critical
# path while still shrinking the (very repetitive) trace several times.
AVRO_CODEC = 'deflate'
AVRO_CODEC_LEVEL = 1
_SLICE_ROWS = 50_000    # below this, one thread encodes a batch


def _slices(table):
    """``table`` cut into one slice per core (or fewer, for small ones)."""
    count = min(os.cpu_count() or 1, math.ceil(table.num_rows / _SLICE_ROWS))
    step = math.ceil(table.num_rows / max(count, 1))
    return [table.slice(start, step)
            for start in range(0, table.num_rows, step)]


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
        return _EncodedFile(handle)

    def write_record(self, csv_file, table):
        for piece in _slices(table):
            csv_file.writes.submit(self._encoded, piece)

    def _encoded(self, table):
        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(table, buffer, self._options)
        return memoryview(buffer.getvalue())

    def close(self, csv_file):
        csv_file.writes.drain()
        super().close(csv_file.handle)


class _EncodedFile:
    """An open shard and its batches being encoded in the background."""

    def __init__(self, handle):
        self.handle = handle
        self.writes = OrderedWrites(handle.write)


class JsonLinesTraceSink(_TraceSink):
    extension = 'jsonl'
    mime_type = 'application/jsonl'

    def write_record(self, handle, table):
        lines = (json.dumps(row, separators=(',', ':'), ensure_ascii=False)
                 for row in table.to_pylist())
        handle.write(('\n'.join(lines) + '\n').encode('utf-8'))


class AvroTraceSink(_TraceSink):
    """Avro container files, written a column at a time (``avro_blocks``)."""
    extension = 'avro'
    mime_type = 'application/avro'

    def open(self, temp_path):
        return AvroFileWriter(super().open(temp_path), AVRO_SCHEMA,
                              AVRO_CODEC, AVRO_CODEC_LEVEL)

    def write_record(self, avro_file, table):
        avro_file.write_table(table)

    def close(self, avro_file):
        avro_file.close()
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
