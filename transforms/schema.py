"""The shapes data takes on its way through starcompactor.

Every source (MySQL, mysqldump files, ...) emits ``pyarrow.Table`` batches of
the three *source tables* below; everything after the source works on these
columns only, so a new source only has to produce them.

Times stay as Nova stores them (``'YYYY-MM-DD HH:MM:SS'`` text, naive UTC)
until the shared validation step parses them, so every source is validated
the same way and a bad time becomes a counted reject, not a crash.
"""
from dataclasses import dataclass

import pyarrow as pa

# Which Nova database (cell) a row came from: ids collide across cells, so
# every join key includes it.
DB = 'db'

INSTANCES = 'instances'
ACTIONS = 'actions'
EVENTS = 'events'
SOURCE_TABLES = (INSTANCES, ACTIONS, EVENTS)
# What the host table is made from: hypervisors and their nova-compute
# services.
COMPUTE_NODES = 'compute_nodes'
SERVICES = 'services'
HOST_SOURCE_TABLES = (COMPUTE_NODES, SERVICES)

# Nova table names, live and archived (``nova-manage db archive_deleted_rows``).
NOVA_TABLES = {
    INSTANCES: 'instances',
    ACTIONS: 'instance_actions',
    EVENTS: 'instance_actions_events',
    COMPUTE_NODES: 'compute_nodes',
    SERVICES: 'services',
}
SHADOW_PREFIX = 'shadow_'

# Source columns per table: (column in Nova, arrow type). Order matters: it is
# the order sources emit.
SOURCE_COLUMNS = {
    INSTANCES: (
        ('id', pa.int64()),
        ('uuid', pa.string()),
        ('user_id', pa.string()),
        ('project_id', pa.string()),
        ('hostname', pa.string()),
        ('host', pa.string()),
        ('memory_mb', pa.int64()),
        ('root_gb', pa.int64()),
        ('vcpus', pa.int64()),
    ),
    ACTIONS: (
        ('id', pa.int64()),
        ('instance_uuid', pa.string()),
    ),
    EVENTS: (
        ('id', pa.int64()),
        ('action_id', pa.int64()),
        ('event', pa.string()),
        ('start_time', pa.string()),
        ('finish_time', pa.string()),
        ('result', pa.string()),
    ),
    COMPUTE_NODES: (
        ('id', pa.int64()),
        ('host', pa.string()),
        ('created_at', pa.string()),
        ('updated_at', pa.string()),
        ('deleted_at', pa.string()),
        ('deleted', pa.int64()),
        ('vcpus', pa.int64()),
        ('memory_mb', pa.int64()),
        ('local_gb', pa.int64()),
    ),
    SERVICES: (
        ('id', pa.int64()),
        ('host', pa.string()),
        ('binary', pa.string()),
        ('updated_at', pa.string()),
        ('deleted', pa.int64()),
        ('disabled', pa.int64()),
    ),
}


def source_schema(table):
    """Arrow schema of one source table's batches (``db`` first)."""
    return pa.schema([(DB, pa.string())] + list(SOURCE_COLUMNS[table]))



# The published trace format (Chameleon v0.2), in order: (CSV header, field
# name in Avro/JSON lines, arrow type). Sizes and seconds are nullable where
# Nova's columns are.
TRACE_COLUMNS = (
    ('INSTANCE_UUID', 'instance_uuid', pa.string()),
    ('EVENT', 'event', pa.string()),
    ('START_TIME', 'start_time', pa.string()),
    ('START_SEC', 'start_sec', pa.int64()),
    ('FINISH_TIME', 'finish_time', pa.string()),
    ('FINISH_SEC', 'finish_sec', pa.int64()),
    ('EVENT_DURATION', 'event_duration', pa.int64()),
    ('RESULT', 'result', pa.string()),
    ('MEMORY_MB', 'memory_mb', pa.int64()),
    ('DISK_GB', 'disk_gb', pa.int64()),
    ('VCPUS', 'vcpus', pa.int64()),
    ('INSTANCE_NAME', 'instance_name', pa.string()),
    ('USER_ID', 'user_id', pa.string()),
    ('PROJECT_ID', 'project_id', pa.string()),
    ('HOST_NAME (PHYSICAL)', 'host_name_physical', pa.string()),
)
CSV_HEADER = [header for header, _, _ in TRACE_COLUMNS]
TRACE_FIELDS = [field for _, field, _ in TRACE_COLUMNS]
TRACE_SCHEMA = pa.schema([(field, typ) for _, field, typ in TRACE_COLUMNS])

_AVRO_TYPES = {pa.string(): 'string', pa.int64(): 'long'}


@dataclass(frozen=True)
class TraceTable:
    """One table of the published trace, as every sink and reader needs it:
    ``columns`` are (CSV header, Avro/JSON field, arrow type) in the
    published order; ``required`` fields are never null."""
    record: str
    doc: str
    columns: tuple
    required: frozenset

    @property
    def csv_header(self):
        return [header for header, _, _ in self.columns]

    @property
    def fields(self):
        return [field for _, field, _ in self.columns]

    @property
    def schema(self):
        return pa.schema([(field, typ) for _, field, typ in self.columns])

    @property
    def avro_schema(self):
        return {
            'type': 'record',
            'name': self.record,
            'namespace': 'org.starcompactor.trace',
            'doc': self.doc,
            'fields': [
                {'name': field,
                 'type': (_AVRO_TYPES[typ] if field in self.required
                          else ['null', _AVRO_TYPES[typ]]),
                 'doc': header}
                for header, field, typ in self.columns
            ],
        }


INSTANCE_TRACE = TraceTable(
    'InstanceEvent',
    'One finished Nova instance event (Chameleon trace format v0.2).',
    TRACE_COLUMNS,
    # The join and the validation guarantee these.
    frozenset({'instance_uuid', 'start_time', 'start_sec', 'finish_time',
               'finish_sec', 'event_duration'}))
AVRO_SCHEMA = INSTANCE_TRACE.avro_schema

# The machine (host) events of the published format v0.2, in order.
HOST_TRACE = TraceTable(
    'HostEvent',
    'One event of a Nova compute host (Chameleon trace format v0.2).',
    (
        ('EVENT_TIME', 'event_time', pa.string()),
        ('EVENT_TIME_SEC', 'event_time_sec', pa.int64()),
        ('HOST_NAME (PHYSICAL)', 'host_name_physical', pa.string()),
        ('RACK', 'rack', pa.int64()),
        ('EVENT', 'event', pa.string()),
        ('VCPU_CAPACITY', 'vcpu_capacity', pa.int64()),
        ('MEMORY_CAPACITY_MB', 'memory_capacity_mb', pa.int64()),
        ('DISK_CAPACITY_GB', 'disk_capacity_gb', pa.int64()),
    ),
    frozenset({'event_time', 'event_time_sec', 'host_name_physical',
               'event'}))
