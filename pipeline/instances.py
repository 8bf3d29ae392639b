"""The ``instances`` job: Nova tables -> anonymized instance-event trace."""
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import os
import shutil
import stat
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from starcompactor.pipeline import leaks, runners, shards
from starcompactor.pipeline.errors import UserError, interrupted
from starcompactor.pipeline.counts import WriteCounts, counts_path, read_counts
from starcompactor.pipeline.manifest import manifest_of, write_manifest
from starcompactor.pipeline.options import (
    BareMetalOptions, InstancesOptions, NovaSourceOptions)
from starcompactor.pipeline.outputs import INSTANCE_TABLE, TableOutput
from starcompactor.pipeline.progress import ProgressDisplay, run_folder
from starcompactor.pipeline.shards import FORMATS, manifest_path
from starcompactor.pipeline.sinks import WriteTrace
from starcompactor.pipeline.sources import (
    node_source, nova_source, service_source, split_list)
from starcompactor.pipeline.threads import in_background
from starcompactor.pipeline.times import UTC, parse_iso_utc, to_iso, to_seconds
from starcompactor.transforms import mask
from starcompactor.transforms import baremetal
from starcompactor.transforms.baremetal import AUTO, LEASE_ID, VM
from starcompactor.transforms.exclude import Exclusions
from starcompactor.transforms.nodes import DEFAULT_NODE_PROPERTIES
from starcompactor.transforms.schema import (
    COMPUTE_NODES, INSTANCE_TRACES, LEASE_TABLES, SOURCE_TABLES, V03)
from starcompactor.transforms.trace import BuildTrace, TraceSpec

log = logging.getLogger('starcompactor')

EVENTS_PER_BUCKET = 250_000
MIN_BUCKETS = 4


def buckets_for(estimated_events, requested=0):
    """Enough buckets that none outgrows memory, and some parallelism."""
    if requested > 0:
        return requested
    return max(MIN_BUCKETS, math.ceil(estimated_events / EVENTS_PER_BUCKET))


def _load_supplied_key(key_source):
    """A supplied key, read once here: checked before anything runs (the
    workers would refuse it too), fingerprinted for the manifest and looked
    for in the output by the leak check. It never enters the graph: workers
    read it themselves (``MaskKey``). A random key is drawn by the pipeline,
    never here."""
    if key_source.kind == 'file':
        mode = (os.stat(key_source.location).st_mode
                if os.path.exists(key_source.location) else 0)
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning('mask key file %s is readable by other users; '
                        'chmod 600 it', key_source.location)
    try:
        return mask.load_key(key_source)
    except mask.MaskKeyError as e:
        raise UserError(str(e))


def _check_writable(folder):
    """Fails unless ``folder`` can be made (where missing) and written: the
    nearest existing folder on its path is probed with a temporary file."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or '.'
    if not os.path.isdir(existing):
        raise UserError(f'cannot write the trace into folder {folder}: '
                        f'{existing} is a file')
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise UserError(f'cannot write the trace into folder {folder}: '
                        f'{e.strerror}')


def _excluded(text, option):
    """The values of ``--exclude-users`` or ``--exclude-projects`` (None:
    not given). The values are raw identities: no message repeats them."""
    if text is None:
        return ()
    values = [value.strip() for value in text.split(',')]
    if not all(values):
        raise UserError(f'{option} takes comma-separated ids, none of them '
                        f'empty (e.g. {option} ID1,ID2)')
    return tuple(dict.fromkeys(values))


def _instance_tables(tables, instance_type, options):
    """What the source reads for ``--instance-type``: ``auto`` tells bare
    metal by the compute nodes' hypervisor type, so it reads them too. Bare
    metal needs ``instances.node``, which the compute API source does not
    give, and ``auto`` compute nodes, which audit exports do not hold."""
    source = options.view_as(NovaSourceOptions)
    if instance_type != VM and source.api:
        raise UserError(f'--instance-type {instance_type} reads '
                        f'instances.node from the databases or dumps; the '
                        f'compute API source traces virtual machines')
    if instance_type == AUTO and source.audit_dirs:
        raise UserError('--instance-type auto tells bare metal by the '
                        'compute nodes, which audit exports do not hold: '
                        'give --instance-type baremetal or vm')
    if instance_type == AUTO and tables == SOURCE_TABLES:
        return tables + (COMPUTE_NODES,)
    return tables


def _about(count):
    """``count`` rounded to two significant digits, for estimates."""
    if count < 100:
        return f'{count:,}'
    digits = len(str(count)) - 2
    return f'{round(count, -digits):,}'


class InstancesJob:
    """Validated settings of one run, and the graph they describe.

    Other trace jobs (``pipeline.hosts``, ``pipeline.trace``) share its
    settings, output handling, run and checks: each writes the tables in
    ``outputs`` (``outputs.TableOutput``), and says here what it reads and
    builds."""
    command = 'instances'
    source_tables = SOURCE_TABLES    # what the source reads
    trace_tables = tuple(INSTANCE_TRACES.values())   # one per format

    def __init__(self, options, now=None):
        self.options = options
        opts = options.view_as(InstancesOptions)
        if not opts.output:
            raise UserError('--output PREFIX is required (e.g. out/trace)')
        self.output = opts.output
        self.overwrite = opts.overwrite
        self.formats = split_list(opts.formats)
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise UserError(f'--formats must list some of {", ".join(FORMATS)}'
                            f' (got {opts.formats!r})')
        self.num_shards = opts.num_shards
        self.requested_buckets = opts.buckets
        self.cut = (now or dt.datetime.now(UTC)).replace(microsecond=0)
        self.run_id = uuid.uuid4().hex[:12]
        self._made_folders = []
        self.estimated_events = None

        epoch = parse_iso_utc(opts.epoch, '--epoch') if opts.epoch else None
        bare = options.view_as(BareMetalOptions)
        self.source = nova_source(options, _instance_tables(
            self.source_tables, bare.instance_type, options), self.cut)

        key_source = mask.key_source_for(opts.mask_key_file)
        self._supplied_key = None
        if opts.mask_method == mask.NO_MASKING:
            log.warning('--mask-method none: identities are written '
                        'unmasked; never publish this trace')
        elif key_source.kind != 'random':
            self._supplied_key = _load_supplied_key(key_source)
        self.spec = TraceSpec(
            mask_method=opts.mask_method, key_source=key_source,
            mask_uuid=opts.mask_uuid,
            epoch=to_seconds(epoch) if epoch else None,
            cut=to_seconds(self.cut),
            exclude=Exclusions(
                users=_excluded(opts.exclude_users, '--exclude-users'),
                projects=_excluded(opts.exclude_projects,
                                   '--exclude-projects')),
            trace_format=opts.trace_format,
            instance_type=bare.instance_type,
            node_properties=self.node_properties(options))
        self.leak_check = (opts.leak_check and
                           opts.mask_method != mask.NO_MASKING)
        self.leases = self.lease_source(options)
        self.nodes = (self.node_figures_source(options)
                      if self.spec.node_properties else None)
        self.outputs = [self.instance_output(self.output)]

    @property
    def links_leases(self):
        """Whether the instance table can hold leases and nodes' figures:
        bare metal, v0.3."""
        return (self.spec.instance_type != VM and
                self.spec.trace_format == V03)

    def node_properties(self, options):
        """The figures of a bare-metal instance's node that v0.3 PROPERTIES
        hold (``--properties``), when Ironic's database is given; else ()."""
        bare = options.view_as(BareMetalOptions)
        names = tuple(split_list(bare.properties))
        if not bare.ironic_database:
            if names != DEFAULT_NODE_PROPERTIES:
                raise UserError('--properties names figures of Ironic nodes:'
                                ' add --ironic-database')
            return ()
        if not names:
            raise UserError('--properties must name at least one capability')
        v03 = options.view_as(InstancesOptions).trace_format == V03
        if bare.instance_type == VM or not v03:
            raise UserError('--ironic-database gives bare-metal instances '
                            'their node\'s figures, which v0.3 PROPERTIES '
                            'hold: add --instance-type baremetal (or auto) '
                            'and --trace-format v0.3')
        return names

    def node_figures_source(self, options):
        """Ironic's nodes and Blazar's capabilities, for the figures of
        bare-metal instances' nodes."""
        bare = options.view_as(BareMetalOptions)
        return node_source(options, bare.ironic_database,
                           bare.blazar_database)

    def lease_source(self, options):
        """Blazar's lease tables (``--blazar-database``), for the lease of
        each bare-metal instance, or None."""
        database = options.view_as(BareMetalOptions).blazar_database
        if not database:
            return None
        if not self.links_leases:
            raise UserError('--blazar-database gives bare-metal instances '
                            'their leases, which v0.3 PROPERTIES hold: add '
                            '--instance-type baremetal (or auto) and '
                            '--trace-format v0.3')
        return service_source(options, database, LEASE_TABLES)

    def instance_output(self, prefix):
        """The instance table, written at ``prefix``."""
        exclude = self.spec.exclude
        return TableOutput(
            prefix, dataclasses.replace(
                INSTANCE_TABLE,
                trace=INSTANCE_TRACES[self.spec.trace_format]),
            self.source,
            masked=mask.masked_columns(self.spec.mask_uuid) + (
                (LEASE_ID,) if self.leases is not None else ()),
            # How many ids were excluded, never which: they are raw
            # identities. The rows left out are in source_rows.
            facts={'excluded': {'users': len(exclude.users),
                                'projects': len(exclude.projects)}})

    @property
    def progress_tables(self):
        """The source tables the progress line shows."""
        return self.source_tables

    def build(self, pipeline):
        """Add the job to ``pipeline``: the trace's files, and the run's
        counts (``counts_path``); returns the PCollection of files."""
        trace = self.instance_trace(pipeline, self.mask_key(pipeline))
        files = self.write(trace, self.outputs[0])
        self.write_counts(pipeline)
        return files

    def mask_key(self, pipeline):
        """The masking key, made at run time (``mask.MaskKey``), one for
        every table of the run; None without masking."""
        if self.spec.mask_method == mask.NO_MASKING:
            return None
        return pipeline | 'MaskKey' >> mask.MaskKey(self.spec.key_source)

    def instance_trace(self, pipeline, key, with_epoch=False, nodes=None):
        """The instance table, read and built (``BuildTrace``, masked
        with ``key``; ``with_epoch``: also its epoch; ``nodes``: Ironic's
        and Blazar's rows by state, if already read)."""
        splits, self.estimated_events = self.source.plan()
        num_buckets = buckets_for(self.estimated_events,
                                  self.requested_buckets)
        log.info('reading %s: about %s events in %d splits, %d join buckets',
                 self.source.about(), _about(self.estimated_events),
                 len(splits), num_buckets)
        exclude = self.spec.exclude
        if exclude.users or exclude.projects:
            log.info('leaving out the instances of the ids given to '
                     '--exclude-users (%d) and --exclude-projects (%d)',
                     len(exclude.users), len(exclude.projects))
        leases = None
        if self.leases is not None:
            lease_splits, _ = self.leases.plan()
            log.info('reading %s for the leases of bare-metal instances',
                     self.leases.about())
            leases = pipeline | 'ReadBlazar' >> self.leases.reader(
                lease_splits)
        if nodes is None and self.nodes is not None:
            node_splits, _ = self.nodes.plan()
            log.info("reading %s for the figures of bare-metal instances' "
                     "nodes", self.nodes.about())
            nodes = (pipeline
                     | 'ReadIronic' >> self.nodes.reader(node_splits)
                     | 'OneState' >> beam.Map(lambda pair: (0, pair)))
        return (pipeline
                | 'ReadNova' >> self.source.reader(splits)
                | 'BuildTrace' >> BuildTrace(self.spec, num_buckets, key,
                                             with_epoch, leases, nodes))

    def write(self, trace, output, label='WriteTrace'):
        """The files of one of ``outputs``, from its trace tables."""
        return trace | label >> WriteTrace(output.prefix, self.formats,
                                           self.num_shards, self.run_id,
                                           output.kind.trace)

    def write_counts(self, pipeline):
        """The run's counts, from every counting step built so far: add
        them last."""
        _ = pipeline | 'Counts' >> WriteCounts(self.counts_path)

    @property
    def counts_path(self):
        return counts_path(self.output, self.run_id)

    def prepare_output(self):
        """Refuse to mix with an earlier trace; with --overwrite, remove it
        (all of its shards, whatever their count or format). Checks the
        output folder can be made and written before anything is read; it
        is made when the run starts (``make_output_folder``)."""
        existing = []
        for output in self.outputs:
            found = output.existing()
            if found and not self.overwrite:
                raise UserError(f'a trace already exists at {output.prefix} '
                                f'({found[0]}, ...): choose another '
                                f'--output or give --overwrite')
            existing += found
        _check_writable(os.path.dirname(self.output) or '.')
        for path in existing:
            os.remove(path)

    def make_output_folder(self):
        """The folders of ``--output`` that are missing, made now and
        remembered: a failed run removes them again."""
        folder = os.path.dirname(self.output)
        self._made_folders = []
        while folder and not os.path.exists(folder):
            self._made_folders.append(folder)
            folder = os.path.dirname(folder)
        for made in reversed(self._made_folders):
            os.mkdir(made)

    def remove_temporary_folder(self):
        """The run's (the counts') and each table's: Beam's sinks remove
        their own folders inside them when they succeed, not the folders
        themselves."""
        for prefix in {self.output, *(o.prefix for o in self.outputs)}:
            shutil.rmtree(shards.temporary_folder(prefix, self.run_id),
                          ignore_errors=True)

    def remove_partial_trace(self):
        """After a failed or interrupted run: its temporary shards, and the
        shards and manifest it wrote before it stopped (an interrupt can
        come while Beam renames shards to their final names). There was no
        trace at the prefix before the run (``prepare_output``)."""
        self.remove_temporary_folder()
        for output in self.outputs:
            output.remove_partial()
        for folder in self._made_folders:
            with contextlib.suppress(OSError):   # not empty: not ours alone
                os.rmdir(folder)

    def summaries(self, seconds):
        """The summary of each of ``outputs`` after a finished run (before
        its temporary folder, where the counts are, is removed)."""
        totals = read_counts(self.counts_path)
        return [output.summarize(totals, seconds, self.formats)
                for output in self.outputs]

    def summarize(self, seconds):
        """The summary of the one table a finished run wrote."""
        summary, = self.summaries(seconds)
        return summary

    def summary_lines(self, summaries):
        """What the command prints of a finished run's summaries."""
        summary, = summaries
        yield from summary.lines()
        yield from self.baremetal_lines(summary)

    def baremetal_facts(self, summary):
        """What the instance table's run found of bare metal, or None."""
        if self.spec.instance_type == VM:
            return None
        linked = summary.linked
        facts = {'instance_type': self.spec.instance_type,
                 'instances': linked.get(baremetal.BAREMETAL_INSTANCES, 0),
                 'instances_node_unknown': linked.get(
                     baremetal.NODE_UNKNOWN, 0)}
        if self.spec.instance_type == AUTO:
            facts['ironic_nodes'] = linked.get(baremetal.IRONIC_NODES, 0)
        if self.leases is not None:
            facts['node_leases'] = linked.get(baremetal.NODE_LEASES, 0)
            facts['instances_without_lease'] = linked.get(
                baremetal.WITHOUT_LEASE, 0)
        if self.spec.node_properties:
            facts['node_properties'] = list(self.spec.node_properties)
            facts['instances_without_node'] = linked.get(
                baremetal.WITHOUT_NODE, 0)
        return facts

    def baremetal_lines(self, summary):
        facts = self.baremetal_facts(summary)
        if facts is None:
            return
        line = f'  bare-metal instances {facts["instances"]:,}'
        if 'ironic_nodes' in facts:
            line += f' (on {facts["ironic_nodes"]:,} Ironic nodes)'
        if facts['instances_node_unknown']:
            line += (f', node unknown {facts["instances_node_unknown"]:,} '
                     f'(their host is empty)')
        if 'node_leases' in facts:
            line += (f', without a lease {facts["instances_without_lease"]:,}'
                     f' (their rows are in the trace; leases of nodes '
                     f'{facts["node_leases"]:,})')
        if 'instances_without_node' in facts:
            line += (f', on a node Ironic no longer has '
                     f'{facts["instances_without_node"]:,} (flavor figures)')
        yield line

    def check_balance(self, summary, manifest):
        """A run must never be silently wrong: its counts must balance, and
        its files hold the rows it made."""
        rows_written = {fmt: sum(shard['rows'] for shard in manifest['shards']
                                 if shard['format'] == fmt)
                        for fmt in self.formats}
        problem = summary.imbalance(rows_written)
        if problem:
            raise UserError(f'the run does not add up ({problem}): the runner '
                            f'lost data; nothing was written')

    def check_for_leaks(self, summaries):
        """The sampled leak check of a finished run (``leaks.check``),
        each table's files against its own source; the instance table's
        (the first) also against Blazar's lease ids, which its PROPERTIES
        hold masked."""
        checks = [(summary.files, output.source)
                  for output, summary in zip(self.outputs, summaries)]
        if self.leases is not None:
            checks.append((summaries[0].files, self.leases))
        return [leak for files, source in checks
                for leak in leaks.check(files, source, self._supplied_key,
                                        rows_per_file=leaks.SAMPLE_ROWS)]

    def facts(self, summary, output=None):
        """What the manifest of one of ``outputs`` (the first by default)
        tells besides the counts."""
        output = output or self.outputs[0]
        spec, key = self.spec, self.spec.key_source
        masked = spec.mask_method != mask.NO_MASKING
        epoch = summary.epoch
        return {
            'cut': to_iso(self.cut),
            'epoch': (to_iso(dt.datetime.fromtimestamp(epoch, UTC))
                      if epoch is not None else None),
            'epoch_sec': epoch,
            'source': output.source.describe(),
            'masking': {
                'method': spec.mask_method,
                'fields': list(output.masked) if masked else [],
                'key': key.kind if key.kind != 'random'
                else 'random per-run key, discarded',
                'key_fingerprint': (mask.key_fingerprint(self._supplied_key)
                                    if self._supplied_key else None),
            },
            'formats': self.formats,
            **output.facts,
            **({'baremetal': self.baremetal_facts(summary)}
               if output.kind.name == INSTANCE_TABLE.name and
               self.spec.instance_type != VM else {}),
        }


def run(argv, job_class=InstancesJob):
    # --runner PrismRunner / FlinkRunner: their binaries, resolved offline;
    # --runner DaskRunner: the project's (pipeline/dask_runner.py).
    options = PipelineOptions(runners.prepare_runner_options(argv))
    job = job_class(options)
    job.prepare_output()
    began = time.monotonic()
    with run_folder() as progress_folder:
        pipeline = beam.Pipeline(options=options)
        job.build(pipeline)
        job.make_output_folder()
        try:
            with ProgressDisplay(progress_folder, job.progress_tables,
                                 job.estimated_events):
                result = pipeline.run()
                result.wait_until_finish()
            if interrupted.is_set():
                raise KeyboardInterrupt
            summaries = job.summaries(time.monotonic() - began)
            job.remove_temporary_folder()
            # The check waits mostly on the source; the manifest, on files.
            leak_check = (in_background(job.check_for_leaks, summaries)
                          if job.leak_check else None)
            manifests = [manifest_of(summary, job.facts(summary, output),
                                     output.kind.trace)
                         for output, summary in zip(job.outputs, summaries)]
            for summary, manifest in zip(summaries, manifests):
                job.check_balance(summary, manifest)
            for output, manifest in zip(job.outputs, manifests):
                write_manifest(output.prefix, manifest)
            found = leak_check.result() if leak_check else []
            if interrupted.is_set():
                raise KeyboardInterrupt
        except BaseException:
            job.remove_partial_trace()
            raise
    if found:
        raise UserError(f'leak check failed: {found[0]} (and '
                        f'{len(found) - 1} more); do not publish '
                        f'{job.output}')
    print(f'starcompactor {job.command}: cut {to_iso(job.cut)}')
    for line in job.summary_lines(summaries):
        print(line)
    for output in job.outputs:
        print(f'  wrote {manifest_path(output.prefix)}')
    return summaries
