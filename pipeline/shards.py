"""Trace files on disk: how shards are named, found and read.

A trace written to ``PREFIX`` is one shard set per format,
``PREFIX-SSSSS-of-NNNNN.<ext>`` (Beam's default shard template), and
``PREFIX.manifest.json``; while a run writes, its shards are in
``PREFIX.writing-<run id>/``. Everything that names, globs or reads those files
(the sinks' callers, the manifest, the leak check, verify, the report and
the tests) does it here, so that a prefix holding ``*``, ``?`` or ``[`` is
always taken literally.
"""
import csv
import datetime as dt
import glob
import itertools
import json
import os
import re

import fastavro
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from starcompactor.pipeline.errors import UserError

FORMATS = ('csv', 'avro', 'jsonl', 'parquet')
TEXT_FORMATS = ('csv', 'jsonl')   # the others are compressed binary
_PARQUET_BATCH_ROWS = 10_000
SHARD_TEMPLATE = '-SSSSS-of-NNNNN'
MANIFEST_SUFFIX = '.manifest.json'
# ``starcompactor trace --output PREFIX`` writes its two tables here.
INSTANCES_SUFFIX = '-instances'
HOSTS_SUFFIX = '-hosts'
_SHARD_NAME = re.compile(r'-(\d{5,})-of-(\d{5,})\.([a-z]+)')


def manifest_path(prefix):
    return prefix + MANIFEST_SUFFIX


def temporary_folder(prefix, run_id):
    """Where one run's sinks write before their shards get final names."""
    return f'{prefix}.writing-{run_id}'


def shards_by_format(prefix, formats=FORMATS):
    """``{format: [shard paths in shard order]}`` of the shards at
    ``prefix``; formats without shards are left out."""
    found = {}
    for path in glob.glob(glob.escape(prefix) + '-*-of-*.*'):
        match = _SHARD_NAME.fullmatch(path[len(prefix):])
        if match and match[3] in formats:
            found.setdefault(match[3], []).append(
                (int(match[1]), int(match[2]), path))
    return {fmt: [path for *_, path in sorted(shards)]
            for fmt, shards in found.items()}


def find(prefix, formats=FORMATS):
    """Every shard at ``prefix`` of the given formats, sorted."""
    return sorted(path for paths in shards_by_format(prefix, formats).values()
                  for path in paths)


def _one_of(names):
    """'a', 'a or b', 'a, b or c'."""
    if len(names) == 1:
        return names[0]
    return f'{", ".join(names[:-1])} or {names[-1]}'


def complete_set(prefix, formats):
    """``(format, paths)`` of the first of ``formats`` with shards at
    ``prefix``, checked to be one whole set (0..N-1 of N)."""
    found = shards_by_format(prefix, formats)
    fmt = next((f for f in formats if f in found), None)
    if fmt is None:
        other = sorted(set(shards_by_format(prefix)) - set(formats))
        if other:
            raise UserError(f'only {", ".join(other)} shards at {prefix}; '
                            f'this reads {_one_of(formats)}')
        raise UserError(f'no trace at {prefix}: no {prefix}{SHARD_TEMPLATE}'
                        f'.{{{",".join(formats)}}} files')
    paths = found[fmt]
    numbers = [_SHARD_NAME.fullmatch(p[len(prefix):]) for p in paths]
    totals = {int(m[2]) for m in numbers}
    if (len(totals) != 1 or
            [int(m[1]) for m in numbers] != list(range(totals.pop()))):
        names = ', '.join(os.path.basename(p) for p in paths[:3])
        raise UserError(f'incomplete or mixed trace at {prefix}: '
                        f'{len(paths)} .{fmt} shards, {names}'
                        f'{", ..." if len(paths) > 3 else ""}')
    return fmt, paths


def file_format(path):
    return path.rsplit('.', 1)[-1]


def _json_values(line):
    """A line's values; a line that is not a JSON object is one value."""
    try:
        return list(json.loads(line).values())
    except (ValueError, AttributeError):
        return [line.rstrip('\n')]


def _parquet_rows(path):
    """A Parquet shard's rows, read a batch at a time (so that a sample
    stops early); times as aware datetimes."""
    with pq.ParquetFile(path) as parquet_file:
        for batch in parquet_file.iter_batches(_PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()


def records(path, limit=None):
    """Each row of a shard as a dict (field names as in the file: CSV
    headers, Avro/JSON/Parquet field names); the first ``limit`` rows, or
    all."""
    fmt = file_format(path)
    if fmt == 'parquet':
        yield from itertools.islice(_parquet_rows(path), limit)
        return
    with open(path, 'rb' if fmt == 'avro' else 'r',
              **({} if fmt == 'avro' else
                 {'encoding': 'utf-8', 'newline': ''})) as f:
        if fmt == 'avro':
            rows = fastavro.reader(f)
        elif fmt == 'csv':
            rows = csv.DictReader(f)
        else:
            rows = (json.loads(line) for line in f if line.strip())
        for n, row in enumerate(rows):
            if limit is not None and n >= limit:
                return
            yield row


def field_values(path, limit=None):
    """Each row's field values (nulls left out), for searching: a JSON line
    that is not an object is one value, so nothing in a file is skipped."""
    fmt = file_format(path)
    if fmt == 'jsonl':
        with open(path, encoding='utf-8') as f:
            lines = (line for line in f if line.strip())
            for n, line in enumerate(lines):
                if limit is not None and n >= limit:
                    return
                yield _json_values(line)
        return
    for row in records(path, limit):
        yield [v for v in row.values() if v is not None]


def trace_table(paths, tables):
    """Which of ``tables`` (``schema.TraceTable``) the shards at ``paths``
    hold: the one whose CSV headers or field names their first row has; the
    first of ``tables`` when no shard has a row."""
    for path in paths:
        for row in records(path, limit=1):
            for table in tables:
                if list(row) in (table.csv_header, table.fields):
                    return table
            raise UserError(f'{path} is not a trace file: its fields are '
                            f'{", ".join(row)}')
    return tables[0]


def count_rows(path, first_column):
    """Rows in one shard, read the way its format is read."""
    fmt = file_format(path)
    if fmt == 'parquet':
        return pq.read_metadata(path).num_rows   # from the footer
    if fmt == 'avro':
        with open(path, 'rb') as f:
            return sum(block.num_records for block in fastavro.block_reader(f))
    if fmt == 'csv':
        # Every field is still tokenised (quoted newlines are no row end);
        # converting one column is enough to count.
        options = pa_csv.ConvertOptions(include_columns=[first_column],
                                        column_types={first_column: 'string'})
        reader = pa_csv.open_csv(path, convert_options=options)
        return sum(batch.num_rows for batch in reader)
    with open(path, 'rb') as f:
        return sum(1 for line in f if line.strip())


# --------------------------------------------------------------------------
# Window files (``instances --follow``): one shard set per time window, in
# a folder per day, ``FOLDER/YYYY-MM-DD/YYYYMMDDTHHMMSSZ-SSSSS-of-NNNNN.<ext>``
# named by the window's start (UTC), with the window's manifest
# ``FOLDER/YYYY-MM-DD/YYYYMMDDTHHMMSSZ.manifest.json``: a window's prefix is
# a trace prefix like any other. Files not yet final are in
# ``FOLDER/.writing/``.

WINDOW_TEMPORARY = '.writing'
_WINDOW_STAMP = '%Y%m%dT%H%M%SZ'
_IN_WINDOW = re.compile(r'\d{4}-\d{2}-\d{2}/(\d{8}T\d{6}Z)(.*)')


def window_prefix(start):
    """The prefix, inside a window folder, of the window starting at
    ``start`` (seconds since 1970)."""
    begins = dt.datetime.fromtimestamp(start, dt.timezone.utc)
    return f'{begins:%Y-%m-%d}/{begins:{_WINDOW_STAMP}}'


def window_file_name(start, shard, total, fmt):
    """Where, inside a window folder, shard ``shard`` of ``total`` of the
    window starting at ``start`` goes."""
    return f'{window_prefix(start)}-{shard:05d}-of-{total:05d}.{fmt}'


def _in_windows(folder, wanted):
    """``[(window start, path), ...]`` of the paths in ``folder``'s day
    folders whose name past the window's stamp is ``wanted``, sorted."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(folder), '*', '*')):
        match = _IN_WINDOW.fullmatch(os.path.relpath(path, folder))
        if match and wanted(match[2]):
            begins = dt.datetime.strptime(match[1], _WINDOW_STAMP).replace(
                tzinfo=dt.timezone.utc)
            found.append((int(begins.timestamp()), path))
    return sorted(found)


def window_files(folder, formats=FORMATS):
    """``[(window start, path), ...]`` of the window files in ``folder``
    of the given formats, sorted."""
    def wanted(tail):
        shard = _SHARD_NAME.fullmatch(tail)
        return shard is not None and shard[3] in formats
    return _in_windows(folder, wanted)


def window_manifests(folder):
    """``[(window start, path), ...]`` of the windows' manifests in
    ``folder``, sorted."""
    return _in_windows(folder, lambda tail: tail == MANIFEST_SUFFIX)
