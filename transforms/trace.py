"""From the three Nova source tables to trace rows: the whole core, once.

Every source feeds this transform and every sink reads from it::

    (table, batch) ── validate ── join ── mask (key side input) ── derive (epoch side input)
       events, actions, instances

and on bare metal (``transforms.baremetal``), between the join and the
masking, each instance's physical host (its Ironic node), lease and node's
figures.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import apache_beam as beam

from starcompactor.transforms import counters as c
from starcompactor.transforms.baremetal import (
    AUTO, LEASE_ID, VM, IronicNodes, LinkLeases, LinkNodeFigures,
    PhysicalHosts, is_hypervisors)
from starcompactor.transforms.derive import to_trace
from starcompactor.transforms.exclude import Exclusions
from starcompactor.transforms.join import (
    EARLIEST_START, JOINED, JoinEventsToInstances)
from starcompactor.transforms.mask import (
    NO_MASKING, HMAC_SHA256, KeySource, MaskIdentities, MaskKey, masked_columns)
from starcompactor.transforms.schema import V02
from starcompactor.transforms.validate import validate


# Outputs of ``BuildTrace(..., with_epoch=True)``.
TRACE = 'trace'
EPOCH = 'epoch'


@dataclass(frozen=True)
class TraceSpec:
    """Everything that shapes a trace, besides the rows themselves."""
    mask_method: str = HMAC_SHA256
    key_source: KeySource = KeySource()
    mask_uuid: bool = False
    epoch: Optional[int] = None      # seconds since 1970; None = earliest start
    cut: Optional[int] = None        # events finished after it are unfinished
    exclude: Exclusions = Exclusions()   # instances kept out, and counted
    trace_format: str = V02          # schema.TRACE_FORMATS
    instance_type: str = VM          # baremetal.INSTANCE_TYPES
    node_properties: Tuple[str, ...] = ()   # a bare-metal node's figures


def _validated(tagged, cut):
    """Counts a source batch read; events and instances lose their bad rows
    (counted by reason) on the way."""
    name, batch = tagged
    c.count_read(name, batch.num_rows)
    batch, rejects = validate(name, batch, cut)
    for reason, n in rejects.items():
        c.count_rejected(name, reason, n)
    if batch.num_rows:
        yield name, batch


def _derive(joined, epoch, trace_format):
    trace = to_trace(joined, epoch, trace_format)
    c.count(c.TRACE_ROWS, trace.num_rows)
    c.record_epoch(epoch)
    yield trace


class BuildTrace(beam.PTransform):
    """``(table, Arrow batch)`` pairs of the three source tables (in
    ``schema.source_schema``) -> trace Arrow tables
    (``schema.INSTANCE_TRACES[spec.trace_format]``).

    ``num_buckets`` (the join's hash buckets) changes how the work is spread,
    never the trace. ``key``: a one-element PCollection holding the masking
    key (``MaskKey``), for a run that masks several tables alike; without
    it the transform makes its own. With ``with_epoch``, returns ``{TRACE:
    trace tables, EPOCH: one element, the epoch the seconds count from}``
    (None: an empty trace without a given epoch), for a table that must
    count from the same epoch. ``leases``: the ``(table, Arrow batch)``
    pairs of Blazar's ``LEASE_TABLES``, for bare-metal instances' leases
    (``baremetal.LinkLeases``). ``nodes``: the ``(state index, (table,
    Arrow batch))`` pairs of Ironic's and Blazar's
    ``host_trace.NODE_SOURCE_TABLES``, for the figures
    (``spec.node_properties``) of bare-metal instances' nodes in v0.3
    PROPERTIES (``baremetal.LinkNodeFigures``).
    """

    def __init__(self, spec, num_buckets, key=None, with_epoch=False,
                 leases=None, nodes=None):
        super().__init__()
        if num_buckets < 1:
            raise ValueError(f'num_buckets must be 1 or more, not {num_buckets}')
        self.spec = spec
        self.num_buckets = num_buckets
        self.key = key
        self.with_epoch = with_epoch
        self.leases = leases
        self.nodes = nodes

    def expand(self, batches):
        spec = self.spec
        pipeline = batches.pipeline
        ironic = None
        if spec.instance_type == AUTO:
            # compute_nodes, read too, tell which nodes are Ironic's.
            batches, hypervisors = batches | 'ComputeNodesApart' >> \
                beam.Partition(is_hypervisors, 2)
            ironic = hypervisors | 'IronicNodes' >> IronicNodes()
        join = (batches
                | 'Validate' >> c.Counted(_validated, spec.cut)
                | 'Join' >> JoinEventsToInstances(
                    self.num_buckets, earliest_start=spec.epoch is None,
                    exclude=spec.exclude))
        joined = join[JOINED]
        with_leases = self.leases is not None and spec.instance_type != VM
        if spec.instance_type != VM:
            joined = joined | 'PhysicalHosts' >> PhysicalHosts(
                spec.instance_type, ironic)
        if with_leases:
            joined = joined | 'LinkLeases' >> LinkLeases(self.leases)
        if self.nodes is not None and spec.instance_type != VM:
            joined = joined | 'LinkNodeFigures' >> LinkNodeFigures(
                self.nodes, spec.node_properties)

        if spec.mask_method != NO_MASKING:
            key = self.key
            if key is None:
                key = pipeline | 'MaskKey' >> MaskKey(spec.key_source)
            masked = masked_columns(spec.mask_uuid) + (
                (LEASE_ID,) if with_leases else ())
            joined = joined | 'MaskIdentities' >> beam.ParDo(
                MaskIdentities(masked), beam.pvalue.AsSingleton(key))

        epoch = (spec.epoch if spec.epoch is not None
                 else beam.pvalue.AsSingleton(join[EARLIEST_START]))
        trace = joined | 'DeriveSeconds' >> c.Counted(_derive, epoch,
                                                      spec.trace_format)
        if not self.with_epoch:
            return trace
        return {TRACE: trace,
                EPOCH: (join[EARLIEST_START] if spec.epoch is None else
                        pipeline | 'Epoch' >> beam.Create([spec.epoch]))}
