"""The tables a job writes, each at a prefix of its own.

``instances`` and ``hosts`` write one table at ``--output``; ``trace``
writes both, at ``--output`` plus ``-instances`` and ``-hosts``. Each table
is found, refused or replaced, removed after a failed run, summarized and
checked the same way, here.
"""
import os
from dataclasses import dataclass, field

from starcompactor.pipeline import shards
from starcompactor.pipeline.shards import FORMATS, manifest_path
from starcompactor.pipeline.summary import Summary
from starcompactor.transforms import counters
from starcompactor.transforms.host_trace import HOST_TABLES, NODE_TABLES
from starcompactor.transforms.schema import (
    HOST_TRACE, INSTANCE_TRACE, SOURCE_TABLES, TraceTable)


@dataclass(frozen=True)
class TableKind:
    """A kind of trace table: its columns, the source tables its summary
    balances, and the counter of its rows."""
    name: str
    trace: TraceTable
    counted: tuple
    rows_counter: str


INSTANCE_TABLE = TableKind('instance events', INSTANCE_TRACE, SOURCE_TABLES,
                           counters.TRACE_ROWS)
HOST_TABLE = TableKind('host events', HOST_TRACE, HOST_TABLES,
                       counters.HOST_TRACE_ROWS)
# The host table of a bare-metal cloud: Ironic's nodes.
NODE_TABLE = TableKind('host events', HOST_TRACE, NODE_TABLES,
                       counters.HOST_TRACE_ROWS)


@dataclass
class TableOutput:
    """One table of a run: where its files go (``prefix``), what it is, the
    source its rows come from (for the leak check), the fields masked in
    it, and what else its manifest tells."""
    prefix: str
    kind: TableKind
    source: object
    masked: tuple = ()
    facts: dict = field(default_factory=dict)

    def files(self, formats=FORMATS):
        return shards.find(self.prefix, formats)

    def existing(self):
        """Its files and manifest already on disk."""
        found = self.files(FORMATS)
        if os.path.exists(manifest_path(self.prefix)):
            found.append(manifest_path(self.prefix))
        return found

    def remove_partial(self):
        """After a failed or interrupted run: the shards and manifest it
        wrote before it stopped (an interrupt can come while Beam renames
        shards to their final names)."""
        written = self.files(FORMATS) + [
            manifest_path(self.prefix), manifest_path(self.prefix) + '.tmp']
        for path in written:
            if os.path.exists(path):
                os.remove(path)

    def summarize(self, totals, seconds, formats):
        """Its summary, from the run's counts."""
        return Summary.from_counters(totals, seconds, self.files(formats),
                                     self.kind.counted,
                                     self.kind.rows_counter)
