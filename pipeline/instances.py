"""The ``instances`` job: Nova tables -> anonymized instance-event trace."""
import contextlib
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
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.counts import WriteCounts, counts_path, read_counts
from starcompactor.pipeline.manifest import manifest_of, write_manifest
from starcompactor.pipeline.options import InstancesOptions
from starcompactor.pipeline.progress import ProgressDisplay, run_folder
from starcompactor.pipeline.shards import FORMATS, manifest_path
from starcompactor.pipeline.sinks import WriteTrace
from starcompactor.pipeline.sources import nova_source, split_list
from starcompactor.pipeline.summary import Summary
from starcompactor.pipeline.threads import in_background
from starcompactor.pipeline.times import UTC, parse_iso_utc, to_iso, to_seconds
from starcompactor.transforms import mask
from starcompactor.transforms.schema import INSTANCE_TRACE, SOURCE_TABLES
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


def _about(count):
    """``count`` rounded to two significant digits, for estimates."""
    if count < 100:
        return f'{count:,}'
    digits = len(str(count)) - 2
    return f'{round(count, -digits):,}'


class InstancesJob:
    """Validated settings of one run, and the graph they describe.

    Other trace jobs (``pipeline.hosts``) share its output handling, run
    and checks, and say what they read and write here."""
    command = 'instances'
    source_tables = SOURCE_TABLES    # what the source reads
    summary_tables = SOURCE_TABLES   # what the summary balances
    trace_table = INSTANCE_TRACE

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
        self.source = nova_source(options, self.source_tables)

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
            cut=to_seconds(self.cut))
        self.leak_check = (opts.leak_check and
                           opts.mask_method != mask.NO_MASKING)

    def build(self, pipeline):
        """Add the job to ``pipeline``: the trace's files, and the run's
        counts (``counts_path``); returns the PCollection of files."""
        splits, self.estimated_events = self.source.plan()
        num_buckets = buckets_for(self.estimated_events,
                                  self.requested_buckets)
        log.info('reading %s: about %s events in %d splits, %d join buckets',
                 self.source.about(), _about(self.estimated_events),
                 len(splits), num_buckets)
        files = (pipeline
                 | 'ReadNova' >> self.source.reader(splits)
                 | 'BuildTrace' >> BuildTrace(self.spec, num_buckets)
                 | 'WriteTrace' >> WriteTrace(self.output, self.formats,
                                              self.num_shards, self.run_id))
        _ = pipeline | 'Counts' >> WriteCounts(self.counts_path)
        return files

    @property
    def counts_path(self):
        return counts_path(self.output, self.run_id)

    def written_files(self, formats=None):
        return shards.find(self.output, formats or self.formats)

    def prepare_output(self):
        """Refuse to mix with an earlier trace; with --overwrite, remove it
        (all of its shards, whatever their count or format). Checks the
        output folder can be made and written before anything is read; it
        is made when the run starts (``make_output_folder``)."""
        existing = self.written_files(FORMATS)
        if os.path.exists(manifest_path(self.output)):
            existing.append(manifest_path(self.output))
        if existing and not self.overwrite:
            raise UserError(f'a trace already exists at {self.output} '
                            f'({existing[0]}, ...): choose another --output '
                            f'or give --overwrite')
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
        """Beam's sinks remove their own folders inside it when they
        succeed, not the folder itself."""
        shutil.rmtree(shards.temporary_folder(self.output, self.run_id),
                      ignore_errors=True)

    def remove_partial_trace(self):
        """After a failed or interrupted run: its temporary shards, and the
        shards and manifest it wrote before it stopped (an interrupt can
        come while Beam renames shards to their final names). There was no
        trace at the prefix before the run (``prepare_output``)."""
        self.remove_temporary_folder()
        written = self.written_files(FORMATS) + [
            manifest_path(self.output), manifest_path(self.output) + '.tmp']
        for path in written:
            if os.path.exists(path):
                os.remove(path)
        for folder in self._made_folders:
            with contextlib.suppress(OSError):   # not empty: not ours alone
                os.rmdir(folder)

    def summarize(self, seconds):
        """The summary of a finished run (before its temporary folder, where
        the counts are, is removed)."""
        return Summary.from_counters(read_counts(self.counts_path), seconds,
                                     self.written_files(),
                                     self.summary_tables)

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

    def check_for_leaks(self, summary):
        """The sampled leak check of a finished run (``leaks.check``)."""
        return leaks.check(summary.files, self.source, self._supplied_key,
                           rows_per_file=leaks.SAMPLE_ROWS)

    def facts(self, summary):
        """What the manifest tells about this run besides the counts."""
        spec, key = self.spec, self.spec.key_source
        masked = spec.mask_method != mask.NO_MASKING
        epoch = summary.epoch
        return {
            'cut': to_iso(self.cut),
            'epoch': (to_iso(dt.datetime.fromtimestamp(epoch, UTC))
                      if epoch is not None else None),
            'epoch_sec': epoch,
            'source': self.source.describe(),
            'masking': {
                'method': spec.mask_method,
                'fields': (list(mask.masked_columns(spec.mask_uuid))
                           if masked else []),
                'key': key.kind if key.kind != 'random'
                else 'random per-run key, discarded',
                'key_fingerprint': (mask.key_fingerprint(self._supplied_key)
                                    if self._supplied_key else None),
            },
            'formats': self.formats,
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
            with ProgressDisplay(progress_folder, job.source_tables,
                                 job.estimated_events):
                result = pipeline.run()
                result.wait_until_finish()
            summary = job.summarize(time.monotonic() - began)
            job.remove_temporary_folder()
            # The check waits mostly on the source; the manifest, on files.
            leak_check = (in_background(job.check_for_leaks, summary)
                          if job.leak_check else None)
            manifest = manifest_of(summary, job.facts(summary),
                                   job.trace_table)
            job.check_balance(summary, manifest)
            write_manifest(job.output, manifest)
            found = leak_check.result() if leak_check else []
        except BaseException:
            job.remove_partial_trace()
            raise
    if found:
        raise UserError(f'leak check failed: {found[0]} (and '
                        f'{len(found) - 1} more); do not publish '
                        f'{job.output}')
    print(f'starcompactor {job.command}: cut {to_iso(job.cut)}')
    for line in summary.lines():
        print(line)
    print(f'  wrote {manifest_path(job.output)}')
    return summary
