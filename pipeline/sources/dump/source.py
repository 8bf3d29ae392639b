"""``NovaDumpSource``: dump files as a source (the interface is documented
in ``starcompactor.pipeline.sources``)."""
import os

import apache_beam as beam

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.about import about_line, database_names
from starcompactor.pipeline.sources.dump.files import (
    DECOMPRESS_ERRORS, compression_of, open_dump)
from starcompactor.pipeline.sources.dump.reader import (
    ALL_NOVA_TABLES, BATCH_ROWS, DumpReader, DumpSplit)
from starcompactor.pipeline.sources.read import ReadSplits
from starcompactor.transforms import counters
from starcompactor.transforms.mask import SOURCE_IDENTITIES
from starcompactor.transforms.schema import EVENTS, SOURCE_TABLES

SPLIT_BYTES = 128 << 20

# Rough size of an uncompressed dump per compressed byte, and share of
# instance_actions_events rows per uncompressed byte, to estimate event counts
# of compressed files without reading them.
_COMPRESSION_RATIO = 6
_EVENT_ROWS_PER_BYTE = 1 / 500


class NovaDumpSource:
    """What to read: dump files, databases, logical tables, live and
    archived tables, an event window (Nova-format time strings, applied
    while reading).

    ``databases`` None reads every database found. Rows before any
    ``USE``/``CREATE DATABASE`` (a dump made without ``--databases``) belong
    to ``default_database``.
    """

    def __init__(self, paths, databases=None, archived=True,
                 window=(None, None), default_database='nova',
                 split_bytes=SPLIT_BYTES, batch_rows=BATCH_ROWS,
                 tables=SOURCE_TABLES):
        self.tables = tuple(tables)
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) \
            else list(paths)
        self.paths = [os.fspath(p) for p in self.paths]
        self.databases = None if databases is None else list(databases)
        self.archived = archived
        self.window = tuple(window or (None, None))
        self.default_database = default_database
        self.split_bytes = split_bytes
        self.batch_rows = batch_rows
        self.found_databases = None

    def dump_reader(self, path):
        return DumpReader(path, self.databases, self.archived, self.window,
                          self.default_database, self.batch_rows,
                          of_tables=self.tables)

    def reader(self, splits):
        return ReadSplits(splits, ReadDumpSplits(self))

    def describe(self):
        start, end = self.window
        return {'kind': 'mysqldump',
                'files': [os.path.basename(p) for p in self.paths],
                'databases': self.databases or self.found_databases,
                'archived': self.archived,
                'window': {'start': start, 'end': end}}

    def about(self):
        files = ', '.join(f'{os.path.basename(path)} ({_file_facts(path)})'
                          for path in self.paths)
        one = len(self.paths) == 1
        databases = database_names(self.databases) if self.databases \
            else f'every database in {"it" if one else "them"}'
        return about_line(f'{"dump" if one else "dumps"} {files}', databases,
                          self.archived, self.window)

    def raw_identities(self, among=None):
        """Every distinct raw identity (user, project, instance name, host)
        of the tables read; with ``among`` (candidate strings), only those
        of the candidates."""
        values = set()
        tables = [t for t in self.tables if t in SOURCE_IDENTITIES]
        for path in self.paths:
            for table, batch in self.dump_reader(path).read(tables=tables):
                for column in SOURCE_IDENTITIES[table]:
                    values.update(
                        v for v in batch.column(column).to_pylist() if v)
        return values if among is None else values & set(among)

    def plan(self):
        """Check every file and cut it into splits.

        Runs where the pipeline is built: a missing, unreadable or corrupt
        file, a file that is no dump of Nova tables, a database that no file
        has, or a malformed CREATE TABLE are reported before anything
        starts. Uncompressed files are pre-scanned (every line looked at,
        no values parsed); compressed ones are read only until they show
        Nova tables of every database asked for (to the end when one is
        missing). Returns the splits and the estimated number of event rows
        (counted in uncompressed files, guessed from the size of compressed
        ones).
        """
        if not self.paths:
            raise UserError('no dump files given')
        splits, estimated_events, found = [], 0, set()
        for path in self.paths:
            compression = _readable_compression(path)
            seen = set()
            if compression:
                self._probe(path, compression, seen,
                            set(self.databases or ()) - found)
                splits.append(DumpSplit(path, compression=compression))
                estimated_events += int(os.path.getsize(path)
                                        * _COMPRESSION_RATIO
                                        * _EVENT_ROWS_PER_BYTE)
            else:
                file_splits, events = self._prescan(path, seen)
                splits += file_splits
                estimated_events += events
            if not seen:
                raise UserError(f'{path} is not a MySQL dump: no CREATE '
                                f'TABLE or INSERT INTO of a Nova table')
            found |= seen
        self._check_databases(found)
        if not any(split.compression for split in splits):
            self.found_databases = sorted(found)
        return splits, estimated_events

    def _prescan(self, path, seen):
        """Splits of a plain file, about ``split_bytes`` each, with the
        context at their starts, and the number of event rows in it."""
        size = os.path.getsize(path)
        reader = self.dump_reader(path)
        event_tables = {nova_table for nova_table, table
                        in reader.tables.items() if table == EVENTS}
        snapshots, events = [], 0
        for _, _, statement, _, _ in reader.scan(
                DumpSplit(path), event_tables,
                range(self.split_bytes, size, self.split_bytes), snapshots,
                seen):
            events += (statement.count(b'),(') + statement.count(b'),\n(')
                       + statement.count(b'),\r\n(') + 1)
        starts = [(0, 1, None, {})] + snapshots
        ends = [offset for offset, *_ in snapshots] + [None]
        return [DumpSplit(path, start, end, line, database,
                          tuple((db, table, cols) for (db, table), cols
                                in sorted(columns.items())))
                for (start, line, database, columns), end
                in zip(starts, ends)], events

    def _probe(self, path, compression, seen, looked_for):
        """Reads a compressed file until an INSERT into a Nova table once
        every database ``looked_for`` is ``seen``, or to its end."""
        split = DumpSplit(path, compression=compression)
        for _ in self.dump_reader(path).scan(split, ALL_NOVA_TABLES,
                                             seen=seen):
            if looked_for <= seen:
                return

    def _check_databases(self, found):
        missing = [d for d in self.databases or () if d not in found]
        if not missing:
            return
        one_file = len(self.paths) == 1
        raise UserError(
            f'{database_names(missing)} {"is" if len(missing) == 1 else "are"}'
            f' not in {", ".join(self.paths)} '
            f'({"it has" if one_file else "they have"} '
            f'{", ".join(sorted(found))})')


def _readable_compression(path):
    """The compression of a dump file that exists and can be read."""
    if not os.path.isfile(path):
        raise UserError(f'{path}: no such dump file')
    compression = compression_of(path)
    if compression:
        try:
            with open_dump(path, compression) as f:
                f.read(1)
        except DECOMPRESS_ERRORS as e:
            raise UserError(f'{path}: not a readable {compression} file '
                            f'({e})') from None
    return compression


def _file_facts(path):
    """'1.0 MB, gzip' or '133 MB'."""
    compression = compression_of(path)
    size = _size_text(os.path.getsize(path))
    return f'{size}, {compression}' if compression else size


def _size_text(size):
    """A file size with two or three significant digits: 1.0 MB, 133 MB."""
    for unit in ('bytes', 'kB', 'MB', 'GB'):
        if size < 999.5 or unit == 'GB':
            break
        size /= 1000
    digits = 1 if unit != 'bytes' and size < 9.95 else 0
    return f'{size:.{digits}f} {unit}'


class ReadDumpSplits(beam.DoFn):
    """DumpSplit -> ``(logical table, Arrow batch)`` pairs."""

    def __init__(self, source):
        self.source = source

    def process(self, split):
        reader = self.source.dump_reader(split.path)
        for table, batch, invalid in reader.read_counted(
                split, self.source.tables):
            # Like the MySQL source: rows with text that is not UTF-8 are
            # counted read and rejected here; the rest when validated.
            counters.count_read(table, invalid)
            counters.count_rejected(table, counters.INVALID_UTF8, invalid)
            if batch.num_rows:
                yield table, batch
