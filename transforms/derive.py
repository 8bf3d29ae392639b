"""Derived trace fields: seconds from an epoch, ISO-8601 times."""
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms.schema import TRACE_SCHEMA

BEFORE_EPOCH = -1   # as in the published traces


def earliest_start(table):
    return pc.min(table.column('start')).as_py()


def min_or_none(values):
    """Combine function for the default epoch; ``None`` for an empty trace."""
    return min((v for v in values if v is not None), default=None)


def seconds_since(times, epoch):
    """Seconds from ``epoch``; ``-1`` for a time before it."""
    since = pc.subtract(times, epoch)
    return pc.if_else(pc.less(since, 0), BEFORE_EPOCH, since)


def iso_times(nova_times):
    """ISO-8601 UTC from Nova's valid ``YYYY-MM-DD HH:MM:SS`` text."""
    return pc.binary_join_element_wise(
        pc.replace_substring(nova_times, ' ', 'T', max_replacements=1),
        'Z', '')


def to_trace(joined, epoch):
    """Joined (and masked) rows -> the published trace columns."""
    start, finish = joined.column('start'), joined.column('finish')
    return pa.table({
        'instance_uuid': joined.column('instance_uuid'),
        'event': joined.column('event'),
        'start_time': iso_times(joined.column('start_time')),
        'start_sec': seconds_since(start, epoch),
        'finish_time': iso_times(joined.column('finish_time')),
        'finish_sec': seconds_since(finish, epoch),
        'event_duration': pc.subtract(finish, start),
        'result': joined.column('result'),
        'memory_mb': joined.column('memory_mb'),
        'disk_gb': joined.column('root_gb'),
        'vcpus': joined.column('vcpus'),
        'instance_name': joined.column('hostname'),
        'user_id': joined.column('user_id'),
        'project_id': joined.column('project_id'),
        'host_name_physical': joined.column('host'),
    }, schema=TRACE_SCHEMA)
