"""Derived trace fields: seconds from an epoch, ISO-8601 times, v0.3's
PROPERTIES."""
import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms.schema import INSTANCE_TRACES, V02

BEFORE_EPOCH = -1   # as in the published traces


def min_or_none(values):
    """Combine function for the default epoch; ``None`` for an empty trace."""
    return min((v for v in values if v is not None), default=None)


def seconds_since(times, epoch):
    """Seconds from ``epoch``; ``-1`` for a time before it."""
    since = pc.subtract(times, epoch)
    return pc.if_else(pc.less(since, 0), BEFORE_EPOCH, since)


SECONDS_PER_DAY = 86_400
_DENSE_DAYS = 100_000   # a span of days short enough to list every day


@functools.lru_cache(maxsize=1)
def _times_of_day():
    """``THH:MM:SSZ`` for each second of a day: formatting by lookup is
    several times cheaper than ``strftime``."""
    seconds = np.arange(SECONDS_PER_DAY)
    return pa.array([f'T{h:02d}:{m:02d}:{s:02d}Z' for h, m, s in zip(
        seconds // 3600, seconds // 60 % 60, seconds % 60)], pa.string())


def iso_times(seconds):
    """ISO-8601 UTC text (``YYYY-MM-DDTHH:MM:SSZ``) of seconds since 1970
    (an int64 column without nulls)."""
    values = np.asarray(seconds)
    days, time_of_day = np.divmod(values, SECONDS_PER_DAY)
    if len(days) and days.max() - days.min() < _DENSE_DAYS:
        first = days.min()
        distinct_days = np.arange(first, days.max() + 1)
        day_of_row = days - first
    else:
        distinct_days, day_of_row = np.unique(days, return_inverse=True)
    dates = pa.array(np.datetime_as_string(
        distinct_days.astype('datetime64[D]')).tolist(), pa.string())
    return pc.binary_join_element_wise(
        dates.take(day_of_row), _times_of_day().take(time_of_day), '')


def _text(column):
    return column.cast(pa.string())


def json_text(value):
    """The JSON text of one value, as PROPERTIES writes it (compact)."""
    return json.dumps(value, separators=(',', ':'))


def _json_values(column):
    """JSON text of each value of an Arrow column: integers as numbers,
    text quoted (each distinct value once); nulls stay null."""
    if pa.types.is_integer(column.type):
        return column.cast(pa.string())
    encoded = pc.dictionary_encode(column.cast(pa.string()))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    quoted = pa.array([json_text(v) for v in
                       encoded.dictionary.to_pylist()], pa.string())
    return quoted.take(encoded.indices)


def json_objects(fields, rows, members=None):
    """A JSON object per row (``rows`` of them) from ``fields``, ``(key,
    Arrow column)`` pairs in order: a null leaves its key out, so that the
    object holds what is known (``{}`` when nothing is). ``members``: a
    text column of members already written (``"key":value,...``, no
    braces; null or empty where none), put first. Built a column at a
    time: each key's ``"key":value,`` pieces, joined, the last comma
    trimmed (no value's JSON text ends in one)."""
    pieces = [pc.binary_join_element_wise(json_text(key) + ':',
                                          _json_values(column), ',', '')
              for key, column in fields]
    if members is not None:
        members = pc.if_else(pc.equal(members, ''),
                             pa.scalar(None, pa.string()), members)
        pieces.insert(0, pc.binary_join_element_wise(members, '', ','))
    if not pieces:
        return pa.repeat(pa.scalar('{}'), rows)
    members = pc.utf8_rtrim(pc.binary_join_element_wise(
        *pieces, '', null_handling='replace', null_replacement=''), ',')
    return pc.binary_join_element_wise('{', members, '}', '')


# Lease columns the lease link (``transforms.baremetal``) adds to joined
# rows of bare-metal instances: the lease's masked id, start and end.
LEASE_COLUMNS = ('lease_id', 'lease_start', 'lease_end')
# The column the node link (``transforms.baremetal``) adds to joined rows
# of bare-metal instances: their node's figures, as JSON members.
NODE_FIGURES = 'node_figures'


def instance_properties(joined, epoch):
    """v0.3 PROPERTIES of joined rows: the flavor figures under their v0.2
    names, or for a bare-metal instance whose node's figures are known
    (``NODE_FIGURES``), those instead; and, where the lease link ran, the
    instance's lease."""
    flavor = [('memory_mb', joined.column('memory_mb')),
              ('disk_gb', joined.column('root_gb')),
              ('vcpus', joined.column('vcpus'))]
    nodes = None
    if NODE_FIGURES in joined.column_names:
        nodes = joined.column(NODE_FIGURES)
        # A bare-metal flavor describes no machine (Ironic's flavors ask
        # for a resource class); the node's figures do.
        on_node = pc.is_valid(nodes)
        flavor = [(key, pc.if_else(on_node, pa.scalar(None, column.type),
                                   column)) for key, column in flavor]
    fields = flavor
    if 'lease_id' in joined.column_names:
        fields += [('lease_id', joined.column('lease_id')),
                   ('lease_start_sec', seconds_since(
                       joined.column('lease_start'), epoch)),
                   ('lease_end_sec', seconds_since(
                       joined.column('lease_end'), epoch))]
    return json_objects(fields, joined.num_rows, nodes)


def to_trace(joined, epoch, trace_format=V02):
    """Joined (and masked) rows -> the published trace columns of
    ``trace_format``."""
    start, finish = joined.column('start'), joined.column('finish')
    table = INSTANCE_TRACES[trace_format]
    columns = {
        'instance_uuid': joined.column('instance_uuid'),
        'event': _text(joined.column('event')),
        'start_time': iso_times(start),
        'start_sec': seconds_since(start, epoch),
        'finish_time': iso_times(finish),
        'finish_sec': seconds_since(finish, epoch),
        'event_duration': pc.subtract(finish, start),
        'result': _text(joined.column('result')),
        'instance_name': _text(joined.column('hostname')),
        'user_id': _text(joined.column('user_id')),
        'project_id': _text(joined.column('project_id')),
        'host_name_physical': _text(joined.column('host')),
    }
    if trace_format == V02:
        columns.update(memory_mb=joined.column('memory_mb'),
                       disk_gb=joined.column('root_gb'),
                       vcpus=joined.column('vcpus'))
    else:
        columns['properties'] = instance_properties(joined, epoch)
    return pa.table({field: columns[field] for field in table.fields},
                    schema=table.schema)
