"""The ``hosts`` job: Nova ``compute_nodes`` and ``services`` -> the
anonymized host (machine) event trace.

It runs as the ``instances`` job does (output, progress, counts, manifest,
leak check: ``instances.InstancesJob``); what differs is what it reads and
builds, ``HostTable``, which the ``trace`` job shares. A server, or one
dump, is one database state; several dumps (or a folder of them) are a
series of states, ordered by each dump's own time.
"""
import dataclasses
import datetime as dt
import os
import re

import apache_beam as beam

from starcompactor.pipeline import instances
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.options import (
    BareMetalOptions, HostsOptions, InstancesOptions)
from starcompactor.pipeline.outputs import HOST_TABLE, NODE_TABLE, TableOutput
from starcompactor.pipeline.sources import node_source, split_list
from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.pipeline.sources.dump.files import open_dump, compression_of
from starcompactor.pipeline.times import UTC, to_iso, to_seconds
from starcompactor.transforms.baremetal import VM
from starcompactor.transforms.nodes import (
    DEFAULT_NODE_PROPERTIES, V02_NODE_FIGURES)
from starcompactor.transforms.host_trace import (
    HOST_COLUMN, HOST_EVENTS, BuildHostTrace, HostTraceSpec)
from starcompactor.transforms.schema import (
    HOST_SOURCE_TABLES, HOST_TRACES, V02)

# mysqldump and mariadb-dump end with this line (unless --skip-dump-date),
# in the dumping machine's time, taken as UTC.
DUMP_COMPLETED = re.compile(
    rb'^-- Dump completed on (\d{4}-\d\d-\d\d) +(\d\d?:\d\d:\d\d)\s*$', re.M)
_TAIL_BYTES = 4096


def dump_files(paths):
    """The files given, with each folder replaced by the files in it."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name)
                            for name in os.listdir(path)
                            if os.path.isfile(os.path.join(path, name)))
        else:
            files.append(path)
    return files


def dump_time(path):
    """When the dump at ``path`` was completed, as its trailer says, or
    None. A plain file is read from its end; a compressed one through."""
    compression = compression_of(path)
    if compression is None:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - _TAIL_BYTES))
            tail = f.read()
    else:
        tail = b''
        with open_dump(path, compression) as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                tail = (tail + block)[-_TAIL_BYTES:]
    found = DUMP_COMPLETED.findall(tail)
    if not found:
        return None
    day, time_of_day = found[-1]
    return dt.datetime.fromisoformat(
        f'{day.decode()}T{time_of_day.decode():0>8}').replace(tzinfo=UTC)


class HostTable:
    """The host table of a run: the database states it is made from (a
    server or one dump: one state, taken at the cut; several dumps, or a
    folder of them: a series, in the order of their own times), how racks
    are told, and its branch of the graph. ``source`` reads the host
    tables (``HOST_SOURCE_TABLES``); ``trace_format``, the table's
    columns (``schema.HOST_TRACES``). On bare metal, ``source`` reads
    Ironic's and Blazar's tables (``host_trace.NODE_SOURCE_TABLES``) and
    ``node_properties`` names the nodes' figures."""

    def __init__(self, source, rack_regex, cut, trace_format=V02,
                 node_properties=None):
        self.rack_regex = rack_regex
        self.trace_format = trace_format
        self.node_properties = node_properties
        if rack_regex:
            try:
                re.compile(rack_regex)
            except re.error as e:
                raise UserError(f'--rack-regex {rack_regex!r} is not a '
                                f'regular expression: {e}') from None
        self.source = source
        self.states = [(cut, source)]
        if isinstance(source, NovaDumpSource):
            self.source = self._dump_series(source, cut)

    def _dump_series(self, given, cut):
        """The states of a series of dumps, in the order of their times;
        returns the source of all of them together (its identities, its
        description)."""
        paths = dump_files(given.paths)
        if not paths:
            raise UserError(f'no dump files in {", ".join(given.paths)}')

        def source(files):
            return NovaDumpSource(files, given.databases,
                                  archived=given.archived,
                                  tables=given.tables)

        for path in paths:
            if not os.path.isfile(path):
                raise UserError(f'{path}: no such dump file')
        timed = [(dump_time(path), path) for path in paths]
        if len(timed) > 1:
            undated = [path for time, path in timed if time is None]
            if undated:
                raise UserError(
                    f'{undated[0]} has no "-- Dump completed on" line: the '
                    f'time of its state is unknown (dumped with '
                    f'--skip-dump-date?)')
            timed.sort()
        self.states = [(time or cut, source([path])) for time, path in timed]
        return source(paths)

    def _check_same_databases(self, state):
        """A series is states of the same databases: a dump of one cell
        after a dump of another would read as every host of the first cell
        deleted. Each state's databases are those asked for, or, found by
        the plan, those of the first state."""
        if len(self.states) == 1 or state.databases is not None:
            return
        found = state.found_databases
        if found is None:
            raise UserError(
                f'{state.paths[0]} is compressed: give --databases, so that '
                f'every dump of the series is checked to hold the same '
                f'databases')
        first = self.states[0][1].found_databases
        if found != first:
            raise UserError(
                f'the dumps of a series must hold the same databases, but '
                f'{self.states[0][1].paths[0]} has {", ".join(first)} and '
                f'{state.paths[0]} has {", ".join(found)}: give one dump of '
                f'every cell per state (or --databases)')

    def output(self, prefix):
        """The table, written at ``prefix``."""
        nodes = self.node_properties is not None
        kind = dataclasses.replace(NODE_TABLE if nodes else HOST_TABLE,
                                   trace=HOST_TRACES[self.trace_format])
        facts = {'states': [to_iso(time) for time, _ in self.states]}
        if nodes:
            facts['node_properties'] = list(self.node_properties)
        else:
            facts['rack_regex'] = self.rack_regex
        return TableOutput(prefix, kind, self.source,
                           masked=(HOST_COLUMN,), facts=facts)

    def read(self, pipeline):
        """Each state's rows, tagged with its index, in one PCollection:
        ``(state index, (table, Arrow batch))`` pairs."""
        read = []
        for index, (_, source) in enumerate(self.states):
            splits, _ = source.plan()
            self._check_same_databases(source)
            read.append(pipeline
                        | f'ReadState{index}' >> source.reader(splits)
                        | f'TagState{index}' >> beam.Map(
                            lambda pair, state: (state, pair), index))
        instances.log.info('reading %s: %d state%s', self.source.about(),
                           len(self.states),
                           '' if len(self.states) == 1 else 's')
        return read | 'AllStates' >> beam.Flatten()

    def trace(self, pipeline, spec, key, epoch=None, rows=None):
        """The host table: ``BuildHostTrace`` of the states' rows (``rows``
        if already ``read``), masked with ``key``, as ``spec``, the run's
        ``TraceSpec``, says; ``epoch``: see ``BuildHostTrace``."""
        if rows is None:
            rows = self.read(pipeline)
        host_spec = HostTraceSpec(
            state_times=tuple(to_seconds(time) for time, _ in self.states),
            mask_method=spec.mask_method, key_source=spec.key_source,
            epoch=spec.epoch, rack_regex=self.rack_regex,
            trace_format=self.trace_format,
            node_properties=self.node_properties)
        return rows | 'BuildHostTrace' >> BuildHostTrace(host_spec, key,
                                                         epoch)


def host_table(options, nova, cut, trace_format):
    """The host table of a run: Nova's compute hosts (``nova``: the Nova
    source of ``HOST_SOURCE_TABLES``), or with ``--ironic-database`` the
    Ironic nodes (with ``--blazar-database``, their Blazar capabilities)."""
    bare = options.view_as(BareMetalOptions)
    rack_regex = options.view_as(HostsOptions).rack_regex
    names = tuple(split_list(bare.properties))
    if not bare.ironic_database:
        if names != DEFAULT_NODE_PROPERTIES:
            raise UserError('--properties names figures of Ironic nodes: add '
                            '--ironic-database')
        return HostTable(nova, rack_regex, cut, trace_format)
    if rack_regex:
        raise UserError('--rack-regex tells racks from host names; Ironic '
                        'nodes have theirs in Blazar (placement.rack)')
    if not names:
        raise UserError('--properties must name at least one capability')
    if trace_format == V02:
        if names != DEFAULT_NODE_PROPERTIES:
            raise UserError('--properties chooses what v0.3 PROPERTIES hold;'
                            ' v0.2 has RACK and capacities: add '
                            '--trace-format v0.3')
        names = V02_NODE_FIGURES
    return HostTable(node_source(options, bare.ironic_database,
                                 bare.blazar_database),
                     None, cut, trace_format, names)


class HostsJob(instances.InstancesJob):
    """Validated settings of one ``hosts`` run, and the graph they
    describe."""
    command = 'hosts'
    source_tables = HOST_SOURCE_TABLES
    trace_tables = tuple(HOST_TRACES.values())   # one per format

    def __init__(self, options, now=None):
        super().__init__(options, now)
        opts = options.view_as(InstancesOptions)
        if opts.mask_uuid or opts.buckets:
            raise UserError('--mask-uuid and --buckets are for instances; '
                            'the host table has no uuid and no join')
        if opts.exclude_users is not None or opts.exclude_projects is not None:
            raise UserError('--exclude-users and --exclude-projects leave '
                            'instances out; the host table has none')
        if self.source.window != (None, None):
            raise UserError('--start and --end select instance events; the '
                            'host table holds every host event')
        if options.view_as(BareMetalOptions).instance_type != VM:
            raise UserError('--instance-type tells instances apart; the '
                            'host table of Ironic nodes comes with '
                            '--ironic-database')
        bare = options.view_as(BareMetalOptions)
        if bare.blazar_database and not bare.ironic_database:
            raise UserError('--blazar-database gives Ironic nodes their '
                            'capabilities: add --ironic-database')
        self.hosts = host_table(options, self.source, self.cut,
                                self.spec.trace_format)
        self.source = self.hosts.source
        self.outputs = [self.hosts.output(self.output)]

    def lease_source(self, options):
        """The host table has no instances, hence no leases."""
        return None

    def node_properties(self, options):
        """... nor instances' nodes: Ironic's nodes are its hosts."""
        return ()

    @property
    def progress_tables(self):
        """The source tables the host table counts (Nova's or Ironic's and
        Blazar's)."""
        return tuple(t for t in self.outputs[0].kind.counted
                     if t != HOST_EVENTS)

    def build(self, pipeline):
        """Add the job to ``pipeline``: the host trace, its files and the
        run's counts."""
        trace = self.hosts.trace(pipeline, self.spec,
                                 self.mask_key(pipeline))
        files = self.write(trace, self.outputs[0])
        self.write_counts(pipeline)
        return files


def run(argv):
    return instances.run(argv, HostsJob)
