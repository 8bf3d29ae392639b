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
# Bare metal: Ironic's nodes, and Blazar's hosts with their capabilities
# and the leases that reserved them, each from its own database
# (--ironic-database, --blazar-database).
IRONIC_NODES = 'ironic_nodes'
BLAZAR_HOSTS = 'blazar_hosts'
BLAZAR_CAPABILITIES = 'blazar_capabilities'
BLAZAR_PROPERTIES = 'blazar_properties'
BLAZAR_ALLOCATIONS = 'blazar_allocations'
BLAZAR_RESERVATIONS = 'blazar_reservations'
BLAZAR_LEASES = 'blazar_leases'
LEASE_TABLES = (BLAZAR_HOSTS, BLAZAR_ALLOCATIONS, BLAZAR_RESERVATIONS,
                BLAZAR_LEASES)
CAPABILITY_TABLES = (BLAZAR_HOSTS, BLAZAR_CAPABILITIES, BLAZAR_PROPERTIES)

# Nova table names, live and archived (``nova-manage db archive_deleted_rows``);
# Ironic's and Blazar's, which have no shadow_ copies.
NOVA_TABLES = {
    INSTANCES: 'instances',
    ACTIONS: 'instance_actions',
    EVENTS: 'instance_actions_events',
    COMPUTE_NODES: 'compute_nodes',
    SERVICES: 'services',
    IRONIC_NODES: 'nodes',
    BLAZAR_HOSTS: 'computehosts',
    BLAZAR_CAPABILITIES: 'computehost_extra_capabilities',
    BLAZAR_PROPERTIES: 'resource_properties',
    BLAZAR_ALLOCATIONS: 'computehost_allocations',
    BLAZAR_RESERVATIONS: 'reservations',
    BLAZAR_LEASES: 'leases',
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
        ('node', pa.string()),      # the hypervisor; on Ironic, the node
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
        ('hypervisor_hostname', pa.string()),   # instances.node
        ('hypervisor_type', pa.string()),       # 'ironic' for bare metal
    ),
    SERVICES: (
        ('id', pa.int64()),
        ('host', pa.string()),
        ('binary', pa.string()),
        ('updated_at', pa.string()),
        ('deleted', pa.int64()),
        ('disabled', pa.int64()),
    ),
    IRONIC_NODES: (
        ('id', pa.int64()),
        ('uuid', pa.string()),
        ('created_at', pa.string()),
        ('updated_at', pa.string()),
        ('maintenance', pa.int64()),
        ('provision_state', pa.string()),
        ('retired', pa.int64()),
        ('properties', pa.string()),     # JSON: cpus, memory_mb, local_gb
    ),
    # Blazar's ids are uuid text.
    BLAZAR_HOSTS: (
        ('id', pa.string()),
        ('hypervisor_hostname', pa.string()),   # the Ironic node's uuid
        ('created_at', pa.string()),
        ('updated_at', pa.string()),
        ('reservable', pa.int64()),
        ('disabled', pa.int64()),
        ('deleted', pa.string()),
    ),
    BLAZAR_CAPABILITIES: (
        ('id', pa.string()),
        ('computehost_id', pa.string()),
        ('property_id', pa.string()),        # -> resource_properties
        ('capability_name', pa.string()),    # the older layout: the name
        ('capability_value', pa.string()),
        ('created_at', pa.string()),
        ('updated_at', pa.string()),
    ),
    BLAZAR_PROPERTIES: (
        ('id', pa.string()),
        ('property_name', pa.string()),
    ),
    BLAZAR_ALLOCATIONS: (
        ('id', pa.string()),
        ('compute_host_id', pa.string()),
        ('reservation_id', pa.string()),
    ),
    BLAZAR_RESERVATIONS: (
        ('id', pa.string()),
        ('lease_id', pa.string()),
    ),
    BLAZAR_LEASES: (
        ('id', pa.string()),
        ('start_date', pa.string()),
        ('end_date', pa.string()),
        ('deleted_at', pa.string()),       # Chameleon's Blazar
    ),
}


# Columns a source fills with NULL where a table lacks them (older or
# hand-made schemas; deployments' own columns), per table: never a
# column the trace cannot do without.
OPTIONAL_COLUMNS = {
    INSTANCES: ('node',),
    COMPUTE_NODES: ('hypervisor_hostname', 'hypervisor_type'),
    IRONIC_NODES: ('retired',),                   # older Ironic
    # Older Blazar has no reservable flag; Chameleon's Blazar adds
    # disabled and soft-deletes (deleted).
    BLAZAR_HOSTS: ('reservable', 'disabled', 'deleted'),
    # Older Blazar names each capability in its row (capability_name);
    # current Blazar's rows point to resource_properties.
    BLAZAR_CAPABILITIES: ('property_id', 'capability_name'),
    BLAZAR_LEASES: ('deleted_at',),
}
# Tables a source reads as empty where a database lacks them.
OPTIONAL_TABLES = (BLAZAR_PROPERTIES,)


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
# In Parquet the trace's times (the fields named ``*_time``, ISO-8601 text
# in the other formats) are UTC timestamps. Microseconds: Parquet has no
# seconds unit (pyarrow would store milliseconds and read them back so), and
# DuckDB and Spark hold timestamps in microseconds.
PARQUET_TIME = pa.timestamp('us', tz='UTC')


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

    @property
    def parquet_schema(self):
        """The Arrow schema of the Parquet files: the Avro/JSON field
        names, times as ``PARQUET_TIME``, every other column as in
        ``schema``; nullable unless ``required``."""
        return pa.schema([
            pa.field(field,
                     PARQUET_TIME if field.endswith('_time') else typ,
                     nullable=field not in self.required)
            for _, field, typ in self.columns])


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

# The published format's versions (``--trace-format``). v0.3 moves the
# figures of either table into one PROPERTIES column, a JSON object (always
# valid JSON; ``{}`` when nothing is known), so that bare-metal instances
# (no flavor figures) and nodes (Blazar capabilities) fit the same tables.
V02, V03 = 'v0.2', 'v0.3'
TRACE_FORMATS = (V02, V03)
PROPERTIES_COLUMN = ('PROPERTIES', 'properties', pa.string())
# What v0.3 PROPERTIES replaces, per table: the v0.2 fields.
INSTANCE_FIGURES = ('memory_mb', 'disk_gb', 'vcpus')
HOST_FIGURES = ('rack', 'vcpu_capacity', 'memory_capacity_mb',
                'disk_capacity_gb')


def _v03(table, replaced):
    """``table`` with the fields ``replaced`` by PROPERTIES, where the
    last of them stood (the published v0.3 order)."""
    last = max(table.fields.index(field) for field in replaced)
    columns = [PROPERTIES_COLUMN if i == last else column
               for i, column in enumerate(table.columns)
               if i == last or column[1] not in replaced]
    return TraceTable(table.record, table.doc.replace(V02, V03),
                      tuple(columns), table.required | {'properties'})


INSTANCE_TRACE_V03 = _v03(INSTANCE_TRACE, INSTANCE_FIGURES)
HOST_TRACE_V03 = _v03(HOST_TRACE, HOST_FIGURES)
INSTANCE_TRACES = {V02: INSTANCE_TRACE, V03: INSTANCE_TRACE_V03}
HOST_TRACES = {V02: HOST_TRACE, V03: HOST_TRACE_V03}
