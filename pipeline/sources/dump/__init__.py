"""Reading the three Nova tables straight from mysqldump / mariadb-dump files.

A dump is read as a stream of lines, so memory stays bounded whatever its
size: mysqldump writes one INSERT statement per line, mariadb-dump (10.x)
one row per line, and statements over several lines are gathered up to
their ``;``. Plain, gzip, bzip2 and xz files are read, by magic bytes or
extension (``files``).

Only three kinds of statement matter (``reader``):

* ``CREATE DATABASE`` / ``USE``: the current database (a dump of a single
  database made without ``--databases`` names none: ``default_database``);
* ``CREATE TABLE`` of a Nova table: its column order, for INSERTs without a
  column list;
* ``INSERT`` / ``INSERT IGNORE`` / ``REPLACE`` into a Nova table (live or
  ``shadow_``), extended or single-row, with or without a column list.

Everything else, and INSERTs into other tables (most of a dump), is skipped by
looking at the first bytes of the line only. The values of a wanted INSERT are
tokenized with one compiled regular expression over the whole statement
(``lexer``), and the wanted columns converted to Arrow by pyarrow compute, a
batch at a time (``columns``).

For Beam (``source``), an uncompressed file is cut into byte ranges aligned
to line starts; a cheap pre-scan in ``plan()`` records, at each cut, the
current database and the CREATE TABLE column orders seen so far, so each
range starts with the right context. A compressed file is one split.
"""
from starcompactor.pipeline.sources.dump.source import NovaDumpSource

__all__ = ['NovaDumpSource']
