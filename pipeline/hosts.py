"""The ``hosts`` job: Nova ``compute_nodes`` and ``services`` -> the
anonymized host (machine) event trace.

It runs as the ``instances`` job does (output, progress, counts, manifest,
leak check: ``instances.InstancesJob``); what differs is what it reads and
builds. A server, or one dump, is one database state; several dumps (or a
folder of them) are a series of states, ordered by each dump's own time.
"""
import datetime as dt
import os
import re

import apache_beam as beam

from starcompactor.pipeline import instances
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.counts import WriteCounts
from starcompactor.pipeline.options import HostsOptions, InstancesOptions
from starcompactor.pipeline.sinks import WriteTrace
from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.pipeline.sources.dump.files import open_dump, compression_of
from starcompactor.pipeline.times import UTC, to_iso, to_seconds
from starcompactor.transforms import mask
from starcompactor.transforms.host_trace import (
    HOST_COLUMN, HOST_TABLES, BuildHostTrace, HostTraceSpec)
from starcompactor.transforms.schema import HOST_SOURCE_TABLES, HOST_TRACE

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


class HostsJob(instances.InstancesJob):
    """Validated settings of one ``hosts`` run, and the graph they
    describe."""
    command = 'hosts'
    source_tables = HOST_SOURCE_TABLES
    summary_tables = HOST_TABLES
    trace_table = HOST_TRACE

    def __init__(self, options, now=None):
        super().__init__(options, now)
        opts = options.view_as(InstancesOptions)
        if opts.mask_uuid or opts.buckets:
            raise UserError('--mask-uuid and --buckets are for instances; '
                            'the host table has no uuid and no join')
        if self.source.window != (None, None):
            raise UserError('--start and --end select instance events; the '
                            'host table holds every host event')
        self.rack_regex = options.view_as(HostsOptions).rack_regex
        if self.rack_regex:
            try:
                re.compile(self.rack_regex)
            except re.error as e:
                raise UserError(f'--rack-regex {self.rack_regex!r} is not a '
                                f'regular expression: {e}') from None
        self.states = [(self.cut, self.source)]
        if isinstance(self.source, NovaDumpSource):
            self.source = self._dump_series(self.source)

    def _dump_series(self, given):
        """The states of a series of dumps, in the order of their times;
        returns the source of all of them together (its identities, its
        description)."""
        paths = dump_files(given.paths)
        if not paths:
            raise UserError(f'no dump files in {", ".join(given.paths)}')

        def source(files):
            return NovaDumpSource(files, given.databases,
                                  archived=given.archived,
                                  tables=self.source_tables)

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
        self.states = [(time or self.cut, source([path]))
                       for time, path in timed]
        return source(paths)

    def build(self, pipeline):
        """Add the job to ``pipeline``: each state's rows, tagged with its
        index, into one PCollection; the host trace; its files and counts."""
        read = []
        for index, (_, source) in enumerate(self.states):
            splits, _ = source.plan()
            read.append(pipeline
                        | f'ReadState{index}' >> source.reader(splits)
                        | f'TagState{index}' >> beam.Map(
                            lambda pair, state: (state, pair), index))
        self.estimated_events = None
        instances.log.info('reading %s: %d state%s', self.source.about(),
                           len(self.states),
                           '' if len(self.states) == 1 else 's')
        spec = HostTraceSpec(
            state_times=tuple(to_seconds(time) for time, _ in self.states),
            mask_method=self.spec.mask_method,
            key_source=self.spec.key_source, epoch=self.spec.epoch,
            rack_regex=self.rack_regex)
        files = (read
                 | 'AllStates' >> beam.Flatten()
                 | 'BuildHostTrace' >> BuildHostTrace(spec)
                 | 'WriteTrace' >> WriteTrace(self.output, self.formats,
                                              self.num_shards, self.run_id,
                                              HOST_TRACE))
        _ = pipeline | 'Counts' >> WriteCounts(self.counts_path)
        return files

    def facts(self, summary):
        facts = super().facts(summary)
        if facts['masking']['method'] != mask.NO_MASKING:
            facts['masking']['fields'] = [HOST_COLUMN]
        facts['states'] = [to_iso(time) for time, _ in self.states]
        facts['rack_regex'] = self.rack_regex
        return facts


def run(argv):
    return instances.run(argv, HostsJob)
