"""The files of a trace that keeps growing (``instances --follow``): one
shard set per fixed time window, written with Beam's ``fileio.WriteToFiles``
once the window is complete::

    trace tables ── GatherWindow ── CutIntoShards ── WriteToFiles
    (fixed windows)  (one group per window, at its end)

Files are named by ``shards.window_file_name``
(``FOLDER/2024-03-04/20240304T130000Z-00000-of-00002.csv``). WriteToFiles
writes them under ``FOLDER/.writing/`` and moves them to their final names
when the window fires, once (the default trigger: at the watermark, no late
firings). Each format encodes its rows as the batch sinks do (``text``,
``avro_blocks``, ``parquet``).
"""
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.value_provider import StaticValueProvider

from starcompactor.pipeline import shards
from starcompactor.pipeline.sinks.avro import AVRO_CODEC, AVRO_CODEC_LEVEL
from starcompactor.pipeline.sinks.avro_blocks import AvroFileWriter
from starcompactor.pipeline.sinks.parquet import ParquetFile
from starcompactor.pipeline.sinks.text import (
    csv_header, csv_lines, json_lines)
from starcompactor.transforms.buckets import concat
from starcompactor.transforms.schema import INSTANCE_TRACE

# Rows of a window in the order of its files: the same rows give the same
# files, whichever polls brought them (a window redone after a restart).
_ROW_ORDER = [('finish_time', 'ascending'), ('start_time', 'ascending'),
              ('instance_uuid', 'ascending'), ('event', 'ascending')]


class _WindowFile(fileio.FileSink):
    """One file of one format. WriteToFiles opens and closes the file; the
    sink encodes the Arrow tables of ``(destination, table)`` records."""
    mime_type = 'application/octet-stream'

    def __init__(self, table):
        self.table = table
        self.handle = None

    def create_metadata(self, destination, full_file_name):
        return fileio.FileMetadata(mime_type=self.mime_type,
                            compression_type=CompressionTypes.UNCOMPRESSED)

    def open(self, fh):
        self.handle = fh

    def write(self, record):
        _, table = record
        if table.num_rows:
            self.write_table(table)

    def write_table(self, table):
        raise NotImplementedError

    def flush(self):
        pass


class _CsvFile(_WindowFile):
    mime_type = 'text/csv'

    def open(self, fh):
        super().open(fh)
        fh.write(csv_header(self.table))

    def write_table(self, table):
        self.handle.write(csv_lines(table))


class _JsonLinesFile(_WindowFile):
    mime_type = 'application/jsonl'

    def write_table(self, table):
        self.handle.write(json_lines(table))


class _AvroFile(_WindowFile):
    mime_type = 'application/avro'

    def open(self, fh):
        super().open(fh)
        self.writer = AvroFileWriter(fh, self.table.avro_schema, AVRO_CODEC,
                                     AVRO_CODEC_LEVEL)

    def write_table(self, table):
        self.writer.write_table(table)

    def flush(self):
        self.writer.flush()


class _ParquetFile(_WindowFile):
    mime_type = 'application/vnd.apache.parquet'

    def open(self, fh):
        super().open(fh)
        self.file = ParquetFile(fh, self.table.parquet_schema)

    def write_table(self, table):
        self.file.add(table)

    def flush(self):
        # WriteToFiles flushes once, right before it closes the file: the
        # footer goes now.
        if self.file is not None:
            self.file.close()
            self.file = None


WINDOW_FILES = {'csv': _CsvFile, 'avro': _AvroFile, 'jsonl': _JsonLinesFile,
                'parquet': _ParquetFile}


def _destination(fmt, shard, total):
    return f'{fmt}-{shard}-{total}'


def _parse_destination(destination):
    fmt, shard, total = destination.split('-')
    return fmt, int(shard), int(total)


class _SinkFor:
    """WriteToFiles' ``sink``: the file sink of a record's format."""

    def __init__(self, table):
        self.table = table

    def __call__(self, destination):
        fmt, _, _ = _parse_destination(destination)
        return WINDOW_FILES[fmt](self.table)


class _NameInDayFolder:
    """WriteToFiles' ``file_naming``: the window file's name
    (``shards.window_file_name``), its day folder made (WriteToFiles makes
    only ``folder`` itself before it moves files there)."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self, window, pane, shard_index, total_shards, compression,
                 destination):
        fmt, shard, total = _parse_destination(destination)
        name = shards.window_file_name(window.start.micros // 1_000_000,
                                       shard, total, fmt)
        os.makedirs(os.path.join(self.folder, os.path.dirname(name)),
                    exist_ok=True)
        return name


class GatherWindow(beam.PTransform):
    """Everything of one window, as one list, once the window is complete
    (the default trigger: at the watermark, once)."""

    def expand(self, items):
        return (items
                | 'ByWindow' >> beam.Map(lambda item: (None, item))
                | 'Group' >> beam.GroupByKey()
                | 'Items' >> beam.MapTuple(lambda _, group: list(group)))


def cut_into_shards(tables, formats, num_shards, schema):
    """All trace tables of one window -> ``(destination, table)`` records:
    up to ``num_shards`` shards of about the same rows, in every format."""
    rows = concat(tables, schema).sort_by(_ROW_ORDER)
    total = max(1, min(num_shards, rows.num_rows))
    bounds = [round(i * rows.num_rows / total) for i in range(total + 1)]
    for shard, (start, end) in enumerate(zip(bounds, bounds[1:])):
        piece = rows.slice(start, end - start)
        for fmt in formats:
            yield _destination(fmt, shard, total), piece


class WriteWindowFiles(beam.PTransform):
    """Trace tables in fixed windows -> the files of each window in
    ``folder``, written when the window is complete; outputs a
    ``fileio.FileResult`` per file (``file_name`` relative to ``folder``),
    in the file's window."""

    def __init__(self, folder, formats, num_shards=1, table=INSTANCE_TRACE):
        super().__init__()
        unknown = sorted(set(formats) - set(WINDOW_FILES))
        if unknown:
            raise ValueError(f'no window files for {", ".join(unknown)}')
        self.folder = folder
        self.formats = tuple(formats)
        self.num_shards = max(1, num_shards)
        self.table = table

    def expand(self, trace):
        return (trace
                | 'GatherWindow' >> GatherWindow()
                | 'CutIntoShards' >> beam.FlatMap(
                    cut_into_shards, self.formats, self.num_shards,
                    self.table.schema)
                | 'WriteToFiles' >> fileio.WriteToFiles(
                    self.folder, file_naming=_NameInDayFolder(self.folder),
                    destination=lambda record: record[0],
                    sink=_SinkFor(self.table),
                    temp_directory=StaticValueProvider(
                        str, os.path.join(self.folder,
                                          shards.WINDOW_TEMPORARY))))
