"""The shapes data takes on its way through starcompactor.

Every source (MySQL, mysqldump files, ...) emits ``pyarrow.Table`` batches of
the three *source tables* below; everything after the source works on these
columns only, so a new source only has to produce them.

Times stay as Nova stores them (``'YYYY-MM-DD HH:MM:SS'`` text, naive UTC)
until the shared validation step parses them, so every source is validated
the same way and a bad time becomes a counted reject, not a crash.
"""
import pyarrow as pa

# Which Nova database (cell) a row came from: ids collide across cells, so
# every join key includes it.
DB = 'db'

INSTANCES = 'instances'
ACTIONS = 'actions'
EVENTS = 'events'
SOURCE_TABLES = (INSTANCES, ACTIONS, EVENTS)

# Nova table names, live and archived (``nova-manage db archive_deleted_rows``).
NOVA_TABLES = {
    INSTANCES: 'instances',
    ACTIONS: 'instance_actions',
    EVENTS: 'instance_actions_events',
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

# Fields that can never be null in a trace row: the join and the validation
# guarantee them.
_REQUIRED = {'instance_uuid', 'start_time', 'start_sec', 'finish_time',
             'finish_sec', 'event_duration'}
_AVRO_TYPES = {pa.string(): 'string', pa.int64(): 'long'}

AVRO_SCHEMA = {
    'type': 'record',
    'name': 'InstanceEvent',
    'namespace': 'org.starcompactor.trace',
    'doc': 'One finished Nova instance event (Chameleon trace format v0.2).',
    'fields': [
        {'name': field,
         'type': (_AVRO_TYPES[typ] if field in _REQUIRED
                  else ['null', _AVRO_TYPES[typ]]),
         'doc': header}
        for header, field, typ in TRACE_COLUMNS
    ],
}
