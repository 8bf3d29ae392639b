"""Avro trace shards, written a column at a time (``avro_blocks``)."""
from starcompactor.pipeline.sinks.avro_blocks import AvroFileWriter
from starcompactor.pipeline.sinks.base import TraceSink

# deflate: the codec every Avro reader has; level 1 keeps it off the critical
# path while still shrinking the (very repetitive) trace several times.
AVRO_CODEC = 'deflate'
AVRO_CODEC_LEVEL = 1


class AvroTraceSink(TraceSink):
    extension = 'avro'
    mime_type = 'application/avro'

    def open(self, temp_path):
        return AvroFileWriter(super().open(temp_path),
                              self.table.avro_schema,
                              AVRO_CODEC, AVRO_CODEC_LEVEL)

    def write_record(self, avro_file, table):
        avro_file.write_table(table)

    def close(self, avro_file):
        avro_file.close()
        super().close(avro_file.handle)
