"""From ``compute_nodes`` and ``services`` rows of one or more database
states to host-trace rows (``schema.HOST_TRACES``)::

    (state, (table, batch)) ── rows by host ── group by host ── events (hosts.py)
        ── batch ── rack (sorted racks side input) + seconds (epoch) ── mask host

Rows are keyed by host name (what ``instances.host`` holds, so the masked
names match the instance table's), and every state of a host meets in one
grouping, where consecutive states are compared.

On bare metal the hosts are Ironic's nodes, and the rows those of Ironic
and Blazar (``transforms.nodes``); each state's rows meet first (a state's
inventory: a row per node, a few per node's capability), to make each
node's state, keyed by the node's uuid (what a bare-metal instance's
host is)::

    (state, (table, batch)) ── group by state ── node states (nodes.py)
        ── group by node ── events (hosts.py) ── ... as above, racks
                                                 from the nodes' figures
"""
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c
from starcompactor.transforms.buckets import concat
from starcompactor.transforms.derive import (
    NODE_FIGURES, iso_times, json_text, min_or_none, seconds_since)
from starcompactor.transforms.hosts import (
    CREATE, HostState, Node, Service, host_events)
from starcompactor.transforms.mask import (
    HMAC_SHA256, NO_MASKING, KeySource, MaskIdentities, MaskKey)
from starcompactor.transforms.nodes import RACK_PROPERTY, node_states
from starcompactor.transforms.schema import (
    BLAZAR_CAPABILITIES, BLAZAR_HOSTS, BLAZAR_PROPERTIES, COMPUTE_NODES, DB,
    HOST_FIGURES, HOST_TRACES, IRONIC_NODES, SERVICES, V02, V03,
    source_schema)
from starcompactor.transforms.validate import parse_nova_times

# The host table's candidate events: read = in trace + broken rules.
HOST_EVENTS = 'host_events'
HOST_TABLES = (COMPUTE_NODES, SERVICES, HOST_EVENTS)
NODE_TABLES = (IRONIC_NODES, BLAZAR_HOSTS, BLAZAR_CAPABILITIES, HOST_EVENTS)
# What a bare-metal host table reads: NODE_TABLES, and the capabilities'
# names.
NODE_SOURCE_TABLES = (IRONIC_NODES, BLAZAR_HOSTS, BLAZAR_CAPABILITIES,
                      BLAZAR_PROPERTIES)

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
    trace_format: str = V02          # schema.TRACE_FORMATS
    # Bare metal: the nodes' figures (nodes.V02_NODE_FIGURES, or the
    # capabilities --properties lists); None: Nova's compute hosts.
    node_properties: Optional[Tuple[str, ...]] = None


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
    yield from _counted_events(host, list(_states(groups, state_times)))


def _node_states(element, names):
    """One state's Ironic and Blazar batches -> ``(node uuid, (state,
    NodeState))`` for each node."""
    state, pairs = element
    by_table = {}
    for table, batch in pairs:
        by_table.setdefault(table, []).append(batch)
    tables = {table: concat(by_table.get(table, []), source_schema(table))
              for table in NODE_SOURCE_TABLES}
    for uuid, node_state in node_states(tables, names).items():
        yield uuid, (state, node_state)


def _events_of_node(element, state_times):
    uuid, groups = element
    present = dict(groups)
    yield from _counted_events(uuid, [
        HostState(time, (present[state].node,), present[state].service)
        if state in present else HostState(time)
        for state, time in enumerate(state_times)])


def _counted_events(host, states):
    """The events of one host in ``states`` (``hosts.host_events``),
    counted."""
    events, rejects = host_events(states)
    c.count_read(HOST_EVENTS, len(events) + sum(rejects.values()))
    c.count_in_trace(HOST_EVENTS, len(events))
    for reason, n in rejects.items():
        c.count_rejected(HOST_EVENTS, reason, n)
    for event in events:
        yield host, event.time, event.event, event.capacity


def host_properties(figures):
    """v0.3 PROPERTIES of a host event: its figures (``{field: value}``)
    that are known."""
    return json_text({name: value for name, value in figures.items()
                      if value is not None})


def _whole_number(value):
    """A v0.2 capacity from Ironic's properties (a number, or its text)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def node_figures(capacity, index, trace_format):
    """What a bare-metal host event publishes of its node's figures
    (``(name, value)`` pairs): in v0.2, the columns ``HOST_FIGURES`` (the
    rack, Ironic's cpus, memory_mb, local_gb); in v0.3, every figure under
    its name, the rack as ``rack``. The rack is its index in ``index``."""
    values = dict(capacity or ())
    rack = index.get(values.get(RACK_PROPERTY))
    if trace_format == V02:
        return dict(zip(HOST_FIGURES, (rack, *(
            _whole_number(values.get(name))
            for name in ('cpus', 'memory_mb', 'local_gb')))))
    return {('rack' if name == RACK_PROPERTY else name):
            (rack if name == RACK_PROPERTY else value)
            for name, value in capacity or ()}


def _to_host_trace(rows, racks, epoch, rack_regex, trace_format,
                   node_properties=None):
    """Event tuples -> a host-trace table of ``trace_format``, hosts still
    raw. The host's figures are the v0.2 columns (``HOST_FIGURES``), or,
    in v0.3, PROPERTIES under the same names; a node's, ``node_figures``
    (with ``node_properties``)."""
    hosts, times, events, capacities = zip(*rows)
    pattern = re.compile(rack_regex) if rack_regex else None
    index = {rack: i for i, rack in enumerate(racks)}
    if node_properties is None:
        figures = [dict(zip(HOST_FIGURES, (index.get(rack_of(host, pattern)),
                                           *(capacity or (None,) * 3))))
                   for host, capacity in zip(hosts, capacities)]
    else:
        figures = [node_figures(capacity, index, trace_format)
                   for capacity in capacities]
    times = pa.array(times, pa.int64())
    columns = {
        'event_time': iso_times(times),
        'event_time_sec': seconds_since(times, epoch),
        HOST_COLUMN: pa.array(hosts, pa.string()),
        'event': pa.array(events, pa.string()),
    }
    if trace_format == V02:
        columns.update({name: pa.array([f[name] for f in figures], pa.int64())
                        for name in HOST_FIGURES})
    else:
        columns['properties'] = pa.array(
            [host_properties(f) for f in figures], pa.string())
    table = HOST_TRACES[trace_format]
    trace = pa.table({field: columns[field] for field in table.fields},
                     schema=table.schema)
    c.count(c.HOST_TRACE_ROWS, trace.num_rows)
    c.record_epoch(epoch)
    yield trace


def _sorted_racks(hosts, rack_regex):
    pattern = re.compile(rack_regex) if rack_regex else None
    return sorted({rack for rack in (rack_of(h, pattern) for h in hosts)
                   if rack is not None})


def _node_rack(event):
    """The rack of a node's event (its ``RACK_PROPERTY``), if any."""
    rack = dict(event[3] or ()).get(RACK_PROPERTY)
    if rack is not None:
        yield rack


def latest_node_figures(pairs, names):
    """``(state index, (table, Arrow batch))`` pairs of
    ``NODE_SOURCE_TABLES`` -> an Arrow table of each node of the latest
    state, ``node`` (its uuid), and its v0.3 figures (``names``) as JSON
    members (``NODE_FIGURES``): as the host table publishes them, the rack
    its index among the racks of every state."""
    by_state = defaultdict(list)
    for state, pair in pairs:
        by_state[state].append(pair)
    # The host table counts these rows; here they are only looked at.
    with c.uncounted():
        states = [dict(_node_states((state, by_state[state]), names))
                  for state in sorted(by_state)]
    racks = sorted({dict(node_state.node.capacity).get(RACK_PROPERTY)
                    for state in states for _, node_state in state.values()}
                   - {None})
    index = {rack: i for i, rack in enumerate(racks)}
    latest = states[-1] if states else {}
    return pa.table({
        'node': pa.array(list(latest), pa.string()),
        NODE_FIGURES: pa.array(
            [host_properties(node_figures(
                node_state.node.capacity, index, V03))[1:-1]
             for _, node_state in latest.values()], pa.string())})


class NodeFigures(beam.PTransform):
    """``(state index, (table, Arrow batch))`` pairs of
    ``NODE_SOURCE_TABLES`` -> one element: ``latest_node_figures``."""

    def __init__(self, names):
        super().__init__()
        self.names = names

    def expand(self, rows):
        return (rows
                | 'AllNodeRows' >> beam.combiners.ToList()
                | 'LatestNodeFigures' >> beam.Map(latest_node_figures,
                                                  self.names))


def _first_known(epoch, earliest_host_event):
    return epoch if epoch is not None else earliest_host_event


class BuildHostTrace(beam.PTransform):
    """``(state index, (table, Arrow batch))`` pairs of ``compute_nodes``
    and ``services`` (``schema.source_schema``), or on bare metal
    (``spec.node_properties``) of ``NODE_SOURCE_TABLES``, -> host-trace
    Arrow tables (``schema.HOST_TRACES[spec.trace_format].schema``).

    ``key``: a one-element PCollection holding the masking key, shared with
    the instance table (``BuildTrace``) so that hosts are masked alike;
    without it the transform makes its own. ``epoch``: a one-element
    PCollection, the instance table's epoch (``BuildTrace``'s ``EPOCH``),
    which the seconds then count from instead of ``spec.epoch``; where it
    holds None (no instance rows) they count from the earliest host event.
    """

    def __init__(self, spec, key=None, epoch=None):
        super().__init__()
        self.spec = spec
        self.key = key
        self.epoch = epoch

    def expand(self, rows):
        spec = self.spec
        events, racks = (self._host_events(rows)
                         if spec.node_properties is None
                         else self._node_events(rows))
        epoch = spec.epoch
        if epoch is None or self.epoch is not None:
            epoch = (events
                     | 'EventTimes' >> beam.Map(lambda event: event[1])
                     | 'Earliest' >> beam.CombineGlobally(min_or_none))
            if self.epoch is not None:
                epoch = self.epoch | 'OrEarliest' >> beam.Map(
                    _first_known, beam.pvalue.AsSingleton(epoch))
            epoch = beam.pvalue.AsSingleton(epoch)
        trace = (events
                 | 'Batch' >> beam.BatchElements(
                     min_batch_size=EVENTS_PER_BATCH,
                     max_batch_size=EVENTS_PER_BATCH)
                 | 'HostTrace' >> c.Counted(
                     _to_host_trace, beam.pvalue.AsSingleton(racks), epoch,
                     spec.rack_regex, spec.trace_format,
                     spec.node_properties))
        if spec.mask_method == NO_MASKING:
            return trace
        key = self.key
        if key is None:
            key = rows.pipeline | 'MaskKey' >> MaskKey(spec.key_source)
        return trace | 'MaskHosts' >> beam.ParDo(
            MaskIdentities((HOST_COLUMN,)), beam.pvalue.AsSingleton(key))

    def _host_events(self, rows):
        """Nova's hosts: (events, the sorted racks of their names)."""
        by_host = (rows
                   | 'RowsByHost' >> c.Counted(_rows_by_host)
                   | 'GroupByHost' >> beam.GroupByKey())
        events = by_host | 'HostEvents' >> c.Counted(_events_of_host,
                                                     self.spec.state_times)
        racks = (by_host
                 | 'Hosts' >> beam.Keys()
                 | 'AllHosts' >> beam.combiners.ToList()
                 | 'SortedRacks' >> beam.Map(_sorted_racks,
                                             self.spec.rack_regex))
        return events, racks

    def _node_events(self, rows):
        """Ironic's nodes: (events, the sorted racks of their figures)."""
        by_node = (rows
                   | 'GroupByState' >> beam.GroupByKey()
                   | 'NodeStates' >> c.Counted(_node_states,
                                               self.spec.node_properties)
                   | 'GroupByNode' >> beam.GroupByKey())
        events = by_node | 'NodeEvents' >> c.Counted(_events_of_node,
                                                     self.spec.state_times)
        racks = (events
                 | 'NodeRacks' >> beam.FlatMap(_node_rack)
                 | 'AllRacks' >> beam.combiners.ToList()
                 | 'SortedRacks' >> beam.Map(lambda racks: sorted(set(racks))))
        return events, racks


# What CountHostsWithoutComputeNode groups: a host of the instance table,
# and a host the host table creates.
_USED, _CREATED = 'used', 'created'


def _instance_hosts(trace):
    for host in pc.unique(trace.column(HOST_COLUMN)).to_pylist():
        if host:
            yield host, _USED


def _created_hosts(trace):
    created = trace.filter(pc.equal(trace.column('event'), CREATE))
    for host in pc.unique(created.column(HOST_COLUMN)).to_pylist():
        yield host, _CREATED


def _without_compute_node(element):
    host, tags = element
    tags = set(tags)
    if _USED in tags:
        c.count_linked(c.INSTANCE_HOSTS, 1)
        if _CREATED not in tags:
            c.count_linked(c.HOSTS_WITHOUT_COMPUTE_NODE, 1)
            yield host


class CountHostsWithoutComputeNode(beam.PTransform):
    """``(instance trace tables, host trace tables)`` of one run -> the
    hosts of the instance table that the host table never creates: hosts
    without a compute node row. Counts, as data, those
    (``HOSTS_WITHOUT_COMPUTE_NODE``) and all distinct hosts of the instance
    table (``INSTANCE_HOSTS``). It only counts: their instance rows stay in
    the trace.

    Both tables are masked with one key (or neither), so their masked names
    compare as the raw names do."""

    def expand(self, traces):
        instance_trace, host_trace = traces
        return ((instance_trace | 'InstanceHosts' >> beam.FlatMap(
                    _instance_hosts),
                 host_trace | 'CreatedHosts' >> beam.FlatMap(_created_hosts))
                | 'BothTables' >> beam.Flatten()
                | 'GroupByHost' >> beam.GroupByKey()
                | 'WithoutComputeNode' >> c.Counted(_without_compute_node))
