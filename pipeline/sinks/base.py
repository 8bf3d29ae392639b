"""What every trace sink shares: Beam's ``FileBasedSink`` (temporary files,
renamed to their final names only when the whole write succeeded), one Arrow
table per record, and a temporary folder that the job names and removes."""
import math
import os

from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from starcompactor.pipeline import shards

_SLICE_ROWS = 50_000    # below this, one thread encodes a batch


def slices(table):
    """``table`` cut into one slice per core (or fewer, for small ones), to
    be encoded on every core at once."""
    count = min(os.cpu_count() or 1, math.ceil(table.num_rows / _SLICE_ROWS))
    step = math.ceil(table.num_rows / max(count, 1))
    return [table.slice(start, step)
            for start in range(0, table.num_rows, step)]


class TraceSink(filebasedsink.FileBasedSink):
    """A sink of one trace table (``schema.TraceTable``) in one format
    (``extension``). Temporary shards
    go to ``shards.temporary_folder(prefix, run_id)/<extension>`` rather than
    Beam's ``beam-temp-*`` folders, so that the job can remove them after a
    failed or interrupted run without knowing Beam's naming."""
    extension = None
    mime_type = 'application/octet-stream'

    def __init__(self, prefix, num_shards, run_id, table):
        # Beam's FileSystems.join makes local paths absolute, so a relative
        # prefix would never match the shard names it lists at finalize.
        if FileSystems.get_scheme(prefix) is None:
            prefix = os.path.abspath(prefix)
        super().__init__(
            prefix, coder=coders.coders.ToBytesCoder(),
            file_name_suffix='.' + self.extension, num_shards=num_shards,
            mime_type=self.mime_type,
            compression_type=CompressionTypes.UNCOMPRESSED)
        self.run_id = run_id
        self.table = table

    def _create_temp_dir(self, file_path_prefix):
        return FileSystems.join(
            shards.temporary_folder(file_path_prefix, self.run_id),
            self.extension)
