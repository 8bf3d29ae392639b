"""CSV and JSON-lines trace shards.

The encodings (``csv_header``, ``csv_lines``, ``json_lines``) are the
formats' one definition: these sinks and the window files of ``--follow``
(``sinks.windowed``) write them alike.
"""
import json

import pyarrow as pa
import pyarrow.csv as pa_csv

from starcompactor.pipeline.sinks.base import TraceSink, slices
from starcompactor.pipeline.threads import OrderedWrites

_CSV_ROWS = pa_csv.WriteOptions(include_header=False)


def csv_header(table):
    """The header line of a CSV shard of trace table ``table``
    (``schema.TraceTable``)."""
    return ','.join(table.csv_header).encode('utf-8') + b'\n'


def csv_lines(table):
    """The rows of an Arrow table as CSV lines, strings quoted."""
    buffer = pa.BufferOutputStream()
    pa_csv.write_csv(table, buffer, _CSV_ROWS)
    return memoryview(buffer.getvalue())


def json_lines(table):
    """The rows of an Arrow table as JSON lines (its field names)."""
    lines = (json.dumps(row, separators=(',', ':'), ensure_ascii=False)
             for row in table.to_pylist())
    return ('\n'.join(lines) + '\n').encode('utf-8')


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

    def open(self, temp_path):
        handle = super().open(temp_path)
        handle.write(csv_header(self.table))
        return _EncodedFile(handle)

    def write_record(self, csv_file, table):
        for piece in slices(table):
            csv_file.writes.submit(csv_lines, piece)

    def close(self, csv_file):
        csv_file.writes.drain()
        super().close(csv_file.handle)


class JsonLinesTraceSink(TraceSink):
    extension = 'jsonl'
    mime_type = 'application/jsonl'

    def write_record(self, handle, table):
        handle.write(json_lines(table))
