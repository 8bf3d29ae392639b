"""The ``trace`` job: both tables of the trace, instance events and host
events, in one run::

    MaskKey: one key, a side input of both tables' masking
    ReadNova ─── BuildTrace ─── instance trace ─┬─ WriteInstances
                     │ epoch (side input)       │
    ReadState* ─ BuildHostTrace ── host trace ──┼─ WriteHosts
                                                └─ CountHostsWithoutComputeNode

One key masks both tables (a random one is drawn once per run), so
``HOST_NAME (PHYSICAL)`` matches between them; the host table's seconds
count from the instance table's epoch (``--epoch``, else its earliest event
start). The tables go to ``PREFIX-instances`` and ``PREFIX-hosts``, each
with its manifest. Hosts of the instance table that the host table never
creates (no compute node row) are counted; their instance rows stay.

It composes the ``instances`` job (settings, instance table, run) and the
host table of the ``hosts`` job (``hosts.HostTable``).
"""
import os

from starcompactor.pipeline import instances
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.hosts import host_table
from starcompactor.pipeline.options import BareMetalOptions, InstancesOptions
from starcompactor.pipeline.shards import HOSTS_SUFFIX, INSTANCES_SUFFIX
from starcompactor.pipeline.sources import nova_source
from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.transforms import counters
from starcompactor.transforms.host_trace import CountHostsWithoutComputeNode
from starcompactor.transforms.baremetal import VM
from starcompactor.transforms.schema import (
    HOST_SOURCE_TABLES, SOURCE_TABLES, V03)
from starcompactor.transforms.trace import EPOCH, TRACE


def _latest_state(source, hosts):
    """The instance source of a trace from dumps (and its leases'): a
    series of dumps is a series of database states, and the latest holds
    every instance row not purged since; the instance table is read from
    it alone (from all of them, every row would be read once per dump)."""
    if not isinstance(source, NovaDumpSource):
        return source
    _, latest = hosts.states[-1]
    return NovaDumpSource(latest.paths, source.databases,
                          archived=source.archived, window=source.window,
                          tables=source.tables)


class TraceJob(instances.InstancesJob):
    """Validated settings of one ``trace`` run, and the graph they
    describe."""
    command = 'trace'

    def __init__(self, options, now=None):
        super().__init__(options, now)
        # --start and --end select instance events; the host table holds
        # every host event.
        host_source = nova_source(options, HOST_SOURCE_TABLES, self.cut)
        host_source.window = (None, None)
        self.hosts = host_table(options, host_source, self.cut,
                                self.spec.trace_format)
        self.source = _latest_state(self.source, self.hosts)
        if self.leases is not None:     # Blazar as of the same state
            self.leases = _latest_state(self.leases, self.hosts)
        self.outputs = [self.instance_output(self.output + INSTANCES_SUFFIX),
                        self.hosts.output(self.output + HOSTS_SUFFIX)]

    def lease_source(self, options):
        """Blazar's lease tables where the instance table can hold leases
        (Blazar also gives the host table its nodes' capabilities)."""
        if self.links_leases:
            return super().lease_source(options)
        bare = options.view_as(BareMetalOptions)
        if bare.blazar_database and not bare.ironic_database:
            raise UserError('--blazar-database gives bare-metal instances '
                            'their leases (--instance-type baremetal or '
                            'auto, --trace-format v0.3) and Ironic nodes '
                            'their capabilities (--ironic-database): add '
                            'either')
        return None

    def node_properties(self, options):
        """Ironic's nodes are the host table's hosts, and where the
        instance table holds PROPERTIES of bare metal, their figures."""
        bare = options.view_as(BareMetalOptions)
        v03 = options.view_as(InstancesOptions).trace_format == V03
        if bare.ironic_database and (bare.instance_type == VM or not v03):
            return ()
        return super().node_properties(options)

    def node_figures_source(self, options):
        """None: the host table's reads of Ironic and Blazar are shared."""
        return None

    @property
    def progress_tables(self):
        return SOURCE_TABLES + HOST_SOURCE_TABLES

    def build(self, pipeline):
        """Add the job to ``pipeline``: both tables under one key, the host
        table counting from the instance table's epoch; their files, the
        hosts without a compute node and the run's counts."""
        key = self.mask_key(pipeline)
        host_rows = self.hosts.read(pipeline)
        instance_table = self.instance_trace(
            pipeline, key, with_epoch=True,
            nodes=host_rows if self.spec.node_properties else None)
        host_table = self.hosts.trace(pipeline, self.spec, key,
                                      epoch=instance_table[EPOCH],
                                      rows=host_rows)
        files = (self.write(instance_table[TRACE], self.outputs[0],
                            'WriteInstances'),
                 self.write(host_table, self.outputs[1], 'WriteHosts'))
        _ = ((instance_table[TRACE], host_table)
             | 'HostsWithoutComputeNode' >> CountHostsWithoutComputeNode())
        self.write_counts(pipeline)
        return files

    def summary_lines(self, summaries):
        for output, summary in zip(self.outputs, summaries):
            first, *rest = summary.lines()
            yield f'{output.kind.name} ({output.prefix}): {first}'
            yield from rest
        hosts, without_node = _linked(summaries[0])
        yield (f'  hosts of instance events {hosts:,}, without a compute '
               f'node row {without_node:,} (their instance rows are in the '
               f'trace)')
        yield from self.baremetal_lines(summaries[0])

    def facts(self, summary, output=None):
        """Each table's manifest also names the other, and tells how the
        two link."""
        facts = super().facts(summary, output)
        hosts, without_node = _linked(summary)
        facts['tables'] = {
            'instances': os.path.basename(self.outputs[0].prefix),
            'hosts': os.path.basename(self.outputs[1].prefix),
            counters.INSTANCE_HOSTS: hosts,
            counters.HOSTS_WITHOUT_COMPUTE_NODE: without_node}
        return facts


def _linked(summary):
    """(hosts of the instance table, those without a compute node row)."""
    return (summary.linked.get(counters.INSTANCE_HOSTS, 0),
            summary.linked.get(counters.HOSTS_WITHOUT_COMPUTE_NODE, 0))


def run(argv):
    return instances.run(argv, TraceJob)
