"""From ``compute_nodes`` and ``services`` rows of one or more database
states to host-trace rows (``schema.HOST_TRACE``)::

    (state, (table, batch)) ── rows by host ── group by host ── events (hosts.py)
        ── batch ── rack (sorted racks side input) + seconds (epoch) ── mask host

Rows are keyed by host name (what ``instances.host`` holds, so the masked
names match the instance table's), and every state of a host meets in one
grouping, where consecutive states are compared.
"""
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c
from starcompactor.transforms.derive import iso_times, min_or_none, seconds_since
from starcompactor.transforms.hosts import HostState, Node, Service, host_events
from starcompactor.transforms.mask import (
    HMAC_SHA256, NO_MASKING, KeySource, MaskIdentities, MaskKey)
from starcompactor.transforms.schema import (
    COMPUTE_NODES, DB, HOST_TRACE, SERVICES)
from starcompactor.transforms.validate import parse_nova_times

# The host table's candidate events: read = in trace + broken rules.
HOST_EVENTS = 'host_events'
HOST_TABLES = (COMPUTE_NODES, SERVICES, HOST_EVENTS)

NOVA_COMPUTE = 'nova-compute'
NO_HOST = 'no_host'
NOT_NOVA_COMPUTE = 'not_nova_compute'
DELETED_SERVICE = 'deleted'
HOST_COLUMN = 'host_name_physical'
EVENTS_PER_BATCH = 50_000


@dataclass(frozen=True)
class HostTraceSpec:
    state_times: Tuple[int, ...]     # seconds since 1970, in order
    mask_method: str = HMAC_SHA256
    key_source: KeySource = KeySource()
    epoch: Optional[int] = None      # None: the earliest host event
    rack_regex: Optional[str] = None


def rack_of(host, pattern):
    """The rack a host name tells (its first group, else the whole match),
    or None."""
    match = pattern.search(host) if pattern else None
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def _rejects(table, reasons):
    """Counts each row under its first reason; returns the rows kept."""
    rejected = None
    for reason, applies in reasons:
        applies = pc.fill_null(applies, True)
        newly = applies if rejected is None else pc.and_(
            applies, pc.invert(rejected))
        c.count_rejected(table, reason, pc.sum(newly).as_py() or 0)
        rejected = newly if rejected is None else pc.or_(rejected, newly)
    return pc.invert(rejected)


def _node_rows(batch):
    created, created_bad = parse_nova_times(batch.column('created_at'))
    updated, updated_bad = parse_nova_times(batch.column('updated_at'))
    deleted_at, deleted_bad = parse_nova_times(batch.column('deleted_at'))
    is_deleted = pc.not_equal(pc.fill_null(batch.column('deleted'), 0), 0)
    kept = _rejects(COMPUTE_NODES, (
        (NO_HOST, pc.equal(batch.column('host'), '')),
        (c.EVENT_BAD_TIME, pc.or_(
            pc.or_(pc.is_null(created), pc.or_(created_bad, updated_bad)),
            pc.or_(deleted_bad, pc.and_(is_deleted,
                                        pc.is_null(deleted_at))))),
    ))
    rows = zip(batch.column('host').to_pylist(), batch.column(DB).to_pylist(),
               batch.column('id').to_pylist(), created.to_pylist(),
               updated.to_pylist(), deleted_at.to_pylist(),
               is_deleted.to_pylist(), batch.column('vcpus').to_pylist(),
               batch.column('memory_mb').to_pylist(),
               batch.column('local_gb').to_pylist(), kept.to_pylist())
    for (host, db, id_, created, updated, deleted, is_deleted, vcpus,
         memory_mb, local_gb, keep) in rows:
        if keep:
            yield host, Node((db, id_), created, updated,
                             deleted if is_deleted else None,
                             (vcpus, memory_mb, local_gb))


def _service_rows(batch):
    updated, updated_bad = parse_nova_times(batch.column('updated_at'))
    kept = _rejects(SERVICES, (
        (NOT_NOVA_COMPUTE, pc.not_equal(batch.column('binary'),
                                        NOVA_COMPUTE)),
        (NO_HOST, pc.equal(batch.column('host'), '')),
        (DELETED_SERVICE, pc.not_equal(
            pc.fill_null(batch.column('deleted'), 0), 0)),
        (c.EVENT_BAD_TIME, updated_bad),
    ))
    rows = zip(batch.column('host').to_pylist(), batch.column(DB).to_pylist(),
               batch.column('id').to_pylist(), updated.to_pylist(),
               batch.column('disabled').to_pylist(), kept.to_pylist())
    for host, db, id_, updated, disabled, keep in rows:
        if keep:
            yield host, ((db, id_), Service(updated, bool(disabled)))


def _rows_by_host(element):
    """``(state, (table, batch))`` -> ``(host, (state, table, rows))``, one
    per host of the batch; bad rows counted and left out."""
    state, (table, batch) = element
    c.count_read(table, batch.num_rows)
    by_host = defaultdict(list)
    rows = _node_rows(batch) if table == COMPUTE_NODES else \
        _service_rows(batch)
    for host, row in rows:
        by_host[host].append(row)
    for host, host_rows in by_host.items():
        yield host, (state, table, host_rows)


def _states(groups, state_times):
    """A host's ``HostState`` in every state, absent ones included; a row
    read from both the live and the shadow_ table is counted once."""
    nodes = [{} for _ in state_times]
    services = [{} for _ in state_times]
    for state, table, rows in groups:
        seen = nodes[state] if table == COMPUTE_NODES else services[state]
        for row in rows:
            key, value = (row.key, row) if table == COMPUTE_NODES else row
            if key in seen:
                c.count_rejected(table, c.READ_TWICE, 1)
            else:
                c.count_in_trace(table, 1)
                seen[key] = value
    for time, state_nodes, state_services in zip(state_times, nodes,
                                                 services):
        # Nova keeps one live nova-compute service per host and cell.
        latest = max(state_services.values(), default=None,
                     key=lambda s: s.updated or 0)
        yield HostState(time, tuple(sorted(state_nodes.values(),
                                           key=lambda n: n.key)), latest)


def _events_of_host(element, state_times):
    host, groups = element
    events, rejects = host_events(list(_states(groups, state_times)))
    c.count_read(HOST_EVENTS, len(events) + sum(rejects.values()))
    c.count_in_trace(HOST_EVENTS, len(events))
    for reason, n in rejects.items():
        c.count_rejected(HOST_EVENTS, reason, n)
    for event in events:
        vcpus, memory_mb, local_gb = event.capacity or (None, None, None)
        yield host, event.time, event.event, vcpus, memory_mb, local_gb


def _to_host_trace(rows, racks, epoch, rack_regex):
    """Event tuples -> a ``HOST_TRACE`` table, hosts still raw."""
    hosts, times, events, vcpus, memory_mb, local_gb = zip(*rows)
    pattern = re.compile(rack_regex) if rack_regex else None
    index = {rack: i for i, rack in enumerate(racks)}
    times = pa.array(times, pa.int64())
    trace = pa.table({
        'event_time': iso_times(times),
        'event_time_sec': seconds_since(times, epoch),
        HOST_COLUMN: pa.array(hosts, pa.string()),
        'rack': pa.array([index.get(rack_of(h, pattern)) for h in hosts],
                         pa.int64()),
        'event': pa.array(events, pa.string()),
        'vcpu_capacity': pa.array(vcpus, pa.int64()),
        'memory_capacity_mb': pa.array(memory_mb, pa.int64()),
        'disk_capacity_gb': pa.array(local_gb, pa.int64()),
    }, schema=HOST_TRACE.schema)
    c.count(c.TRACE_ROWS, trace.num_rows)
    c.record_epoch(epoch)
    yield trace


def _sorted_racks(hosts, rack_regex):
    pattern = re.compile(rack_regex) if rack_regex else None
    return sorted({rack for rack in (rack_of(h, pattern) for h in hosts)
                   if rack is not None})


class BuildHostTrace(beam.PTransform):
    """``(state index, (table, Arrow batch))`` pairs of ``compute_nodes``
    and ``services`` (``schema.source_schema``) -> host-trace Arrow tables
    (``schema.HOST_TRACE.schema``)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def expand(self, rows):
        spec = self.spec
        by_host = (rows
                   | 'RowsByHost' >> c.Counted(_rows_by_host)
                   | 'GroupByHost' >> beam.GroupByKey())
        events = by_host | 'HostEvents' >> c.Counted(_events_of_host,
                                                     spec.state_times)
        racks = (by_host
                 | 'Hosts' >> beam.Keys()
                 | 'AllHosts' >> beam.combiners.ToList()
                 | 'SortedRacks' >> beam.Map(_sorted_racks, spec.rack_regex))
        epoch = spec.epoch
        if epoch is None:
            epoch = beam.pvalue.AsSingleton(
                events
                | 'EventTimes' >> beam.Map(lambda event: event[1])
                | 'Earliest' >> beam.CombineGlobally(min_or_none))
        trace = (events
                 | 'Batch' >> beam.BatchElements(
                     min_batch_size=EVENTS_PER_BATCH,
                     max_batch_size=EVENTS_PER_BATCH)
                 | 'HostTrace' >> c.Counted(
                     _to_host_trace, beam.pvalue.AsSingleton(racks), epoch,
                     spec.rack_regex))
        if spec.mask_method == NO_MASKING:
            return trace
        key = rows.pipeline | 'MaskKey' >> MaskKey(spec.key_source)
        return trace | 'MaskHosts' >> beam.ParDo(
            MaskIdentities((HOST_COLUMN,)), beam.pvalue.AsSingleton(key))
