"""Writing a synthetic bare-metal cloud (``baremetal.BareMetalHistory``)
into MariaDB/MySQL or a ``mariadb-dump --databases`` style file, as it was
at one moment of its history.

The history is small (a row per node, lease and instance), so rows go as
plain INSERTs with their column lists; the databases get the real schemas:
Nova's cells, Ironic's, and Blazar's with Chameleon's soft-delete columns.
"""
import gzip
import os
import re
import time

from starcompactor.pipeline.errors import UserError
from starcompactor.synth.baremetal_schema import (
    blazar_statements, ironic_statements)
from starcompactor.synth.dump_writer import (
    _DUMP_DATABASE, _DUMP_HEAD, _DUMP_TABLE, _DUMP_TABLE_END, _DUMP_TAIL)
from starcompactor.synth.inserts import sql_literal
from starcompactor.synth.nova_schema import (
    cell_schema_statements, create_database, create_table_statements)
from starcompactor.synth.result import Result

ROWS_PER_INSERT = 1000


def schema_statements_of(history, db):
    """The DDL statements of one of the history's databases."""
    if db == history.ironic:
        return ironic_statements()
    if db == history.blazar:
        return blazar_statements(chameleon=True)
    return cell_schema_statements()


def _inserts(table, rows, qualified='', columns=None):
    """INSERT statements of ``rows`` (dicts), naming ``columns`` (default:
    those the rows have)."""
    columns = columns or sorted({column for row in rows for column in row})
    head = (f'INSERT INTO {qualified}`{table}` '
            f'({",".join(f"`{c}`" for c in columns)}) VALUES ')
    for i in range(0, len(rows), ROWS_PER_INSERT):
        yield head + ','.join(
            '(' + ','.join(sql_literal(row.get(c)) for c in columns) + ')'
            for row in rows[i:i + ROWS_PER_INSERT])


def _by_table(history, at):
    found = {}
    for db, table, rows in history.rows(at):
        found[db, table] = rows
    return found


def load_baremetal_mysql(connection, history, at=None):
    """Create the history's databases (dropping them first) on
    ``connection`` and load its rows as of second ``at`` (default: its
    end). Returns a ``Result``."""
    began = time.monotonic()
    for db in history.databases:
        create_database(connection, db, schema_statements_of(history, db),
                        drop=True)
    with connection.cursor() as cursor:
        cursor.execute('SET SESSION foreign_key_checks=0')
        for (db, table), rows in _by_table(history, at).items():
            for statement in _inserts(table, rows, f'`{db}`.'):
                cursor.execute(statement)
        cursor.execute('SET SESSION foreign_key_checks=1')
    connection.commit()
    return Result(dict(history.counts), time.monotonic() - began)


def write_baremetal_dump(path, history, at=None):
    """Write the history's databases as of second ``at`` (default: its
    end) as a dump file (gzip-compressed when ``path`` ends in .gz), its
    ``-- Dump completed on`` line at that moment. Returns a ``Result``."""
    began = time.monotonic()
    path = os.fspath(path)
    end = history.now if at is None else at
    rows = _by_table(history, at)
    parts = [_DUMP_HEAD.format(first=history.databases[0],
                               seed=history.seed)]
    for db in history.databases:
        parts.append(_DUMP_DATABASE.format(db=db))
        tables = create_table_statements(schema_statements_of(history, db))
        for table, ddl in tables.items():
            parts.append(_DUMP_TABLE.format(table=table, ddl=ddl))
            # every column, as mariadb-dump --complete-insert writes them
            parts += [statement + ';\n' for statement in _inserts(
                table, rows.get((db, table), []),
                columns=re.findall(r'^  `(\w+)` ', ddl, re.M))]
            parts.append(_DUMP_TABLE_END.format(table=table))
    parts.append(_DUMP_TAIL.format(end=history.time_text(end)))
    data = ''.join(parts).encode('utf-8')
    try:
        if path.endswith('.gz'):
            with gzip.GzipFile(path, 'wb', compresslevel=1, mtime=0) as f:
                f.write(data)
        else:
            with open(path, 'wb') as f:
                f.write(data)
    except OSError as e:
        raise UserError(f'cannot write {path}: {e.strerror}')
    return Result(dict(history.counts), time.monotonic() - began)
