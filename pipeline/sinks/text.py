"""CSV and JSON-lines trace shards."""
import json

import pyarrow as pa
import pyarrow.csv as pa_csv

from starcompactor.pipeline.sinks.base import TraceSink, slices
from starcompactor.pipeline.threads import OrderedWrites


class _EncodedFile:
    """An open shard and its batches being encoded in the background."""

    def __init__(self, handle):
        self.handle = handle
        self.writes = OrderedWrites(handle.write)


class CsvTraceSink(TraceSink):
    """CSV with the published header in every shard; strings quoted. Each
    batch is encoded in slices on every core, in the background while the
    pipeline goes on, and written in order."""
    extension = 'csv'
    mime_type = 'text/csv'
    _options = pa_csv.WriteOptions(include_header=False)

    def open(self, temp_path):
        handle = super().open(temp_path)
        handle.write(','.join(self.table.csv_header).encode('utf-8')
                     + b'\n')
        return _EncodedFile(handle)

    def write_record(self, csv_file, table):
        for piece in slices(table):
            csv_file.writes.submit(self._encoded, piece)

    def _encoded(self, table):
        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(table, buffer, self._options)
        return memoryview(buffer.getvalue())

    def close(self, csv_file):
        csv_file.writes.drain()
        super().close(csv_file.handle)


class JsonLinesTraceSink(TraceSink):
    extension = 'jsonl'
    mime_type = 'application/jsonl'

    def write_record(self, handle, table):
        lines = (json.dumps(row, separators=(',', ':'), ensure_ascii=False)
                 for row in table.to_pylist())
        handle.write(('\n'.join(lines) + '\n').encode('utf-8'))
