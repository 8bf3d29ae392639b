"""Derived trace fields: seconds from an epoch, ISO-8601 times."""
import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms.schema import TRACE_SCHEMA

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


def to_trace(joined, epoch):
    """Joined (and masked) rows -> the published trace columns."""
    start, finish = joined.column('start'), joined.column('finish')
    return pa.table({
        'instance_uuid': joined.column('instance_uuid'),
        'event': _text(joined.column('event')),
        'start_time': iso_times(start),
        'start_sec': seconds_since(start, epoch),
        'finish_time': iso_times(finish),
        'finish_sec': seconds_since(finish, epoch),
        'event_duration': pc.subtract(finish, start),
        'result': _text(joined.column('result')),
        'memory_mb': joined.column('memory_mb'),
        'disk_gb': joined.column('root_gb'),
        'vcpus': joined.column('vcpus'),
        'instance_name': _text(joined.column('hostname')),
        'user_id': _text(joined.column('user_id')),
        'project_id': _text(joined.column('project_id')),
        'host_name_physical': _text(joined.column('host')),
    }, schema=TRACE_SCHEMA)
