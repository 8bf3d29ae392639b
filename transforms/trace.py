"""From the three Nova source tables to trace rows: the whole core, once.

Every source feeds this transform and every sink reads from it::

    (table, batch) ── validate ── join ── mask (key side input) ── derive (epoch side input)
       events, actions, instances
"""
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam

from starcompactor.transforms import counters as c
from starcompactor.transforms.derive import to_trace
from starcompactor.transforms.join import (
    EARLIEST_START, JOINED, JoinEventsToInstances)
from starcompactor.transforms.mask import (
    NO_MASKING, HMAC_SHA256, KeySource, MaskIdentities, MaskKey, masked_columns)
from starcompactor.transforms.validate import validate


@dataclass(frozen=True)
class TraceSpec:
    """Everything that shapes a trace, besides the rows themselves."""
    mask_method: str = HMAC_SHA256
    key_source: KeySource = KeySource()
    mask_uuid: bool = False
    epoch: Optional[int] = None      # seconds since 1970; None = earliest start
    cut: Optional[int] = None        # events finished after it are unfinished


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


def _derive(joined, epoch):
    trace = to_trace(joined, epoch)
    c.count(c.TRACE_ROWS, trace.num_rows)
    c.record_epoch(epoch)
    yield trace


class BuildTrace(beam.PTransform):
    """``(table, Arrow batch)`` pairs of the three source tables (in
    ``schema.source_schema``) -> trace Arrow tables (``schema.TRACE_SCHEMA``).

    ``num_buckets`` (the join's hash buckets) changes how the work is spread,
    never the trace.
    """

    def __init__(self, spec, num_buckets):
        super().__init__()
        if num_buckets < 1:
            raise ValueError(f'num_buckets must be 1 or more, not {num_buckets}')
        self.spec = spec
        self.num_buckets = num_buckets

    def expand(self, batches):
        spec = self.spec
        pipeline = batches.pipeline
        join = (batches
                | 'Validate' >> c.Counted(_validated, spec.cut)
                | 'Join' >> JoinEventsToInstances(
                    self.num_buckets, earliest_start=spec.epoch is None))
        joined = join[JOINED]

        if spec.mask_method != NO_MASKING:
            key = pipeline | 'MaskKey' >> MaskKey(spec.key_source)
            joined = joined | 'MaskIdentities' >> beam.ParDo(
                MaskIdentities(masked_columns(spec.mask_uuid)),
                beam.pvalue.AsSingleton(key))

        epoch = (spec.epoch if spec.epoch is not None
                 else beam.pvalue.AsSingleton(join[EARLIEST_START]))
        return joined | 'DeriveSeconds' >> c.Counted(_derive, epoch)
