import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from mariadb_server import start_server  # noqa: E402
from starcompactor.synth.nova_schema import create_cell_database  # noqa: E402

READER = 'trace_reader'
READER_PASSWORD = 'reader-Pa55-not-in-any-output'
# The minimal grants the README documents: SELECT on the tables read.
READ_TABLES = ('instances', 'instance_actions', 'instance_actions_events',
               'compute_nodes', 'services')


@pytest.fixture(scope='session')
def mariadb():
    """A real MariaDB for the session. A missing server fails, never skips."""
    try:
        server = start_server()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    with server.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE USER IF NOT EXISTS '{READER}'@'%' "
                       f"IDENTIFIED BY '{READER_PASSWORD}'")
    yield server
    server.stop()


@pytest.fixture(scope='session')
def password_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('secrets') / 'mysql-password'
    path.write_text(READER_PASSWORD + '\n')
    path.chmod(0o600)
    return str(path)


_db_numbers = itertools.count()


def grant_reader(cursor, database):
    """The README's minimal grants: SELECT on the tables read."""
    for table in READ_TABLES:
        for t in (table, 'shadow_' + table):
            cursor.execute(f"GRANT SELECT ON `{database}`.`{t}` "
                           f"TO '{READER}'@'%'")


def drop_databases(server, names):
    with server.admin() as admin, admin.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP DATABASE IF EXISTS `{name}`')


class NovaDatabases:
    """Factory of fresh databases with Nova's real cell schema, readable by
    the trace reader with SELECT on the trace tables only; ``drop()``
    removes every database it made."""

    def __init__(self, server):
        self.server = server
        self.created = []

    def __call__(self, prefix='nova'):
        name = f'{prefix}_{os.getpid()}_{next(_db_numbers)}'
        with self.server.admin() as admin:
            create_cell_database(admin, name)
            with admin.cursor() as cursor:
                grant_reader(cursor, name)
        self.created.append(name)
        return name

    def drop(self):
        drop_databases(self.server, self.created)
        self.created = []


@pytest.fixture
def nova_db(mariadb):
    """Factory: a fresh database per call, dropped after the test."""
    databases = NovaDatabases(mariadb)
    yield databases
    databases.drop()


@pytest.fixture
def golden_db(mariadb, nova_db):
    """A database holding the hand-written history of ``golden``."""
    import golden
    database = nova_db()
    with mariadb.admin() as admin:
        golden.load(admin, database)
    return database


@pytest.fixture
def os_env(monkeypatch):
    """Sets OS_* variables for in-process runs; removes inherited ones."""
    for name in list(os.environ):
        if name.startswith('OS_'):
            monkeypatch.delenv(name)

    def set_env(variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
    return set_env
