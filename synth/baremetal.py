"""A synthetic bare-metal cloud (``starcompactor synth --baremetal``): Nova
with the Ironic driver, reserved through Blazar, as Chameleon runs one.

Three kinds of database, with the real schemas (``nova_schema``,
``baremetal_schema``): the Nova cells (instances, their actions and events,
compute nodes of hypervisor type ``ironic`` driven by one nova-compute
service, ``instances.node`` the node's uuid; all rows in the last cell),
``ironic`` (``nodes``) and ``blazar`` (hosts, capabilities, leases,
reservations, allocations). The model, from its own seed:

* nodes of four types in racks of eight (``placement.rack``), with
  Ironic ``properties`` and Blazar capabilities; 10% retired in the second
  half of the span (gone from Ironic; node, compute node and Blazar host
  deleted), 10% added during it; 20% with a maintenance window (Ironic's
  ``maintenance``; no lease meanwhile);
* leases of one node each, back to back with gaps (a day or two, on
  average), one to seven days long; 20% deleted early by their user,
  keeping their planned ``end_date``, the node's next lease starting
  before it: overlapping spans on one node;
* one or two instances in each lease, one after the other, launched
  minutes after the lease starts and deleted by their user or when the
  lease ends; and some instances in gaps between leases, in no lease
  (operators' burn-in tests);
* Chameleon's Blazar: leases, reservations, allocations and hosts are
  soft-deleted (``deleted``, ``deleted_at``: columns upstream Blazar
  lacks) when deleted, never removed.

``rows(at)`` gives every database's rows as they were at second ``at`` of
the history (default: its end), so that a series of states (nightly dumps)
can be written: rows not yet made are absent, ones deleted since are
deleted, events not yet finished unfinished.
"""
import datetime as dt
import json
import math
import random
from dataclasses import dataclass, field
from typing import List, Optional

from starcompactor.synth.model import _check_cells, _parse_start, _uuid4

DAY, HOUR, MINUTE = 86_400, 3_600, 60
IRONIC, BLAZAR = 'ironic', 'blazar'
COMPUTE_HOST = 'ironic-compute-01'      # the nova-compute driving Ironic
RACK_SIZE = 8
# node type -> (cpus, memory_mb, local_gb, platform, threads, sockets)
NODE_TYPES = {
    'compute_skylake': (48, 196608, 240, 'x86_64', 48, 2),
    'compute_cascadelake': (96, 196608, 480, 'x86_64', 96, 2),
    'gpu_rtx_6000': (64, 196608, 480, 'x86_64', 64, 2),
    'storage_hierarchy': (40, 131072, 14000, 'x86_64', 40, 2),
}
P_RETIRED, P_ADDED, P_MAINTENANCE = 0.10, 0.10, 0.20
P_DELETED_EARLY = 0.20
P_OUTSIDE = 0.30          # a gap of a day or more: an instance in no lease
MEAN_GAP = 1.5 * DAY
INSTANCES_PER_NODE = 25   # about, over the span: nodes = instances / this
EVENTS_PER_INSTANCE = 3   # scheduling, build, terminate
BUILD_SECONDS = (480, 900)


@dataclass
class Node:
    index: int                # 1..n: Ironic's and Nova's ids
    uuid: str
    node_type: str
    rack: str
    created: int
    retired: Optional[int] = None
    maintenance: Optional[tuple] = None       # (start, end, reason)

    def alive(self, at):
        return self.created <= at and (self.retired is None or
                                       at < self.retired)


@dataclass
class Lease:
    id: str
    node: Node
    created: int
    start: int
    end: int                  # as planned: Blazar keeps it
    deleted: Optional[int] = None     # ended early by its user
    reservation: str = ''
    allocation: str = ''

    @property
    def ends(self):
        return self.deleted if self.deleted is not None else self.end


@dataclass
class Instance:
    id: int
    uuid: str
    node: Node
    user: str
    project: str
    launched: int
    deleted: Optional[int]
    build_seconds: int
    lease: Optional[Lease] = None
    requests: List[str] = field(default_factory=list)


class BareMetalHistory:
    """A bare-metal cloud's history: about ``instances`` instances over
    ``days`` from ``start``, in databases ``cells``, ``ironic`` and
    ``blazar``; the same arguments give the same rows."""

    def __init__(self, instances, seed=0, start='2015-09-01', days=365,
                 cells=('nova_cell0', 'nova_cell1'), ironic=IRONIC,
                 blazar=BLAZAR, **_):
        self.rng = random.Random(f'baremetal-{seed}')
        self.seed = seed
        self.base = _parse_start(start)
        self.span = int(days * DAY)
        self.cells = list(_check_cells(cells))
        self.ironic, self.blazar = _check_cells((ironic, blazar))
        self.databases = self.cells + [self.ironic, self.blazar]
        self.now = self.span
        self.nodes = self._nodes(max(8, math.ceil(
            instances / INSTANCES_PER_NODE)))
        self.leases, self.instances = [], []
        for node in self.nodes:
            self._reserve(node)
        self.counts = {}

    # -- the model ----------------------------------------------------------

    def _nodes(self, count):
        rng, nodes = self.rng, []
        types = list(NODE_TYPES)
        for index in range(1, count + 1):
            draw = rng.random()
            created = -rng.randint(30, 400) * DAY
            if draw < P_ADDED:
                created = int(rng.uniform(0.1, 0.8) * self.span)
            node = Node(index, _uuid4(rng), types[(index - 1) % len(types)],
                        f'R{(index - 1) // RACK_SIZE + 1:02d}', created)
            if P_ADDED <= draw < P_ADDED + P_RETIRED:
                node.retired = int(rng.uniform(0.5, 0.95) * self.span)
            if rng.random() < P_MAINTENANCE:
                begin = int(rng.uniform(max(node.created, 0), self.span))
                node.maintenance = (begin, begin + rng.randint(1, 5) * DAY,
                                    rng.choice(('disk replacement',
                                                'firmware upgrade',
                                                'failed cleaning')))
            nodes.append(node)
        return nodes

    def _reserve(self, node):
        """The node's leases and instances, from its first day (or the
        span's) to its retirement (or the span's end)."""
        rng = self.rng
        t = max(node.created, 0) + HOUR
        # a node in service to the end has leases running then
        last = node.retired if node.retired is not None else \
            self.span + 7 * DAY
        while t < min(last, self.span):
            gap = int(rng.expovariate(1 / MEAN_GAP))
            if gap >= DAY and t + 3 * HOUR < last and \
                    rng.random() < P_OUTSIDE:
                self._instance(node, t + HOUR, t + 3 * HOUR, None)
            t += gap
            start = t
            end = start + rng.randint(24, 7 * 24) * HOUR
            window = node.maintenance
            if window and start < window[1] and window[0] < end:
                t = window[1] + HOUR
                continue
            if end > last or start > self.span:
                return
            lease = Lease(_uuid4(rng), node, start - rng.randint(1, 72) * HOUR,
                          start, end, reservation=_uuid4(rng),
                          allocation=_uuid4(rng))
            if rng.random() < P_DELETED_EARLY:
                lease.deleted = start + int((end - start) *
                                            rng.uniform(0.2, 0.8))
            self.leases.append(lease)
            self._lease_instances(lease)
            # after an early delete the next lease may start before the
            # planned end: their spans overlap
            t = lease.ends + (HOUR if lease.deleted else MINUTE)

    def _lease_instances(self, lease):
        rng = self.rng
        launched = lease.start + rng.randint(5, 120) * MINUTE
        count = rng.choice((1, 1, 2))
        for i in range(count):
            last = i == count - 1
            deleted = (lease.ends + rng.randint(1, 60) if last else
                       launched + int((lease.ends - launched) *
                                      rng.uniform(0.3, 0.6)))
            self._instance(lease.node, launched, deleted, lease)
            launched = deleted + rng.randint(5, 60) * MINUTE

    def _instance(self, node, launched, deleted, lease):
        rng = self.rng
        user = rng.randint(1, 40)
        self.instances.append(Instance(
            len(self.instances) + 1, _uuid4(rng), node, f'user-{user:03d}',
            f'project-{user % 12:02d}', launched,
            deleted if deleted < self.span else None,
            rng.randint(*BUILD_SECONDS), lease,
            [f'req-{_uuid4(rng)}' for _ in range(2)]))

    # -- rows ---------------------------------------------------------------

    def time_text(self, t):
        return (self.base + dt.timedelta(seconds=t)).strftime(
            '%Y-%m-%d %H:%M:%S')

    def rows(self, at=None):
        """``(database, table, [row dict, ...])`` of every database as it
        was at second ``at`` (default: the end); counts them in
        ``counts``."""
        at = self.now if at is None else at
        cell = self.cells[-1]
        for db, table, rows in (
                (cell, 'instances', self._instance_rows(at)),
                (cell, 'instance_actions', self._action_rows(at)),
                (cell, 'instance_actions_events', self._event_rows(at)),
                (cell, 'compute_nodes', self._compute_node_rows(at)),
                (cell, 'services', self._service_rows(at)),
                (self.ironic, 'nodes', self._ironic_rows(at)),
                (self.blazar, 'computehosts', self._computehost_rows(at)),
                (self.blazar, 'resource_properties', self._property_rows()),
                (self.blazar, 'computehost_extra_capabilities',
                 self._capability_rows(at)),
                (self.blazar, 'leases', self._lease_rows(at)),
                (self.blazar, 'reservations', self._reservation_rows(at)),
                (self.blazar, 'computehost_allocations',
                 self._allocation_rows(at))):
            self.counts[db, table] = len(rows)
            yield db, table, rows

    def _soft(self, id_, deleted, at):
        """Chameleon's soft delete columns of a row deleted at ``deleted``
        (None: not deleted) as of ``at``."""
        gone = deleted is not None and deleted <= at
        return {'deleted': id_ if gone else None,
                'deleted_at': self.time_text(deleted) if gone else None}

    def _instance_rows(self, at):
        rows = []
        for i in self.instances:
            if i.launched > at:
                continue
            gone = i.deleted is not None and i.deleted <= at
            cpus, memory, disk, *_ = NODE_TYPES[i.node.node_type]
            rows.append({
                'id': i.id, 'uuid': i.uuid, 'user_id': i.user,
                'project_id': i.project, 'hostname': f'bm-{i.id}',
                'display_name': f'bm-{i.id}', 'host': COMPUTE_HOST,
                'node': i.node.uuid, 'memory_mb': memory, 'vcpus': cpus,
                'root_gb': disk, 'vm_state': 'deleted' if gone else 'active',
                'created_at': self.time_text(i.launched),
                'launched_at': self.time_text(i.launched + 3 +
                                              i.build_seconds),
                'deleted_at': self.time_text(i.deleted) if gone else None,
                'deleted': i.id if gone else 0})
        return rows

    def _actions(self, instance):
        """(id, action, start) of an instance's actions."""
        actions = [(2 * instance.id - 1, 'create', instance.launched)]
        if instance.deleted is not None:
            actions.append((2 * instance.id, 'delete', instance.deleted))
        return actions

    def _action_rows(self, at):
        return [{'id': id_, 'action': action, 'instance_uuid': i.uuid,
                 'request_id': request, 'user_id': i.user,
                 'project_id': i.project, 'start_time': self.time_text(start),
                 'created_at': self.time_text(start), 'deleted': 0}
                for i in self.instances
                for (id_, action, start), request in zip(self._actions(i),
                                                         i.requests)
                if start <= at]

    def _event_rows(self, at):
        rows = []
        for i in self.instances:
            events = [(2 * i.id - 1, 'conductor_schedule_and_build_instances',
                       i.launched + 1, 2, 'controller-01'),
                      (2 * i.id - 1, 'compute__do_build_and_run_instance',
                       i.launched + 3, i.build_seconds, COMPUTE_HOST)]
            if i.deleted is not None:
                events.append((2 * i.id, 'compute_terminate_instance',
                               i.deleted + 1, 40, COMPUTE_HOST))
            for action, event, start, seconds, host in events:
                if start > at:
                    continue
                done = start + seconds <= at
                rows.append({
                    'id': len(rows) + 1, 'action_id': action, 'event': event,
                    'start_time': self.time_text(start),
                    'finish_time': (self.time_text(start + seconds)
                                    if done else None),
                    'result': 'Success' if done else None, 'host': host,
                    'created_at': self.time_text(start), 'deleted': 0})
        return rows

    def _compute_node_rows(self, at):
        rows = []
        for n in self.nodes:
            if n.created > at:
                continue
            cpus, memory, disk, *_ = NODE_TYPES[n.node_type]
            gone = n.retired is not None and n.retired <= at
            rows.append({
                'id': n.index, 'uuid': _uuid4(random.Random(n.uuid)),
                'host': COMPUTE_HOST, 'hypervisor_hostname': n.uuid,
                'hypervisor_type': 'ironic', 'hypervisor_version': 1,
                'cpu_info': '', 'vcpus': cpus, 'memory_mb': memory,
                'local_gb': disk, 'vcpus_used': 0, 'memory_mb_used': 0,
                'local_gb_used': 0, 'service_id': 1,
                'created_at': self.time_text(n.created),
                'updated_at': self.time_text(n.retired if gone
                                             else n.created),
                'deleted_at': self.time_text(n.retired) if gone else None,
                'deleted': n.index if gone else 0})
        return rows

    def _service_rows(self, at):
        return [{'id': 1, 'host': COMPUTE_HOST, 'binary': 'nova-compute',
                 'topic': 'compute', 'report_count': max(0, at) // 10,
                 'disabled': 0, 'deleted': 0,
                 'created_at': self.time_text(-400 * DAY),
                 'updated_at': self.time_text(at)}]

    def _maintained(self, node, at):
        window = node.maintenance
        return window is not None and window[0] <= at < window[1]

    def _ironic_rows(self, at):
        rows = []
        for n in self.nodes:
            if not n.alive(at):
                continue
            cpus, memory, disk, platform, *_ = NODE_TYPES[n.node_type]
            changes = [n.created] + [t for t in (n.maintenance or ())[:2]
                                     if t <= at]
            busy = any(i.node is n and i.launched <= at and
                       (i.deleted is None or at < i.deleted)
                       for i in self.instances)
            maintained = self._maintained(n, at)
            rows.append({
                'id': n.index, 'uuid': n.uuid, 'name': f'node-{n.index:03d}',
                'driver': 'ipmi', 'conductor_group': '', 'protected': 0,
                'retired': 0, 'maintenance': int(maintained),
                'maintenance_reason': n.maintenance[2] if maintained
                else None,
                'provision_state': 'active' if busy else 'available',
                'properties': json.dumps({
                    'cpus': cpus, 'memory_mb': memory, 'local_gb': disk,
                    'cpu_arch': platform}),
                'created_at': self.time_text(n.created),
                'updated_at': self.time_text(max(changes))})
        return rows

    def _computehost_rows(self, at):
        rows = []
        for n in self.nodes:
            if n.created > at:
                continue
            cpus, memory, disk, *_ = NODE_TYPES[n.node_type]
            rows.append({
                'id': _host_id(n), 'hypervisor_hostname': n.uuid,
                'vcpus': cpus, 'memory_mb': memory, 'local_gb': disk,
                'cpu_info': '', 'hypervisor_type': 'ironic',
                'hypervisor_version': 1, 'trust_id': 'trust',
                'availability_zone': 'nova', 'reservable': 1,
                'created_at': self.time_text(n.created),
                'updated_at': self.time_text(n.created),
                **self._soft(_host_id(n), n.retired, at)})
        return rows

    def _property_rows(self):
        return [{'id': _property_id(name), 'resource_type': 'physical:host',
                 'property_name': name, 'private': 0,
                 'created_at': self.time_text(-400 * DAY)}
                for name in _capabilities(next(iter(NODE_TYPES)), 'R01')]

    def _capability_rows(self, at):
        return [{'id': _uuid4(random.Random(f'{n.uuid}-{name}')),
                 'computehost_id': _host_id(n), 'property_id':
                 _property_id(name), 'capability_value': value,
                 'created_at': self.time_text(n.created)}
                for n in self.nodes if n.created <= at
                for name, value in _capabilities(n.node_type,
                                                 n.rack).items()]

    def _lease_rows(self, at):
        rows = []
        for i, lease in enumerate(self.leases, 1):
            if lease.created > at:
                continue
            status = ('PENDING' if at < lease.start else 'ACTIVE'
                      if at < lease.ends else 'TERMINATED')
            rows.append({
                'id': lease.id, 'name': f'lease-{i}',
                'user_id': f'user-{i % 40 + 1:03d}', 'project_id':
                f'project-{i % 12:02d}', 'status': status, 'degraded': 0,
                'start_date': self.time_text(lease.start),
                'end_date': self.time_text(lease.end),
                'created_at': self.time_text(lease.created),
                **self._soft(lease.id, lease.deleted, at)})
        return rows

    def _reservation_rows(self, at):
        return [{'id': lease.reservation, 'lease_id': lease.id,
                 'resource_id': _host_id(lease.node),
                 'resource_type': 'physical:host', 'status':
                 'active' if at < lease.ends else 'deleted',
                 'missing_resources': 0, 'resources_changed': 0,
                 'created_at': self.time_text(lease.created),
                 **self._soft(lease.reservation, lease.deleted, at)}
                for lease in self.leases if lease.created <= at]

    def _allocation_rows(self, at):
        return [{'id': lease.allocation, 'compute_host_id':
                 _host_id(lease.node), 'reservation_id': lease.reservation,
                 'created_at': self.time_text(lease.created),
                 **self._soft(lease.allocation, lease.deleted, at)}
                for lease in self.leases if lease.created <= at]


def _host_id(node):
    """The node's Blazar host id (a uuid of its own)."""
    return _uuid4(random.Random(f'blazar-{node.uuid}'))


def _property_id(name):
    return _uuid4(random.Random(f'property-{name}'))


def _capabilities(node_type, rack):
    """A node's Blazar capabilities, Chameleon's names."""
    cpus, memory, disk, platform, threads, sockets = NODE_TYPES[node_type]
    return {'node_type': node_type, 'placement.rack': rack,
            'architecture.platform_type': platform,
            'main_memory.ram_size': str(memory * 2 ** 20),
            'architecture.smt_size': str(threads),
            'architecture.smp_size': str(sockets),
            'storage_devices.0.size': str(disk * 10 ** 9)}
