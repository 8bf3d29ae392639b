"""The Nova tables the synthetic history fills, and its rows' columns.

A row is a tuple over ``COLUMNS[table]``: the columns the history fills, a
subset of the table's in Nova's column order (the others are NULL). Times
are Nova's text, ``'YYYY-MM-DD HH:MM:SS'``, naive UTC.
"""
LIVE_TABLES = ('instances', 'instance_actions', 'instance_actions_events')
# Where ``nova-manage db archive_deleted_rows`` moves deleted rows.
SHADOW_PREFIX = 'shadow_'
TABLES = LIVE_TABLES + tuple(SHADOW_PREFIX + t for t in LIVE_TABLES)
# The hosts those instances run on (synth/hosts.py).
HOST_LIVE_TABLES = ('compute_nodes', 'services')
HOST_TABLES = HOST_LIVE_TABLES + tuple(SHADOW_PREFIX + t
                                       for t in HOST_LIVE_TABLES)

# What a column holds, which decides how it is written as SQL. Text the
# history makes up itself (times, uuids, states, hosts, ...) never holds a
# character SQL escapes, so it can be quoted as it is.
NUMBER = 'number, never NULL'
PLAIN_TEXT = 'text with nothing to escape, never NULL'
PLAIN_TEXT_OR_NULL = 'text with nothing to escape, or NULL'
ANY = 'a number, any text or NULL'

COLUMN_KINDS = {
    'instances': (
        ('created_at', PLAIN_TEXT), ('updated_at', PLAIN_TEXT),
        ('deleted_at', PLAIN_TEXT_OR_NULL), ('id', NUMBER),
        ('user_id', PLAIN_TEXT), ('project_id', PLAIN_TEXT),
        ('image_ref', PLAIN_TEXT), ('launch_index', NUMBER),
        ('key_name', PLAIN_TEXT_OR_NULL), ('power_state', NUMBER),
        ('vm_state', PLAIN_TEXT), ('memory_mb', NUMBER), ('vcpus', NUMBER),
        ('hostname', PLAIN_TEXT), ('host', PLAIN_TEXT_OR_NULL),
        ('reservation_id', PLAIN_TEXT), ('launched_at', PLAIN_TEXT_OR_NULL),
        ('terminated_at', PLAIN_TEXT_OR_NULL), ('display_name', ANY),
        ('availability_zone', PLAIN_TEXT_OR_NULL), ('locked', NUMBER),
        ('launched_on', PLAIN_TEXT_OR_NULL), ('instance_type_id', NUMBER),
        ('uuid', PLAIN_TEXT), ('root_device_name', PLAIN_TEXT),
        ('config_drive', PLAIN_TEXT), ('task_state', PLAIN_TEXT_OR_NULL),
        ('progress', NUMBER), ('auto_disk_config', NUMBER),
        ('shutdown_terminate', NUMBER), ('disable_terminate', NUMBER),
        ('root_gb', NUMBER), ('ephemeral_gb', NUMBER),
        ('node', PLAIN_TEXT_OR_NULL), ('deleted', NUMBER),
        ('cleaned', NUMBER), ('hidden', NUMBER), ('compute_id', ANY),
    ),
    'instance_actions': (
        ('created_at', PLAIN_TEXT), ('updated_at', PLAIN_TEXT),
        ('deleted_at', PLAIN_TEXT_OR_NULL), ('id', NUMBER),
        ('action', PLAIN_TEXT), ('instance_uuid', PLAIN_TEXT),
        ('request_id', PLAIN_TEXT), ('user_id', PLAIN_TEXT),
        ('project_id', PLAIN_TEXT), ('start_time', PLAIN_TEXT),
        ('finish_time', PLAIN_TEXT_OR_NULL), ('message', PLAIN_TEXT_OR_NULL),
        ('deleted', NUMBER),
    ),
    'instance_actions_events': (
        ('created_at', PLAIN_TEXT), ('updated_at', PLAIN_TEXT_OR_NULL),
        ('deleted_at', PLAIN_TEXT_OR_NULL), ('id', NUMBER),
        ('event', PLAIN_TEXT), ('action_id', NUMBER),
        ('start_time', PLAIN_TEXT), ('finish_time', PLAIN_TEXT_OR_NULL),
        ('result', PLAIN_TEXT_OR_NULL), ('traceback', ANY),
        ('deleted', NUMBER), ('host', PLAIN_TEXT_OR_NULL), ('details', ANY),
    ),
    'compute_nodes': (
        ('created_at', PLAIN_TEXT), ('updated_at', PLAIN_TEXT),
        ('deleted_at', PLAIN_TEXT_OR_NULL), ('id', NUMBER),
        ('service_id', NUMBER), ('vcpus', NUMBER), ('memory_mb', NUMBER),
        ('local_gb', NUMBER), ('vcpus_used', NUMBER),
        ('memory_mb_used', NUMBER), ('local_gb_used', NUMBER),
        ('hypervisor_type', PLAIN_TEXT), ('hypervisor_version', NUMBER),
        ('cpu_info', ANY), ('hypervisor_hostname', PLAIN_TEXT),
        ('deleted', NUMBER), ('host', PLAIN_TEXT),
        ('ram_allocation_ratio', NUMBER), ('cpu_allocation_ratio', NUMBER),
        ('uuid', PLAIN_TEXT), ('disk_allocation_ratio', NUMBER),
        ('mapped', NUMBER),
    ),
    'services': (
        ('created_at', PLAIN_TEXT), ('updated_at', PLAIN_TEXT),
        ('deleted_at', PLAIN_TEXT_OR_NULL), ('id', NUMBER),
        ('host', PLAIN_TEXT), ('binary', PLAIN_TEXT), ('topic', PLAIN_TEXT),
        ('report_count', NUMBER), ('disabled', NUMBER), ('deleted', NUMBER),
        ('disabled_reason', PLAIN_TEXT_OR_NULL),
        ('last_seen_up', PLAIN_TEXT), ('forced_down', NUMBER),
        ('version', NUMBER), ('uuid', PLAIN_TEXT),
    ),
}
COLUMN_KINDS.update({SHADOW_PREFIX + t: COLUMN_KINDS[t]
                     for t in LIVE_TABLES + HOST_LIVE_TABLES})
COLUMNS = {table: tuple(column for column, _ in kinds)
           for table, kinds in COLUMN_KINDS.items()}
