"""Writing a synthetic history as a ``mariadb-dump --databases`` file."""
import gzip
import os
import shutil
import tempfile
import time

from starcompactor.pipeline.errors import UserError
from starcompactor.synth.model import History
from starcompactor.synth.nova_schema import create_table_statement
from starcompactor.synth.result import Result
from starcompactor.synth.inserts import ExtendedInserts
from starcompactor.synth.tables import HOST_TABLES, TABLES

_DUMP_HEAD = """-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: {first}
-- ------------------------------------------------------
-- Server version\t10.11.19-MariaDB-0+deb12u1
-- (synthetic Nova history: starcompactor synth, seed {seed})

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;
"""
_DUMP_DATABASE = """
--
-- Current Database: `{db}`
--

CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{db}` /*!40100 DEFAULT CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci */;

USE `{db}`;
"""
_DUMP_TABLE = """
--
-- Table structure for table `{table}`
--

DROP TABLE IF EXISTS `{table}`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
{ddl};
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `{table}`
--

LOCK TABLES `{table}` WRITE;
/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;
"""
_DUMP_TABLE_END = """/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;
UNLOCK TABLES;
"""
_DUMP_TAIL = """/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on {end}
"""


def write_dump(path, instances, **options):
    """Write ``generate(instances, **options)`` as a ``mariadb-dump
    --databases <cells>`` style file (gzip-compressed when ``path`` ends in
    .gz): per database CREATE DATABASE, USE, and per table (the six
    trace tables and the four host tables, alphabetically) DROP TABLE,
    Nova's CREATE TABLE and extended INSERTs of at most ~1 MB. Returns a
    ``Result``."""
    began = time.monotonic()
    history = History(instances, **options)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UserError(f'cannot write {path}: no such directory')
    # The history comes a little of every table at a time, the dump wants
    # each table whole: its statements are staged in files next to ``path``.
    with tempfile.TemporaryDirectory(prefix='.synth-', dir=directory) as tmp:
        _stage_inserts(history, tmp)
        _write_file(path, history, tmp)
    return Result(history.counts, time.monotonic() - began)


def _staged(tmp, db, table):
    return os.path.join(tmp, f'{db}.{table}.sql')


def _stage_inserts(history, tmp):
    files = {}

    def emit(db, table, statement):
        f = files.get((db, table))
        if f is None:
            f = files[db, table] = open(_staged(tmp, db, table), 'w',
                                        encoding='utf-8', newline='\n')
        f.write(statement)
        f.write(';\n')

    try:
        inserts = ExtendedInserts(emit, qualify=False)
        for db, table, rows in history.rows():
            inserts.add(db, table, rows)
        inserts.close()
    finally:
        for f in files.values():
            f.close()


def _write_file(path, history, tmp):
    """The dump at ``path``, from the staged statements; it appears there
    whole or not at all."""
    partial = path + '.partial'
    try:
        if path.endswith('.gz'):
            raw = open(partial, 'wb')
            out = gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                compresslevel=1, mtime=0)
        else:
            raw, out = None, open(partial, 'wb')
    except OSError as e:
        raise UserError(f'cannot write {path}: {e.strerror}')
    try:
        out.write(_DUMP_HEAD.format(first=history.cells[0],
                                    seed=history.seed).encode())
        for db in history.cells:
            out.write(_DUMP_DATABASE.format(db=db).encode())
            for table in sorted(TABLES + HOST_TABLES):
                out.write(_DUMP_TABLE.format(
                    table=table, ddl=create_table_statement(table)).encode())
                staged = _staged(tmp, db, table)
                if os.path.exists(staged):
                    with open(staged, 'rb') as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                out.write(_DUMP_TABLE_END.format(table=table).encode())
        out.write(_DUMP_TAIL.format(
            end=history.time_text(history.now)).encode())
    finally:
        out.close()
        if raw is not None:
            raw.close()
    os.replace(partial, path)
