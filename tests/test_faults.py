"""Faults on a real MariaDB: a connection killed mid-split, from another
connection, with KILL; a database that is not on the server."""
import re

import pymysql
import pytest
from pymysql.constants import ER

from conftest import READER
from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
from starcompactor.pipeline.sources.mysql import ReadTableSplits, TableSplit

ROWS = 60_000   # a dozen chunks


@pytest.fixture
def events_db(mariadb, nova_db):
    database = nova_db()
    with mariadb.admin(database) as admin, admin.cursor() as cursor:
        cursor.execute('SET FOREIGN_KEY_CHECKS=0')
        cursor.execute(
            f"INSERT INTO `{database}`.instance_actions_events (id, action_id,"
            f" event, start_time, finish_time, result) SELECT seq, seq DIV 3,"
            f" CONCAT('e', seq MOD 3), '2020-01-01 00:00:00',"
            f" '2020-01-01 00:00:01', 'Success' FROM seq_1_to_{ROWS}")
    return database


def _reader(mariadb, password_file):
    connection = MySQLConnection(mariadb.host, mariadb.port, READER,
                                 password_file)
    # Batches of one chunk: the test kills the connection between them.
    reader = ReadTableSplits(connection, (None, None), batch_rows=1)
    reader.setup()
    return reader


def _kill(mariadb, reader):
    with mariadb.admin() as admin, admin.cursor() as cursor:
        try:
            cursor.execute(f'KILL {reader._connections[0].thread_id()}')
        except pymysql.err.OperationalError as e:
            if e.args[0] != ER.NO_SUCH_THREAD:   # killed already
                raise


def _ids(tagged):
    table, batch = tagged
    assert table == 'events'
    return batch.column('id').to_pylist()


def test_killed_connection_resumes_without_loss_or_duplicates(
        mariadb, password_file, events_db, caplog):
    reader = _reader(mariadb, password_file)
    split = TableSplit(events_db, 'events', ('instance_actions_events',), 0,
                       None)
    batches = reader.process(split)
    ids = _ids(next(batches))
    _kill(mariadb, reader)             # mid-split, rows still streaming
    ids += [i for batch in batches for i in _ids(batch)]
    reader.teardown()
    assert ids == list(range(1, ROWS + 1))
    assert re.search(r'resuming at id \d+ \(1/3\)', caplog.text)


def test_a_connection_killed_again_and_again_fails_clearly(
        mariadb, password_file, events_db):
    reader = _reader(mariadb, password_file)
    split = TableSplit(events_db, 'events', ('instance_actions_events',), 0,
                       None)
    batches = reader.process(split)
    with pytest.raises(UserError, match='cannot reach MySQL|MySQL error'):
        for _ in batches:
            _kill(mariadb, reader)
    reader.teardown()



def test_a_database_not_on_the_server_fails_at_plan_time(
        mariadb, password_file, nova_db, tmp_path, capsys):
    """Not as a missing table or grant: the reader has SELECT on tables of
    Nova databases only, so without the check it would be told to grant
    SELECT on nova_cell9.instances."""
    database = nova_db()
    out = tmp_path / 'out'
    status = cli.main([
        'instances', '--mysql-host', mariadb.host, '--mysql-port',
        str(mariadb.port), '--mysql-user', READER, '--mysql-password-file',
        password_file, '--databases', f'{database},nova_cell9', '--output',
        str(out / 'trace')])
    assert status == 1
    error = capsys.readouterr().err
    m = re.fullmatch(
        rf"starcompactor: error: unknown or inaccessible database "
        rf"'nova_cell9' on {READER}@{re.escape(mariadb.host)}:{mariadb.port} "
        rf"\({READER} sees (.+)\)\n", error)
    assert m, error
    seen = m.group(1).split(', ')
    assert database in seen and seen == sorted(seen)
    assert not {'nova_cell9', 'mysql', 'information_schema'} & set(seen)
    assert not list(tmp_path.glob('out/**/*'))      # nothing written
