"""The run's counts as a file: written by the pipeline, read by the launcher.

What the summary, the manifest and the balance check need (rows read, in
the trace and left out per table, trace rows, the epoch) comes out of the
pipeline as one element (``counters.all_counts``), written as JSON into the
run's temporary folder beside the shards, where every worker can write and
the launcher reads it when the run is over, on any runner.
"""
import json
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from starcompactor.pipeline import shards
from starcompactor.pipeline.errors import UserError
from starcompactor.transforms.counters import all_counts


def counts_path(prefix, run_id):
    return FileSystems.join(shards.temporary_folder(prefix, run_id),
                            'counts.json')


def _write(counts, path):
    """Under a temporary name first: a retried task never leaves half a
    file under the final one."""
    temporary = f'{path}.{uuid.uuid4().hex}'
    with FileSystems.create(temporary) as f:
        f.write(json.dumps(counts, sort_keys=True).encode())
    FileSystems.rename([temporary], [path])


class WriteCounts(beam.PTransform):
    """PBegin -> the counts of every ``Counted`` step built so far, written
    to ``path``; apply it last."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def expand(self, pbegin):
        return (all_counts(pbegin.pipeline)
                | 'WriteCounts' >> beam.Map(_write, self.path))


def read_counts(path):
    """``{name: value}`` of a finished run."""
    try:
        with FileSystems.open(path) as f:
            return json.loads(f.read())
    except OSError:   # Beam's file systems raise BeamIOError, an IOError
        raise UserError(f'the run ended without its counts ({path}): the '
                        f'runner lost them; nothing was written') from None
