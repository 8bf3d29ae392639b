"""Host capacity over time, from a host-event table (``starcompactor
hosts`` or ``trace``), for the report of the instance trace it belongs to.

Definitions
-----------
* A host is *in service* from a CREATE to the next DELETE, unless it is
  disabled: it starts enabled, DISABLE and ENABLE switch it. Its capacities
  are those of its last CREATE or UPDATE (an empty one counts 0).
* The capacity at a time is the sum over the hosts in service then: hosts,
  vCPUs, memory (MB) and disk (GB). It is a step function that changes at
  host events; a change is dated at its event and holds until the next.
* Events of one host in one second are taken in the order the host table
  makes them (``transforms.hosts.SAME_SECOND_ORDER``: a replaced node's
  DELETE before its successor's CREATE).

A host table holds a few events per host, so its rows are read whole, as
records (``shards.records``), in any format it was written in. In v0.3 the
capacities are PROPERTIES members under their v0.2 names
(``vcpu_capacity``, ...), as Nova hosts have them; an Ironic node's
capabilities (``main_memory.ram_size``, ...) are left alone: such a host
counts with empty capacities.
"""
import dataclasses
import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
from dateutil import parser as dateutil_parser

from starcompactor.pipeline import shards
from starcompactor.pipeline.errors import UserError
from starcompactor.report import html, read
from starcompactor.transforms.hosts import (
    CREATE, DELETE, ENABLE, SAME_SECOND_ORDER, UPDATE)
from starcompactor.transforms.schema import HOST_TRACES

SERIES = ('hosts', 'vcpus', 'memory_mb', 'disk_gb')
_CAPACITY_FIELDS = ('vcpu_capacity', 'memory_capacity_mb', 'disk_capacity_gb')
_FIELD_OF_HEADER = {header: field for table in HOST_TRACES.values()
                    for header, field, _ in table.columns}


def host_table_beside(prefix):
    """The host table ``starcompactor trace`` wrote beside the instance
    table at ``prefix`` (``OUT-instances`` -> ``OUT-hosts``), or None."""
    if not prefix.endswith(shards.INSTANCES_SUFFIX):
        return None
    hosts = prefix[:-len(shards.INSTANCES_SUFFIX)] + shards.HOSTS_SUFFIX
    return hosts if shards.find(hosts) else None


def _seconds(value):
    """An EVENT_TIME as read: ISO-8601 text (naive: UTC) or a datetime."""
    if isinstance(value, str):
        value = dateutil_parser.isoparse(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(value.timestamp())


def _number(value):
    """A capacity as read: an int, text (CSV) or empty."""
    return int(value) if value not in (None, '') else 0


def read_events(paths):
    """``(host, time, event, (vcpus, memory_mb, disk_gb))`` of every row."""
    events = []
    for path in paths:
        rows = [{_FIELD_OF_HEADER.get(name, name): value
                 for name, value in row.items()}
                for row in shards.records(path)]
        if rows and 'properties' in rows[0]:
            _capacities_from_properties(path, rows)
        for n, row in enumerate(rows, start=1):
            try:
                events.append((
                    row['host_name_physical'], _seconds(row['event_time']),
                    row['event'],
                    tuple(_number(row[f]) for f in _CAPACITY_FIELDS)))
            except (KeyError, ValueError, TypeError, OverflowError) as e:
                raise UserError(f'{path} row {n}: not a host event: '
                                f'{read.first_line(e)}') from None
    return events


def _capacities_from_properties(path, rows):
    """v0.3 rows get the v0.2 capacity fields, from PROPERTIES."""
    columns = read.property_figures(
        path, pa.array([row['properties'] for row in rows], pa.string()),
        _CAPACITY_FIELDS)
    for row, capacity in zip(rows, zip(*(c.to_pylist() for c in columns))):
        row.update(zip(_CAPACITY_FIELDS, capacity))


def capacity_steps(events):
    """The capacity step function of ``events`` (``read_events``): its
    change times (seconds, ascending) and, for each, the ``SERIES`` values
    from then on (an array of shape (changes, 4))."""
    changes = {}
    for _, host_events in itertools.groupby(
            sorted(events, key=lambda e: (e[0], e[1],
                                          SAME_SECOND_ORDER[e[2]])),
            key=lambda e: e[0]):
        created, enabled, capacity = False, True, (0, 0, 0)
        counted = np.zeros(len(SERIES), np.int64)
        for _, time, event, event_capacity in host_events:
            if event == CREATE:
                created, capacity = True, event_capacity
            elif event == UPDATE:
                capacity = event_capacity
            elif event == DELETE:
                created = False
            else:
                enabled = event == ENABLE
            now = (np.array((1, *capacity), np.int64) if created and enabled
                   else np.zeros(len(SERIES), np.int64))
            if (now != counted).any():
                changes[time] = changes.get(time, 0) + now - counted
                counted = now
    times = np.array(sorted(t for t, delta in changes.items()
                            if delta.any()), np.int64)
    deltas = np.array([changes[t] for t in times], np.int64).reshape(
        len(times), len(SERIES))
    return times, np.cumsum(deltas, axis=0)


@dataclasses.dataclass
class Capacity:
    """What the capacity plot draws beyond the statistics."""
    times: np.ndarray
    values: np.ndarray


def _iso(seconds):
    return dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc) \
        .strftime('%Y-%m-%dT%H:%M:%SZ')


def capacity_stats(prefix):
    """(statistics dict, ``Capacity``) of the host table at ``prefix``."""
    fmt, paths = shards.complete_set(prefix, read.FORMATS)
    shards.trace_table(paths, list(HOST_TRACES.values()))  # or an error
    events = read_events(paths)
    times, values = capacity_steps(events)
    kinds = {}
    for _, _, event, _ in events:
        kinds[event] = kinds.get(event, 0) + 1

    def at(row):
        return dict(zip(SERIES, (int(v) for v in row)))

    stats = {
        'host_table': {'prefix': prefix, 'format': fmt,
                       'shards': len(paths)},
        'hosts': len({host for host, *_ in events}),
        'events': len(events),
        'events_per_kind': dict(sorted(kinds.items())),
        'first_event': _iso(min(e[1] for e in events)) if events else None,
        'last_event': _iso(max(e[1] for e in events)) if events else None,
        'peak': at(values.max(axis=0)) if len(times) else None,
        'final': at(values[-1]) if len(times) else None,
        'steps': [{'time': _iso(t), **at(row)}
                  for t, row in zip(times, values)],
    }
    return stats, Capacity(times, values)


def section(prefix):
    """The report's extra section (``write_report(extra_sections=...)``)
    of the host table at ``prefix``."""
    def make(trace_stats):
        stats, capacity = capacity_stats(prefix)
        return html.capacity_section(trace_stats, stats, capacity)
    return make
