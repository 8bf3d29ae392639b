"""Ironic's and Blazar's real database schemas (``sql/ironic.sql``,
``sql/blazar.sql``), for databases that look exactly like a bare-metal
cloud's: the synthetic history's bare-metal mode and the tests use them.

Both files are copied unchanged from ``../shared/baremetal-schema/``:
``mariadb-dump --no-data`` of the schemas the projects' own migrations
create in MariaDB 10.11, Ironic 39.0.0 (``ironic-dbsync upgrade``, alembic
head ``9fb44677ef15``) and Blazar 18.0.0 (``blazar-db-manage upgrade
head``, alembic head ``553383923ca0``), both installed from PyPI.
"""
import os
import re

from starcompactor.synth.nova_schema import create_database, schema_statements

_SQL = os.path.join(os.path.dirname(__file__), 'sql')
IRONIC_SCHEMA_PATH = os.path.join(_SQL, 'ironic.sql')
BLAZAR_SCHEMA_PATH = os.path.join(_SQL, 'blazar.sql')

# Chameleon's Blazar soft-deletes leases and what hangs off them, in
# columns upstream Blazar lacks (upstream deletes the rows).
CHAMELEON_SOFT_DELETE = ('computehosts', 'computehost_allocations',
                         'reservations', 'leases')


_SOFT_DELETE_COLUMNS = ('  `deleted` varchar(36) DEFAULT NULL,\n'
                        '  `deleted_at` datetime DEFAULT NULL,\n')


def ironic_statements():
    """The DDL statements of Ironic's database, in order."""
    return schema_statements(IRONIC_SCHEMA_PATH)


def blazar_statements(chameleon=False):
    """The DDL statements of Blazar's database, in order; ``chameleon``:
    with Chameleon's soft-delete columns (``deleted``, ``deleted_at``, its
    own assumption of their types) on the tables that lose rows when a
    lease is deleted."""
    statements = schema_statements(BLAZAR_SCHEMA_PATH)
    if not chameleon:
        return statements
    return [statement.replace('  PRIMARY KEY', _SOFT_DELETE_COLUMNS +
                              '  PRIMARY KEY', 1)
            if re.match(r'CREATE TABLE `(%s)` ' %
                        '|'.join(CHAMELEON_SOFT_DELETE), statement)
            else statement for statement in statements]


def create_ironic_database(connection, name, drop=False):
    """Create database ``name`` holding Ironic's schema."""
    create_database(connection, name, ironic_statements(), drop)


def create_blazar_database(connection, name, drop=False, chameleon=False):
    """Create database ``name`` holding Blazar's schema (``chameleon``: see
    ``blazar_statements``)."""
    create_database(connection, name, blazar_statements(chameleon), drop)
