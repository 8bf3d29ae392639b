"""Bare-metal instances: their physical host, and the lease they ran in.

On a cloud of Nova with the Ironic driver, the physical host of an
instance is its Ironic node: ``instances.node``, the node's uuid, not
``instances.host``, the nova-compute service that drives many nodes. Which
instances are bare metal is the run's ``--instance-type``: all of them
(``baremetal``), none (``vm``), or, with ``auto``, those whose node is a
compute node of hypervisor type ``ironic`` (``compute_nodes.
hypervisor_hostname`` = ``instances.node``; live, deleted and archived
nodes alike), a set as small as the cloud's nodes, a side input::

    joined rows ── physical host (node for bare metal) ── lease ── node's figures ── (mask)
                        ▲ Ironic nodes                     ▲ nodes' leases  ▲ Ironic nodes,
                          (auto: compute_nodes)              (Blazar)         Blazar capabilities

The host is replaced before masking, so the node is masked with the run's
key, as the host table masks it.

The lease link: Blazar reserves a node for a lease through its
``computehosts`` row (``hypervisor_hostname`` = the node's uuid), a
``computehost_allocations`` row, a ``reservations`` row and the
``leases`` row (``start_date``, ``end_date``). A lease spans
``start_date`` to ``end_date``, or to its deletion if that came first
(Chameleon's Blazar keeps ``deleted_at``; upstream Blazar removes the
rows of a deleted lease). Each bare-metal instance gets the lease on its
node whose span covers the start of the instance's first event (bounds
included). Blazar never books a node twice, but spans on one node can
still overlap: back-to-back leases share their boundary second, and
upstream a lease ended early keeps its planned ``end_date`` while the next
one starts. Then the instance's lease is the one that began last (the
larger lease id on a tie): an instance is launched into the lease that
just began, never into one about to end; an instance running on past its
lease's end keeps the lease it started in. Rows soft-deleted by
Chameleon's Blazar count as live ones: the lease of an old instance is
long deleted. An instance with no such lease gets none, and is counted.

The leases of every node are a side input: Blazar's tables grow with
reservations, not with events (a node's allocations, one per lease), so
(node, lease, start, end) of a cloud's whole history is a few MB of Arrow,
and a side input spares the trace rows a third shuffle.
"""
import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c
from starcompactor.transforms.buckets import concat, drop_duplicates
from starcompactor.transforms.derive import LEASE_COLUMNS, NODE_FIGURES
from starcompactor.transforms.host_trace import NodeFigures
from starcompactor.transforms.schema import (
    BLAZAR_ALLOCATIONS, BLAZAR_HOSTS, BLAZAR_LEASES, BLAZAR_RESERVATIONS,
    COMPUTE_NODES, DB, source_schema)
from starcompactor.transforms.validate import parse_nova_times

VM, BAREMETAL, AUTO = 'vm', 'baremetal', 'auto'
INSTANCE_TYPES = (VM, BAREMETAL, AUTO)
IRONIC = 'ironic'        # compute_nodes.hypervisor_type of an Ironic node
BAREMETAL_COLUMN = 'baremetal'   # joined rows: is the instance bare metal
INSTANCE_KEY = [DB, 'instance_uuid']

# linked.<name> counts: Ironic nodes among the compute nodes (auto), and
# the bare-metal instances of the trace.
IRONIC_NODES = 'ironic_nodes'
BAREMETAL_INSTANCES = 'baremetal_instances'
# ... and of them, those whose node is unknown (no instances.node, e.g. in
# audit exports whose trigger does not watch it): their host is empty.
NODE_UNKNOWN = 'baremetal_instances_node_unknown'
# linked.<name> counts of the lease link: the leases of nodes, and the
# bare-metal instances that ran in none of them (their rows stay).
NODE_LEASES = 'node_leases'
WITHOUT_LEASE = 'baremetal_instances_without_lease'
# ... of the node link: bare-metal instances on a node Ironic no longer
# has (their PROPERTIES keep the flavor's figures).
WITHOUT_NODE = 'baremetal_instances_without_node'
LEASE_ID, LEASE_START, LEASE_END = LEASE_COLUMNS

_SEPARATOR = '\x00'      # between a key's database and node: in neither


def _node_keys(dbs, nodes):
    return pc.binary_join_element_wise(dbs.cast(pa.string()),
                                       nodes.cast(pa.string()), _SEPARATOR)


def is_hypervisors(tagged, partitions=2):
    """``beam.Partition`` function: 1 for ``compute_nodes`` batches (what
    ``auto`` reads to tell bare metal), 0 for the instance tables."""
    return int(tagged[0] == COMPUTE_NODES)


def _ironic_keys(batch):
    ironic = batch.filter(pc.fill_null(pc.equal(
        batch.column('hypervisor_type'), IRONIC), False))
    return pc.unique(_node_keys(ironic.column(DB),
                                ironic.column('hypervisor_hostname')))


def _ironic_node_set(batches):
    """Every ``compute_nodes`` batch -> the keys (``db``, node) of the
    Ironic nodes, one Arrow array; counted."""
    keys = [_ironic_keys(batch) for _, batch in batches]
    keys = (pc.unique(pa.concat_arrays(keys)) if keys
            else pa.array([], pa.string()))
    c.count_linked(IRONIC_NODES, len(keys))
    yield keys


class IronicNodes(beam.PTransform):
    """``(compute_nodes, Arrow batch)`` pairs -> one element: the Ironic
    nodes among them, as keys of ``(db, hypervisor_hostname)``."""

    def expand(self, batches):
        return (batches
                | 'AllComputeNodes' >> beam.combiners.ToList()
                | 'IronicNodeSet' >> c.Counted(_ironic_node_set))


def physical_hosts(joined, instance_type, ironic_keys=None):
    """Joined rows -> the same rows, ``host`` replaced by ``node`` where
    the instance is bare metal (``instance_type``; for ``auto``, its
    node's key is among ``ironic_keys``), and marked so in
    ``BAREMETAL_COLUMN``."""
    if instance_type == BAREMETAL:
        bare = pa.repeat(pa.scalar(True), joined.num_rows)
    else:
        bare = pc.fill_null(pc.is_in(
            _node_keys(joined.column(DB), joined.column('node')),
            value_set=ironic_keys), False)
    host = pc.if_else(bare, joined.column('node').cast(pa.string()),
                      joined.column('host').cast(pa.string()))
    joined = joined.set_column(joined.schema.get_field_index('host'),
                               'host', host)
    return joined.append_column(BAREMETAL_COLUMN, bare)


def _physical_hosts(joined, instance_type, ironic_keys=None):
    joined = physical_hosts(joined, instance_type, ironic_keys)
    bare = joined.filter(joined.column(BAREMETAL_COLUMN))
    c.count_linked(BAREMETAL_INSTANCES,
                   bare.group_by(INSTANCE_KEY).aggregate([]).num_rows)
    unknown = bare.filter(pc.is_null(bare.column('node')))
    c.count_linked(NODE_UNKNOWN,
                   unknown.group_by(INSTANCE_KEY).aggregate([]).num_rows)
    yield joined


class PhysicalHosts(beam.PTransform):
    """Joined rows (each table holding all rows of its instances, as the
    join makes them) -> their physical hosts (``physical_hosts``).
    ``ironic``: for ``auto``, the one-element PCollection of
    ``IronicNodes``."""

    def __init__(self, instance_type, ironic=None):
        super().__init__()
        self.instance_type = instance_type
        self.ironic = ironic

    def expand(self, joined):
        ironic = (() if self.ironic is None
                  else (beam.pvalue.AsSingleton(self.ironic),))
        return joined | 'NodeIsHost' >> c.Counted(
            _physical_hosts, self.instance_type, *ironic)


# -- the lease link ----------------------------------------------------------

SPANS_SCHEMA = pa.schema([('node', pa.string()), (LEASE_ID, pa.string()),
                          (LEASE_START, pa.int64()), (LEASE_END, pa.int64())])


def lease_spans(tables):
    """Blazar's ``{table: Arrow table}`` (``LEASE_TABLES``) -> every
    node's leases (``SPANS_SCHEMA``: times in seconds since 1970), each
    once; leases with a time that is none are left out. A lease ends at
    its ``end_date``, or when it was deleted if that came first (Chameleon
    keeps ``deleted_at``): the node was free from then on."""
    hosts = tables[BLAZAR_HOSTS].select(['id', 'hypervisor_hostname'])
    reservations = tables[BLAZAR_RESERVATIONS].select(['id', LEASE_ID])
    leases = tables[BLAZAR_LEASES]
    start, _ = parse_nova_times(leases.column('start_date'))
    end, _ = parse_nova_times(leases.column('end_date'))
    deleted, _ = parse_nova_times(leases.column('deleted_at'))
    ended = pc.min_element_wise(end, deleted)     # nulls skipped
    leases = pa.table({LEASE_ID: leases.column('id'), LEASE_START: start,
                       LEASE_END: ended})
    spans = (tables[BLAZAR_ALLOCATIONS]
             .select(['compute_host_id', 'reservation_id'])
             .join(hosts.rename_columns(['compute_host_id', 'node']),
                   'compute_host_id', join_type='inner')
             .join(reservations.rename_columns(['reservation_id', LEASE_ID]),
                   'reservation_id', join_type='inner')
             .join(leases, LEASE_ID, join_type='inner')
             .select(SPANS_SCHEMA.names).cast(SPANS_SCHEMA))
    known = pc.and_(pc.is_valid(spans.column('node')),
                    pc.and_(pc.is_valid(spans.column(LEASE_START)),
                            pc.is_valid(spans.column(LEASE_END))))
    spans, _ = drop_duplicates(spans.filter(known), ['node', LEASE_ID])
    return spans


def _lease_spans(pairs):
    by_table = {}
    for table, batch in pairs:
        by_table.setdefault(table, []).append(batch)
    spans = lease_spans({table: concat(by_table.get(table, []),
                                       source_schema(table))
                         for table in (BLAZAR_HOSTS, BLAZAR_ALLOCATIONS,
                                       BLAZAR_RESERVATIONS, BLAZAR_LEASES)})
    c.count_linked(NODE_LEASES, len(pc.unique(spans.column(LEASE_ID))))
    yield spans


class LeaseSpans(beam.PTransform):
    """``(table, Arrow batch)`` pairs of Blazar's ``LEASE_TABLES`` -> one
    element: every node's leases (``lease_spans``)."""

    def expand(self, rows):
        return (rows
                | 'AllLeaseRows' >> beam.combiners.ToList()
                | 'NodesLeases' >> c.Counted(_lease_spans))


def _instance_keys(table):
    return pc.binary_join_element_wise(
        table.column(DB).cast(pa.string()),
        table.column('instance_uuid').cast(pa.string()), _SEPARATOR)


def instance_leases(joined, spans):
    """The lease of each bare-metal instance of ``joined`` (rows with
    ``BAREMETAL_COLUMN``) among ``spans``: ``(db, instance_uuid, lease_id,
    lease_start, lease_end)``, one row per instance that has one."""
    bare = joined.filter(joined.column(BAREMETAL_COLUMN))
    firsts = bare.select([DB, 'instance_uuid', 'node', 'start']).group_by(
        [DB, 'instance_uuid', 'node']).aggregate([('start', 'min')])
    firsts = pa.table({name: firsts.column(name).cast(pa.string())
                       for name in (DB, 'instance_uuid', 'node')} |
                      {'first_start': firsts.column('start_min')})
    candidates = firsts.join(spans, 'node', join_type='inner')
    first = candidates.column('first_start')
    covering = candidates.filter(pc.and_(
        pc.less_equal(candidates.column(LEASE_START), first),
        pc.less_equal(first, candidates.column(LEASE_END))))
    latest_first = covering.sort_by([
        (DB, 'ascending'), ('instance_uuid', 'ascending'),
        (LEASE_START, 'descending'), (LEASE_ID, 'descending')])
    chosen, _ = drop_duplicates(latest_first, [DB, 'instance_uuid'])
    return chosen.select([DB, 'instance_uuid', *LEASE_COLUMNS]), \
        bare.group_by([DB, 'instance_uuid']).aggregate([]).num_rows


def link_leases(joined, spans):
    """Joined rows -> the same rows with their instance's lease
    (``LEASE_COLUMNS``; null for VMs and for bare-metal instances in no
    lease), and how many bare-metal instances have none."""
    chosen, instances = instance_leases(joined, spans)
    rows = pc.index_in(_instance_keys(joined),
                       value_set=_instance_keys(chosen))
    for name in LEASE_COLUMNS:
        joined = joined.append_column(name, chosen.column(name).take(rows))
    return joined, instances - chosen.num_rows


def _link_leases(joined, spans):
    joined, without = link_leases(joined, spans)
    c.count_linked(WITHOUT_LEASE, without)
    yield joined


class LinkLeases(beam.PTransform):
    """Joined rows (after ``PhysicalHosts``; each table holding all rows of
    its instances) -> with their lease (``link_leases``), from the
    ``(table, Arrow batch)`` pairs of Blazar's ``LEASE_TABLES`` in
    ``blazar_rows``."""

    def __init__(self, blazar_rows):
        super().__init__()
        self.blazar_rows = blazar_rows

    def expand(self, joined):
        spans = self.blazar_rows | 'LeaseSpans' >> LeaseSpans()
        return joined | 'InstanceLease' >> c.Counted(
            _link_leases, beam.pvalue.AsSingleton(spans))


# -- the node's figures ------------------------------------------------------

def link_node_figures(joined, figures):
    """Joined rows (after ``physical_hosts``: a bare-metal row's host is
    its node) -> the same rows with ``NODE_FIGURES``, the figures of a
    bare-metal instance's node (``figures``: ``latest_node_figures``),
    null for VMs and for nodes Ironic no longer has; and how many
    bare-metal instances have none."""
    bare = joined.column(BAREMETAL_COLUMN)
    rows = pc.index_in(joined.column('host'),
                       value_set=figures.column('node'))
    members = pc.if_else(bare, figures.column(NODE_FIGURES).take(rows),
                         pa.scalar(None, pa.string()))
    gone = joined.filter(pc.and_(bare, pc.is_null(rows)))
    return (joined.append_column(NODE_FIGURES, members),
            gone.group_by(INSTANCE_KEY).aggregate([]).num_rows)


def _link_node_figures(joined, figures):
    joined, without = link_node_figures(joined, figures)
    c.count_linked(WITHOUT_NODE, without)
    yield joined


class LinkNodeFigures(beam.PTransform):
    """Joined rows (after ``PhysicalHosts``; each table holding all rows of
    its instances) -> with their node's figures (``link_node_figures``),
    from ``node_rows``, ``(state index, (table, Arrow batch))`` pairs of
    Ironic's and Blazar's ``host_trace.NODE_SOURCE_TABLES``; ``names``:
    the figures (``--properties``)."""

    def __init__(self, node_rows, names):
        super().__init__()
        self.node_rows = node_rows
        self.names = names

    def expand(self, joined):
        figures = self.node_rows | 'NodeFigures' >> NodeFigures(self.names)
        return joined | 'InstanceNode' >> c.Counted(
            _link_node_figures, beam.pvalue.AsSingleton(figures))
