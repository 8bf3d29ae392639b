"""Parquet trace shards, for analysis (pandas, pyarrow, DuckDB, Spark).

Columns are typed as the table's ``parquet_schema`` says
(``transforms/schema.py``: times as UTC timestamps, seconds and sizes as
int64, nullable where the source is), zstd-compressed. The sink's records
are the pipeline's Arrow batches, of any size: they are gathered into row
groups of ``ROW_GROUP_ROWS`` rows, the unit readers work on one thread each
and skip by their statistics, so a shard is a few large row groups rather
than one per batch.
"""
import pyarrow as pa
import pyarrow.parquet as pq

from starcompactor.pipeline.sinks.base import TraceSink

# About DuckDB's own row group size (122,880) and far below pyarrow's
# default (1Mi rows): a shard holds this many rows (some 40 MB) in memory
# before it writes them.
ROW_GROUP_ROWS = 131_072
PARQUET_CODEC = 'zstd'


class ParquetFile:
    """An open shard: its writer, and the rows not yet in a row group.
    Rows reach the file in whole row groups of ``row_group_rows`` rows;
    ``close`` writes the rest as the last, smaller one."""

    def __init__(self, handle, schema, row_group_rows=ROW_GROUP_ROWS):
        self.handle = handle
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.writer = pq.ParquetWriter(handle, schema,
                                       compression=PARQUET_CODEC)
        self.pending, self.pending_rows = [], 0

    def add(self, table):
        # Typed now: the strings the cast reads are freed with the batch.
        self.pending.append(table.cast(self.schema))
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.row_group_rows:
            self._write(self.pending_rows
                        - self.pending_rows % self.row_group_rows)

    def _write(self, rows):
        """The first ``rows`` pending rows into row groups."""
        pending = pa.concat_tables(self.pending)
        self.writer.write_table(pending.slice(0, rows),
                                row_group_size=self.row_group_rows)
        rest = pending.slice(rows)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self):
        if self.pending_rows:
            self._write(self.pending_rows)
        self.writer.close()


class ParquetTraceSink(TraceSink):
    extension = 'parquet'
    mime_type = 'application/vnd.apache.parquet'

    def open(self, temp_path):
        return ParquetFile(super().open(temp_path),
                           self.table.parquet_schema)

    def write_record(self, parquet_file, table):
        parquet_file.add(table)

    def close(self, parquet_file):
        parquet_file.close()
        super().close(parquet_file.handle)
