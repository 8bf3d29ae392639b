"""Bare-metal nodes in one database state, as the host-event rules
(``transforms.hosts``) see a host: Ironic's ``nodes`` with Blazar's
``computehosts`` and their capabilities.

- The inventory is Ironic's: a node is its ``nodes`` row (Ironic has no
  soft delete; a node removed is gone from the table, so a later state
  without it gives its DELETE). Its CREATE is dated ``created_at``.
- Its figures (what UPDATE events compare and the table publishes) are
  named capabilities: Blazar's (``computehost_extra_capabilities`` rows of
  the node's ``computehosts`` row, ``hypervisor_hostname`` = the node's
  uuid, named by ``resource_properties``, or in older Blazar by their own
  ``capability_name``), else the top-level keys of Ironic's ``properties``
  JSON (``cpus``, ``memory_mb``, ``local_gb``, ...). A figure changed is
  dated by the latest ``updated_at`` of the rows it comes from.
- It is out of service (DISABLE; ENABLE when back) while in maintenance,
  retired, in a provision state that takes no instance (``enroll``,
  ``manageable``: where operators park nodes for repair, ``inspect
  failed``, ``clean failed``), or not reservable (or ``disabled``, in
  Chameleon's Blazar) in Blazar; dated by the latest ``updated_at`` of its
  Ironic and Blazar rows.

Blazar rows soft-deleted by Chameleon's Blazar (``deleted`` set) describe
no node any more: they are counted, never used. Every Ironic node,
Blazar host and capability row read is used or counted under a reason.
"""
import json
from dataclasses import dataclass

from starcompactor.transforms import counters as c
from starcompactor.transforms.hosts import Node, Service
from starcompactor.transforms.schema import (
    BLAZAR_CAPABILITIES, BLAZAR_HOSTS, BLAZAR_PROPERTIES, DB, IRONIC_NODES)
from starcompactor.transforms.validate import parse_nova_times

OUT_OF_SERVICE_STATES = frozenset({'enroll', 'manageable', 'inspect failed',
                                   'clean failed'})
# The rack: published as an index among the sorted distinct racks.
RACK_PROPERTY = 'placement.rack'
# The figures of v0.3 PROPERTIES by default (--properties), Blazar property
# names as the original Star Compactor chose them: node type, rack,
# platform, memory, cores (threads, sockets), disk.
DEFAULT_NODE_PROPERTIES = (
    'node_type', RACK_PROPERTY, 'architecture.platform_type',
    'main_memory.ram_size', 'architecture.smt_size', 'architecture.smp_size',
    'storage_devices.0.size')
# The figures of the v0.2 host table: RACK and the capacities, from
# Blazar's placement.rack and Ironic's properties.
V02_NODE_FIGURES = (RACK_PROPERTY, 'cpus', 'memory_mb', 'local_gb')

# Rows left out, by reason.
NO_UUID = 'no_uuid'                  # an Ironic node without its uuid
NO_IRONIC_NODE = 'no_ironic_node'    # a Blazar host that is no node
DELETED = 'deleted'                  # soft-deleted (Chameleon's Blazar)
DUPLICATE_HOST = 'duplicate_host'    # a second live Blazar host of a node
NO_HOST = 'no_host'                  # a capability of no live node's host
NOT_LISTED = 'not_listed'            # a capability not among the figures


@dataclass(frozen=True)
class NodeState:
    """One node in one state, as ``transforms.hosts`` compares them:
    ``node.capacity`` holds its figures, ``(name, value)`` pairs."""
    node: Node
    service: Service


def _rows(table, columns):
    return zip(*(table.column(name).to_pylist() for name in columns))


def _times(table, column):
    """Seconds since 1970 of a time column, and which values are bad."""
    times, bad = parse_nova_times(table.column(column))
    return times.to_pylist(), bad.to_pylist()


def _is_deleted(value):
    return value not in (None, '', '0')


def _latest(*times):
    return max((t for t in times if t is not None), default=None)


def _ironic_properties(text):
    """The top-level values of Ironic's ``properties`` JSON ({} if it is
    none)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ironic_nodes(nodes):
    """``{uuid: (key, created, updated, properties, out of service)}``;
    bad rows counted."""
    created, created_bad = _times(nodes, 'created_at')
    updated, updated_bad = _times(nodes, 'updated_at')
    found = {}
    for (db, id_, uuid, maintenance, state, retired, properties), \
            created_at, created_wrong, updated_at, updated_wrong in zip(
            _rows(nodes, (DB, 'id', 'uuid', 'maintenance', 'provision_state',
                          'retired', 'properties')),
            created, created_bad, updated, updated_bad):
        if not uuid:
            c.count_rejected(IRONIC_NODES, NO_UUID, 1)
        elif created_at is None or created_wrong or updated_wrong:
            c.count_rejected(IRONIC_NODES, c.EVENT_BAD_TIME, 1)
        else:
            c.count_in_trace(IRONIC_NODES, 1)
            out = bool(maintenance) or bool(retired) or \
                state in OUT_OF_SERVICE_STATES
            found[uuid] = ((db, id_), created_at, updated_at,
                           _ironic_properties(properties), out)
    return found


def _blazar_hosts(hosts, nodes):
    """``{computehost id: (node uuid, updated, out of service)}`` of the
    live Blazar hosts of ``nodes``; the others counted."""
    updated, _ = _times(hosts, 'updated_at')
    created, _ = _times(hosts, 'created_at')
    found, taken = {}, set()
    for (id_, node, reservable, disabled, deleted), updated_at, \
            created_at in zip(_rows(hosts, (
                'id', 'hypervisor_hostname', 'reservable', 'disabled',
                'deleted')), updated, created):
        if _is_deleted(deleted):
            c.count_rejected(BLAZAR_HOSTS, DELETED, 1)
        elif node not in nodes:
            c.count_rejected(BLAZAR_HOSTS, NO_IRONIC_NODE, 1)
        elif node in taken:
            c.count_rejected(BLAZAR_HOSTS, DUPLICATE_HOST, 1)
        else:
            c.count_in_trace(BLAZAR_HOSTS, 1)
            taken.add(node)
            found[id_] = (node, _latest(updated_at, created_at),
                          reservable == 0 or bool(disabled))
    return found


def _capabilities(capabilities, names, hosts, properties):
    """``{node uuid: {name: (value, updated)}}`` of the listed ``names``;
    the other rows counted."""
    property_names = dict(_rows(properties, ('id', 'property_name')))
    updated, _ = _times(capabilities, 'updated_at')
    created, _ = _times(capabilities, 'created_at')
    found = {}
    for (host, property_id, own_name, value), updated_at, created_at in zip(
            _rows(capabilities, ('computehost_id', 'property_id',
                                 'capability_name', 'capability_value')),
            updated, created):
        name = property_names.get(property_id, own_name)
        if host not in hosts:
            c.count_rejected(BLAZAR_CAPABILITIES, NO_HOST, 1)
        elif name not in names:
            c.count_rejected(BLAZAR_CAPABILITIES, NOT_LISTED, 1)
        else:
            c.count_in_trace(BLAZAR_CAPABILITIES, 1)
            node = hosts[host][0]
            found.setdefault(node, {})[name] = (
                value, _latest(updated_at, created_at))
    return found


def node_states(tables, names):
    """The nodes of one state: ``tables`` (``{table: Arrow table}`` of
    ``IRONIC_NODES`` and Blazar's ``CAPABILITY_TABLES``, maybe empty) ->
    ``{node uuid: NodeState}``, whose figures are ``names`` (Blazar
    property names, or Ironic's). Every row is counted as read, and as
    used or left out."""
    for table in (IRONIC_NODES, BLAZAR_HOSTS, BLAZAR_CAPABILITIES):
        c.count_read(table, tables[table].num_rows)
    nodes = _ironic_nodes(tables[IRONIC_NODES])
    hosts = _blazar_hosts(tables[BLAZAR_HOSTS], nodes)
    capabilities = _capabilities(tables[BLAZAR_CAPABILITIES], set(names),
                                 hosts, tables[BLAZAR_PROPERTIES])
    blazar = {node: (updated, out) for node, updated, out in hosts.values()}
    states = {}
    for uuid, (key, created, updated, ironic, out) in nodes.items():
        blazar_updated, blazar_out = blazar.get(uuid, (None, False))
        known = capabilities.get(uuid, {})
        figures, changed = [], []
        for name in names:
            if name in known:
                value, at = known[name]
                changed.append(at)
            else:
                value = ironic.get(name)
                if value is not None:
                    changed.append(updated)
            figures.append((name, value))
        states[uuid] = NodeState(
            Node(key, created, _latest(*changed) or created, None,
                 tuple(figures)),
            Service(_latest(updated, blazar_updated), out or blazar_out))
    return states
