"""The ``instances`` job: Nova tables -> anonymized instance-event trace."""
import dataclasses
import datetime as dt
import glob
import logging
import math
import os
import shutil
import stat
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from starcompactor.pipeline import leaks, runners, shards
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.manifest import write_manifest
from starcompactor.pipeline.shards import manifest_path
from starcompactor.pipeline.options import InstancesOptions
from starcompactor.pipeline.sinks import FORMATS, WriteTrace
from starcompactor.pipeline.sources import nova_source, split_list
from starcompactor.pipeline.threads import in_background
from starcompactor.pipeline.summary import Summary, counters_of
from starcompactor.pipeline.times import UTC, parse_iso_utc, to_iso, to_seconds
from starcompactor.transforms import mask
from starcompactor.transforms.trace import BuildTrace, TraceSpec

log = logging.getLogger('starcompactor')

EVENTS_PER_BUCKET = 250_000
MIN_BUCKETS = 4


def buckets_for(estimated_events, requested=0):
    """Enough buckets that none outgrows memory, and some parallelism."""
    if requested > 0:
        return requested
    return max(MIN_BUCKETS, math.ceil(estimated_events / EVENTS_PER_BUCKET))


def _check_key_source(key_source):
    """Fail early, here, on a supplied key the workers would refuse; warn
    when the key file is readable by others. The key read here is dropped at
    once. (A random key is drawn by the pipeline, never here.)"""
    if key_source.kind == 'random':
        return
    if key_source.kind == 'file':
        mode = os.stat(key_source.location).st_mode \
            if os.path.exists(key_source.location) else 0
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning('mask key file %s is readable by other users; '
                        'chmod 600 it', key_source.location)
    try:
        mask.load_key(key_source)
    except mask.MaskKeyError as e:
        raise UserError(str(e))


class InstancesJob:
    """Validated settings of one run, and the graph they describe."""

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
        if opts.num_shards < 0:
            raise UserError('--num-shards must be 0 or more')
        self.num_shards = opts.num_shards
        self.cut = (now or dt.datetime.now(UTC)).replace(microsecond=0)

        epoch = parse_iso_utc(opts.epoch, '--epoch') if opts.epoch else None
        self.source = nova_source(options)

        key_source = mask.key_source_for(opts.mask_key_file)
        if opts.mask_method == mask.NO_MASKING:
            log.warning('--mask-method none: identities are written '
                        'unmasked; never publish this trace')
        else:
            _check_key_source(key_source)
        self.spec = TraceSpec(
            mask_method=opts.mask_method, key_source=key_source,
            mask_uuid=opts.mask_uuid,
            epoch=to_seconds(epoch) if epoch else None,
            cut=to_seconds(self.cut))
        self._requested_buckets = opts.buckets
        self.leak_check = (opts.leak_check and
                           opts.mask_method != mask.NO_MASKING)

    def build(self, pipeline):
        """Add the job to ``pipeline``; returns the PCollection of files."""
        splits, estimated_events = self.source.plan()
        num_buckets = buckets_for(estimated_events, self._requested_buckets)
        log.info('reading %d splits of %s; about %d events, %d join buckets',
                 len(splits), self.source.describe(), estimated_events,
                 num_buckets)
        spec = dataclasses.replace(self.spec, num_buckets=num_buckets)
        return (pipeline
                | 'ReadNova' >> self.source.reader(splits)
                | 'BuildTrace' >> BuildTrace(spec)
                | 'WriteTrace' >> WriteTrace(self.output, self.formats,
                                             self.num_shards))

    def written_files(self, formats=None):
        return shards.find(self.output, formats or self.formats)

    def prepare_output(self):
        """Refuse to mix with an earlier trace; with --overwrite, remove it
        (all of its shards, whatever their count or format)."""
        existing = self.written_files(FORMATS)
        if os.path.exists(manifest_path(self.output)):
            existing.append(manifest_path(self.output))
        if existing and not self.overwrite:
            raise UserError(f'a trace already exists at {self.output} '
                            f'({existing[0]}, ...): choose another --output '
                            f'or give --overwrite')
        for path in existing:
            os.remove(path)
        out_dir = os.path.dirname(self.output)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)

    def remove_temporary_files(self):
        """After a failed or interrupted run: Beam's sinks leave their
        unfinished shards in beam-temp-* folders beside the output."""
        out_dir, name = os.path.split(self.output)
        for path in glob.glob(os.path.join(out_dir or '.',
                                           f'beam-temp-{name}-*')):
            shutil.rmtree(path, ignore_errors=True)

    def remove_partial_trace(self):
        """After a failed or interrupted run: its temporary shards, and the
        shards and manifest it wrote before it stopped (an interrupt can
        come while Beam renames shards to their final names). There was no
        trace at the prefix before the run (``prepare_output``)."""
        self.remove_temporary_files()
        written = self.written_files(FORMATS) + [
            manifest_path(self.output), manifest_path(self.output) + '.tmp']
        for path in written:
            if os.path.exists(path):
                os.remove(path)

    def summarize(self, result, seconds):
        return Summary.from_counters(counters_of(result), seconds,
                                     self.written_files())

    def facts(self, summary):
        """What the manifest tells about this run besides the counts."""
        spec, source = self.spec, self.source
        key = self.spec.key_source
        fingerprint = (None if key.kind == 'random' or
                       spec.mask_method == mask.NO_MASKING
                       else mask.key_fingerprint(mask.load_key(key)))
        epoch = summary.epoch
        return {
            'cut': to_iso(self.cut),
            'epoch': (to_iso(dt.datetime.fromtimestamp(epoch, UTC))
                      if epoch is not None else None),
            'epoch_sec': epoch,
            'source': source.describe(),
            'masking': {
                'method': spec.mask_method,
                'fields': (list(mask.masked_columns(spec.mask_uuid))
                           if spec.mask_method != mask.NO_MASKING else []),
                'key': key.kind if key.kind != 'random'
                else 'random per-run key, discarded',
                'key_fingerprint': fingerprint,
            },
            'formats': self.formats,
        }


def run(argv):
    # --runner PrismRunner / FlinkRunner: their binaries, resolved offline.
    options = PipelineOptions(runners.prepare_runner_options(argv))
    job = InstancesJob(options)
    job.prepare_output()
    began = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    job.build(pipeline)
    try:
        result = pipeline.run()
        result.wait_until_finish()
        summary = job.summarize(result, time.monotonic() - began)
        # The check waits mostly on the source; the manifest, on files.
        leak_check = in_background(
            leaks.check, summary.files, job.source, job.spec.key_source,
            rows_per_file=leaks.SAMPLE_ROWS) if job.leak_check else None
        write_manifest(job.output, summary, job.facts(summary))
        found = leak_check.result() if leak_check else []
    except BaseException:
        job.remove_partial_trace()
        raise
    if found:
        raise UserError(f'leak check failed: {found[0]} (and '
                        f'{len(found) - 1} more); do not publish '
                        f'{job.output}')
    print(f'starcompactor instances: cut {to_iso(job.cut)}')
    for line in summary.lines():
        print(line)
    print(f'  wrote {manifest_path(job.output)}')
    return summary
