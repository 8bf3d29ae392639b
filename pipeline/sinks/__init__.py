"""Writing trace tables as sharded files, one sink per format.

Every sink is a Beam ``FileBasedSink`` (``base.TraceSink``) whose records are
Arrow tables of one trace table (``schema.TraceTable``: the instance events
or the host events); shards are written under temporary
names and renamed to ``PREFIX-SSSSS-of-NNNNN.<ext>`` only when the whole
write succeeded, so a failed run leaves no final-named partial files.
A new format is a ``TraceSink`` subclass in its own module, listed here.
"""
import apache_beam as beam

from starcompactor.pipeline.sinks.avro import AvroTraceSink
from starcompactor.pipeline.sinks.parquet import ParquetTraceSink
from starcompactor.pipeline.sinks.text import CsvTraceSink, JsonLinesTraceSink
from starcompactor.transforms.schema import INSTANCE_TRACE

SINKS = {sink.extension: sink for sink in
         (CsvTraceSink, AvroTraceSink, JsonLinesTraceSink,
          ParquetTraceSink)}
DEFAULT_FORMATS = ('csv', 'avro')


class WriteTrace(beam.PTransform):
    """Trace tables -> one sharded file set per format; outputs the names of
    the files written. ``run_id`` names the run's temporary folder
    (``shards.temporary_folder``); ``table`` is the ``schema.TraceTable``
    written."""

    def __init__(self, prefix, formats, num_shards, run_id,
                 table=INSTANCE_TRACE):
        super().__init__()
        self.table = table
        self.prefix = prefix
        self.formats = tuple(formats)
        self.num_shards = num_shards
        self.run_id = run_id

    def expand(self, trace):
        written = [
            trace | f'Write{fmt.capitalize()}' >> beam.io.Write(
                SINKS[fmt](self.prefix, self.num_shards, self.run_id,
                           self.table))
            for fmt in self.formats]
        return written | 'AllFiles' >> beam.Flatten()
