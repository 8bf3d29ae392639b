"""Nova's real cell-database schema (``sql/nova_cell.sql``), for creating
databases that look exactly like Nova's: the synthetic history, tests and
benchmarks use it.

The file is ``mysqldump --no-data`` of the schema Nova 34.0.0's own
migrations create in MariaDB 10.11.
"""
import functools
import os
import re

CELL_SCHEMA_PATH = os.path.join(os.path.dirname(__file__), 'sql',
                                'nova_cell.sql')


def schema_statements(path):
    """The DDL statements of a ``mysqldump --no-data`` file, in order."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    text = re.sub(r'^--.*$', '', text, flags=re.M)
    return [s.strip() for s in text.split(';\n') if s.strip()]


def cell_schema_statements():
    """The DDL statements of a Nova cell database, in order."""
    return schema_statements(CELL_SCHEMA_PATH)


def create_table_statements(statements):
    """``{table: its CREATE TABLE}`` of schema ``statements``, in order."""
    tables = {}
    for statement in statements:
        created = re.match(r'CREATE TABLE `(\w+)` \(', statement)
        if created:
            tables[created.group(1)] = statement
    return tables


@functools.cache
def _create_table_statements():
    return create_table_statements(cell_schema_statements())


def create_table_statement(table):
    """``CREATE TABLE`` of ``table`` in Nova's schema."""
    return _create_table_statements()[table]


def table_columns(table):
    """All of ``table``'s columns in Nova's schema, in order."""
    return tuple(re.findall(r'^  `(\w+)` ', create_table_statement(table),
                            flags=re.M))


def create_database(connection, name, statements, drop=False):
    """Create database ``name`` holding the schema ``statements`` make."""
    quoted = '`' + name.replace('`', '``') + '`'
    with connection.cursor() as cursor:
        if drop:
            cursor.execute(f'DROP DATABASE IF EXISTS {quoted}')
        cursor.execute(f'CREATE DATABASE {quoted} CHARACTER SET utf8mb3')
        cursor.execute(f'USE {quoted}')
        for statement in statements:
            cursor.execute(statement)
    connection.commit()


def create_cell_database(connection, name, drop=False):
    """Create database ``name`` holding Nova's cell schema."""
    create_database(connection, name, cell_schema_statements(), drop)
