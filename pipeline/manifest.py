"""``PREFIX.manifest.json``: what a trace holds and how it was made.

Lists each shard with its rows and sha256, the source row counts and the
rows left out by reason, the cut time, the epoch, the tool version and a
fingerprint of the masking key (an HMAC of a fixed label under the key: two
traces can be checked for the same key without revealing it).

A window of a followed trace (``instances --follow``) has a manifest of its
own (``window_manifest_of``): the window, its rows and shards, and the
run's facts; source counts are the run's, not a window's.
"""
import hashlib
import json
import os

import starcompactor
from starcompactor.pipeline.shards import count_rows, file_format, manifest_path
from starcompactor.pipeline.threads import ordered_map
from starcompactor.pipeline.times import seconds_to_iso
from starcompactor.transforms.schema import INSTANCE_TRACE


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def describe_shards(paths, table=INSTANCE_TRACE):
    """Each shard of a ``table`` (``schema.TraceTable``): its name, format,
    rows and sha256; files are read on every core at once (hashing and
    Arrow's CSV reader run without the GIL)."""
    def rows(path):
        return count_rows(path, table.csv_header[0])

    facts = ordered_map(lambda task: task[0](task[1]),
                        [(fact, path) for path in paths
                         for fact in (rows, _sha256)])
    return [{'file': os.path.basename(path),
             'format': file_format(path),
             'rows': rows, 'sha256': sha256}
            for path, rows, sha256 in zip(paths, facts[::2], facts[1::2])]


def manifest_of(summary, facts, table=INSTANCE_TRACE):
    """The manifest of a finished run; ``facts`` describes the run (cut,
    epoch, key...)."""
    return {
        'tool': 'starcompactor',
        'version': starcompactor.__version__,
        **facts,
        'trace_rows': summary.trace_rows,
        'source_rows': {
            table: {'read': count.read, 'in_trace': count.in_trace,
                    'left_out': summary.rejects(table)}
            for table, count in summary.tables.items()},
        'shards': describe_shards(summary.files, table),
    }


def window_manifest_of(start, seconds, rows, shards, facts):
    """The manifest of the window of ``seconds`` from ``start`` (seconds
    since 1970), which got ``rows`` trace rows, written to ``shards``
    (``describe_shards``); ``facts`` describes the run."""
    return {
        'tool': 'starcompactor',
        'version': starcompactor.__version__,
        'window': {'start': seconds_to_iso(start),
                   'end': seconds_to_iso(start + seconds),
                   'start_sec': start, 'seconds': seconds},
        **facts,
        'trace_rows': rows,
        'shards': shards,
    }


def write_manifest(prefix, manifest):
    path = manifest_path(prefix)
    temporary = path + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write('\n')
    os.replace(temporary, path)
