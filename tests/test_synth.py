"""The synthetic Nova history: deterministic, shaped like what real Nova
writes, and loadable into real MariaDB directly or through a dump file.

What the tests check is read back from MariaDB, or written out below."""
import collections
import datetime as dt
import gzip
import itertools
import os
import re
import subprocess

import pymysql.cursors
import pytest

from starcompactor import synth
from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError
from starcompactor.synth import inserts, model
from starcompactor.synth.nova_schema import table_columns
from starcompactor.synth.tables import COLUMNS, HOST_TABLES, TABLES

KINDS = {'create', 'delete', 'reboot', 'stop', 'start', 'resize',
         'confirmResize', 'revertResize', 'live-migration', 'shelve',
         'unshelve', 'rebuild'}
# The events real Nova records per action (a failed or unfinished action
# stops early, so its events are a prefix of these).
EVENTS_OF = {
    'create': ('conductor_schedule_and_build_instances',
               'compute__do_build_and_run_instance'),
    'delete': ('compute_terminate_instance',),
    'reboot': ('compute_reboot_instance',),
    'stop': ('compute_stop_instance',),
    'start': ('compute_start_instance',),
    'rebuild': ('compute_rebuild_instance',),
    'resize': ('conductor_migrate_server', 'compute_prep_resize',
               'compute_resize_instance', 'compute_finish_resize'),
    'confirmResize': ('compute_confirm_resize',),
    'revertResize': ('compute_revert_resize', 'compute_finish_revert_resize'),
    'live-migration': ('conductor_live_migrate_instance',
                       'compute_check_can_live_migrate_destination',
                       'compute_check_can_live_migrate_source',
                       'compute_live_migration', 'compute_pre_live_migration',
                       'compute_post_live_migration_at_destination'),
    'shelve': ('compute_shelve_instance',),
    'shelveOffload': ('compute_shelve_offload_instance',),
    'unshelve': ('conductor_unshelve_instance', 'compute_unshelve_instance'),
}
START, DAYS = dt.datetime(2015, 9, 1), 365
# (vcpus, memory_mb, root_gb) of m1.tiny, small, medium, large, xlarge.
FLAVORS = {(1, 512, 1), (1, 2048, 20), (2, 4096, 40), (4, 8192, 80),
           (8, 16384, 160)}

# Rows per table in (cell0, cell1) of three small histories, counted once
# with SELECT COUNT(*) on the databases they were loaded into (cell0 has
# no hosts).
ROWS_1500_SEED_5_DAYS_200 = {
    'instances': (24, 1018),
    'instance_actions': (44, 2735),
    'instance_actions_events': (24, 4714),
    'shadow_instances': (20, 438),
    'shadow_instance_actions': (40, 949),
    'shadow_instance_actions_events': (20, 1455),
    'compute_nodes': (0, 10),
    'services': (0, 13),
    'shadow_compute_nodes': (0, 4),
    'shadow_services': (0, 1),
}
UNFINISHED_EVENTS_1500_SEED_5_DAYS_200 = 15   # live, in cell1
ROWS_800_SEED_11_DAYS_120 = {
    'instances': (17, 567),
    'instance_actions': (32, 1368),
    'instance_actions_events': (17, 2344),
    'shadow_instances': (11, 205),
    'shadow_instance_actions': (22, 428),
    'shadow_instance_actions_events': (11, 655),
    'compute_nodes': (0, 11),
    'services': (0, 14),
    'shadow_compute_nodes': (0, 0),
    'shadow_services': (0, 0),
}
ROWS_200_SEED_9 = {
    'instances': (5, 133),
    'instance_actions': (10, 438),
    'instance_actions_events': (5, 741),
    'shadow_instances': (2, 60),
    'shadow_instance_actions': (4, 157),
    'shadow_instance_actions_events': (2, 250),
    'compute_nodes': (0, 11),
    'services': (0, 13),
    'shadow_compute_nodes': (0, 1),
    'shadow_services': (0, 1),
}


def _per_database(rows, cells):
    """``ROWS_...`` as {(database, table): rows}."""
    return {(db, table): counts[i] for table, counts in rows.items()
            for i, db in enumerate(cells)}


@pytest.fixture(scope='module')
def history(mariadb):
    """4,000 instances, a year, two cells, loaded into MariaDB and read back:
    {'cell0' or 'cell1': {table: [row dicts in id order]}} (times as
    datetimes)."""
    cells = _cells('synthmodel')
    try:
        with mariadb.admin() as admin:
            synth.load_mysql(admin, 4000, seed=7, cells=cells)
        tables = {}
        with mariadb.admin() as admin, \
                admin.cursor(pymysql.cursors.DictCursor) as cursor:
            for role, db in zip(('cell0', 'cell1'), cells):
                tables[role] = {}
                for table in TABLES:
                    cursor.execute(f'SELECT * FROM `{db}`.`{table}` '
                                   f'ORDER BY id')
                    tables[role][table] = list(cursor.fetchall())
        return tables
    finally:
        _drop(mariadb, cells)


def _all(history, table):
    """(db, shadow?, row) over every database, live then shadow."""
    for db, tables in history.items():
        for shadow in (False, True):
            for row in tables[('shadow_' if shadow else '') + table]:
                yield db, shadow, row


def test_columns_are_real_nova_columns():
    for table in TABLES:
        real = table_columns(table)
        assert real, table
        assert set(COLUMNS[table]) <= set(real), table


def test_same_seed_same_rows_other_seed_other_rows():
    one = list(synth.generate(300, seed=1, chunk_rows=100))
    assert one == list(synth.generate(300, seed=1, chunk_rows=100))
    assert one != list(synth.generate(300, seed=2, chunk_rows=100))
    assert all(len(rows) <= 110 for _, _, rows in one)


def test_proportions(history):
    instances = [r for _, _, r in _all(history, 'instances')]
    actions = [r for _, _, r in _all(history, 'instance_actions')]
    events = [r for _, _, r in _all(history, 'instance_actions_events')]
    n = len(instances)
    assert n == 4000
    deleted = [r for r in instances if r['deleted']]
    archived = sum(len(t['shadow_instances']) for t in history.values())
    cell0 = len(history['cell0']['instances']) + \
        len(history['cell0']['shadow_instances'])
    unfinished = [e for e in events if e['finish_time'] is None]
    errors = [e for e in events if e['result'] == 'Error']
    # The proportions the model's docstring documents.
    assert 0.78 <= len(deleted) / n <= 0.88
    assert 0.33 <= archived / len(deleted) <= 0.48
    assert 0.02 <= cell0 / n <= 0.045
    assert 2.6 <= len(actions) / n <= 3.2
    assert 1.5 <= len(events) / len(actions) <= 1.8
    assert 4.3 <= len(events) / n <= 5.3
    assert 0.008 <= len(errors) / len(events) <= 0.025
    assert 0 < len(unfinished) / len(events) <= 0.003
    kinds = collections.Counter(a['action'] for a in actions)
    assert KINDS <= set(kinds)
    assert 0.30 <= kinds['create'] / len(actions) <= 0.40
    assert kinds['create'] == n


def test_rows_are_shaped_like_nova(history):
    now = START + dt.timedelta(days=DAYS)
    archive_before = START + dt.timedelta(days=DAYS * 0.5)
    for db, tables in history.items():
        instances = {}
        for table in ('instances', 'shadow_instances'):
            for r in tables[table]:
                instances[r['uuid']] = (table.startswith('shadow_'), r)
        actions = {}
        for table in ('instance_actions', 'shadow_instance_actions'):
            for a in tables[table]:
                actions[a['id']] = (table.startswith('shadow_'), a)
        # ids per database start at 1 and have no gaps (live + shadow).
        for table, rows in (('instances', [r for _, r in instances.values()]),
                            ('actions', [a for _, a in actions.values()])):
            assert sorted(r['id'] for r in rows) == \
                list(range(1, len(rows) + 1)), (db, table)
        by_action = collections.defaultdict(list)
        event_ids = []
        for table in ('instance_actions_events',
                      'shadow_instance_actions_events'):
            for e in tables[table]:
                # Events belong to an action of the same database and side.
                shadow, action = actions[e['action_id']]
                assert shadow == table.startswith('shadow_')
                by_action[e['action_id']].append(e)
                event_ids.append(e['id'])
                assert isinstance(e['start_time'], dt.datetime)
                assert e['created_at'] == e['start_time']
                assert e['deleted'] == 0 and e['deleted_at'] is None
                if e['finish_time'] is None:
                    assert e['result'] is None and e['updated_at'] is None
                    # only in the last 2 days of the span
                    assert e['start_time'] >= now - dt.timedelta(days=2)
                else:
                    assert e['result'] in ('Success', 'Error')
                    assert e['start_time'] <= e['finish_time'] == \
                        e['updated_at']
                    assert e['finish_time'] <= now
                if e['result'] == 'Error':
                    assert e['traceback'].startswith('Traceback')
                    assert e['details']
                else:
                    assert e['traceback'] is None
        assert sorted(event_ids) == list(range(1, len(event_ids) + 1))
        for aid, (shadow, a) in actions.items():
            # Actions belong to an instance of the same database and side.
            ishadow, instance = instances[a['instance_uuid']]
            assert ishadow == shadow
            assert a['finish_time'] is None and a['deleted'] == 0
            assert a['request_id'].startswith('req-')
            assert a['created_at'] == a['start_time']
            evs = by_action[aid]
            names = [e['event'] for e in evs]
            assert len(set(names)) == len(names)          # unique in action
            assert set(names) <= set(EVENTS_OF[a['action']])
            assert [e['id'] for e in evs] == sorted(e['id'] for e in evs)
            failed = any(e['result'] == 'Error' for e in evs)
            assert a['message'] == ('Error' if failed else None)
            if a['action'] == 'create':
                assert a['start_time'] < instance['created_at']
        for shadow, r in instances.values():
            assert r['uuid'] and isinstance(r['created_at'], dt.datetime)
            if r['deleted']:
                assert r['deleted'] == r['id']
                assert r['vm_state'] == 'deleted'
                assert r['deleted_at'] and r['terminated_at'] <= r['deleted_at']
            else:
                assert r['deleted_at'] is None and r['vm_state'] != 'deleted'
            if shadow:   # archived: deleted before the archive cutoff
                assert r['deleted'] and r['deleted_at'] < archive_before
            elif r['deleted']:
                assert r['deleted_at'] >= archive_before
            if r['host'] is not None:
                assert re.fullmatch(r'compute-\d{4}', r['host'])
            if r['launched_at'] is not None:
                assert r['launched_at'] >= r['created_at']
            assert (r['vcpus'], r['memory_mb'], r['root_gb']) in FLAVORS
    # Scheduling failures live in cell0, with their failed create action.
    cell0 = history['cell0']
    assert cell0['instances'] and cell0['shadow_instances']
    for table in ('instances', 'shadow_instances'):
        for r in cell0[table]:
            assert r['host'] is None and r['node'] is None
            assert r['launched_at'] is None
            assert r['vm_state'] in ('error', 'deleted')
    creates = [a for t in ('instance_actions', 'shadow_instance_actions')
               for a in cell0[t] if a['action'] == 'create']
    assert creates and all(a['message'] == 'Error' for a in creates)
    for t in ('instance_actions_events', 'shadow_instance_actions_events'):
        for e in cell0[t]:
            assert e['event'] == 'conductor_schedule_and_build_instances'
            assert e['result'] == 'Error'
    # ids collide across cells, as in real Nova.
    for cell in history.values():
        assert any(r['id'] == 1 for r in cell['shadow_instances']
                   + cell['instances'])


def test_instances_for_events():
    n = synth.instances_for_events(40000, seed=3, days=90)
    events = sum(len(rows) for _, t, rows in synth.generate(n, seed=3, days=90)
                 if t.endswith('instance_actions_events'))
    assert abs(events - 40000) / 40000 < 0.05


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError):
        list(synth.generate(10, cells=('bad name',)))
    with pytest.raises(UserError):
        list(synth.generate(10, start='yesterday'))
    with pytest.raises(UserError):
        list(synth.generate(10, days=0))


def test_sql_literals():
    assert inserts.sql_literal(None) == 'NULL'
    assert inserts.sql_literal(12) == '12'
    assert inserts.sql_literal('a\'b"c\\d\ne\rf\0g\x1ah') == \
        "'a\\'b\\\"c\\\\d\\ne\\rf\\0g\\Zh'"
    values = {'created_at': '2016-01-01 00:00:00', 'id': 3, 'event': 'x',
              'action_id': 2, 'start_time': '2016-01-01 00:00:00',
              'traceback': "it's\n", 'deleted': 0}
    row = tuple(values.get(c) for c in COLUMNS['instance_actions_events'])
    assert inserts.row_formatter('shadow_instance_actions_events')(row) == (
        "('2016-01-01 00:00:00',NULL,NULL,3,'x',2,'2016-01-01 00:00:00',"
        "NULL,NULL,'it\\'s\\n',0,NULL,NULL)")


_names = itertools.count()


def _cells(prefix):
    n = next(_names)
    return (f'{prefix}_{os.getpid()}_{n}_cell0',
            f'{prefix}_{os.getpid()}_{n}_cell1')


def _counts(server, cells):
    out = {}
    with server.admin() as admin, admin.cursor() as cursor:
        for db in cells:
            for table in TABLES + HOST_TABLES:
                cursor.execute(f'SELECT COUNT(*) FROM `{db}`.`{table}`')
                out[db, table] = cursor.fetchone()[0]
    return out


def _drop(server, cells):
    with server.admin() as admin, admin.cursor() as cursor:
        for db in cells:
            cursor.execute(f'DROP DATABASE IF EXISTS `{db}`')


def _odd_values(server, cells):
    """Values needing escapes, read back from the server."""
    with server.admin() as admin, admin.cursor() as cursor:
        names, tracebacks = set(), set()
        for db in cells:
            for p in ('', 'shadow_'):
                cursor.execute(f'SELECT display_name FROM `{db}`.`{p}instances`')
                names |= {r[0] for r in cursor.fetchall()}
                cursor.execute(f'SELECT traceback FROM '
                               f'`{db}`.`{p}instance_actions_events` '
                               f'WHERE traceback IS NOT NULL')
                tracebacks |= {r[0] for r in cursor.fetchall()}
    return names, tracebacks


def _generated_odd_values(instances, **kwargs):
    """The same values as generated, before any SQL."""
    name = COLUMNS['instances'].index('display_name')
    traceback = COLUMNS['instance_actions_events'].index('traceback')
    names, tracebacks = set(), set()
    for _, table, rows in synth.generate(instances, **kwargs):
        if table.endswith('instances'):
            names |= {r[name] for r in rows}
        elif table.endswith('events'):
            tracebacks |= {r[traceback] for r in rows} - {None}
    return names, tracebacks


def test_load_mysql_round_trip(mariadb):
    cells = _cells('synthload')
    kwargs = dict(seed=5, cells=cells, days=200)
    expected = _per_database(ROWS_1500_SEED_5_DAYS_200, cells)
    try:
        with mariadb.admin() as admin:
            result = synth.load_mysql(admin, 1500, **kwargs)
        assert result.counts == expected
        assert _counts(mariadb, cells) == expected
        assert _odd_values(mariadb, cells) == \
            _generated_odd_values(1500, **kwargs)
        with mariadb.admin() as admin, admin.cursor() as cursor:
            # Nova's own schema: all the other tables exist, empty.
            cursor.execute(f'SELECT COUNT(*) FROM `{cells[1]}`.`migrations`')
            assert cursor.fetchone() == (0,)
            cursor.execute(
                f'SELECT COUNT(*) FROM `{cells[1]}`.instance_actions_events '
                f'WHERE finish_time IS NULL')
            assert cursor.fetchone() == \
                (UNFINISHED_EVENTS_1500_SEED_5_DAYS_200,)
    finally:
        _drop(mariadb, cells)


def _mariadb_client(server):
    if server.socket:
        return ['mariadb', f'--socket={server.socket}', '-uroot']
    return ['mariadb', f'--host={server.host}', f'--port={server.port}',
            '-uroot']


@pytest.mark.parametrize('suffix', ['.sql.gz', '.sql'])
def test_dump_loads_with_the_mariadb_client(mariadb, tmp_path, suffix):
    cells = _cells('synthdump')
    kwargs = dict(seed=11, cells=cells, days=120)
    expected = _per_database(ROWS_800_SEED_11_DAYS_120, cells)
    path = tmp_path / f'nova{suffix}'
    try:
        result = synth.write_dump(path, 800, **kwargs)
        assert result.counts == expected
        opener = gzip.open if suffix.endswith('.gz') else open
        with opener(path, 'rb') as f:
            text = f.read()
        lines = text.split(b'\n')
        assert max(map(len, lines)) < 1.1 * (1 << 20)
        head = text.decode()
        for db in cells:
            assert (f'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{db}` '
                    in head)
            assert f'USE `{db}`;' in head
        assert 'INSERT INTO `instance_actions_events` VALUES (' in head
        # the same arguments give the same bytes
        again = tmp_path / f'again{suffix}'
        synth.write_dump(again, 800, **kwargs)
        assert again.read_bytes() == path.read_bytes()
        proc = subprocess.run(_mariadb_client(mariadb), input=text,
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        assert _counts(mariadb, cells) == expected
        assert _odd_values(mariadb, cells) == \
            _generated_odd_values(800, **kwargs)
    finally:
        _drop(mariadb, cells)


def test_odd_names_are_escaped_correctly(mariadb, tmp_path, monkeypatch):
    """Names with quotes, backslashes and non-ASCII survive a dump."""
    cells = _cells('synthodd')
    kwargs = dict(seed=0, cells=cells, days=30)
    monkeypatch.setattr(model, 'P_ODD_NAME', 0.5)
    try:
        path = tmp_path / 'odd.sql'
        synth.write_dump(path, 200, **kwargs)
        proc = subprocess.run(_mariadb_client(mariadb),
                              input=path.read_bytes(), capture_output=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        names = _odd_values(mariadb, cells)[0]
        assert set(model.ODD_NAMES) <= names
        assert names == _generated_odd_values(200, **kwargs)[0]
    finally:
        _drop(mariadb, cells)


def test_cli_writes_a_dump(tmp_path, capsys):
    path = tmp_path / 'nova.sql.gz'
    assert cli.main(['synth', '--instances', '150', '--seed', '4', '--days',
                     '30', '--cells', 'a_cell0,a_cell1', '--dump',
                     str(path)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith('synth: wrote 150 instances') and '\n' not in out
    assert path.exists()
    assert cli.main(['synth', '--events', '2000', '--days', '30',
                     '--dump', str(tmp_path / 'e.sql')]) == 0
    out = capsys.readouterr().out
    events = int(re.search(r'([\d,]+) events', out).group(1).replace(',', ''))
    assert 1700 <= events <= 2300


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(['synth', '--instances', '10', '--cells', 'x;drop',
                     '--dump', str(tmp_path / 'x.sql')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('starcompactor: error: bad cell database name')
    assert err.count('\n') == 1
    assert cli.main(['synth', '--instances', '10', '--dump',
                     str(tmp_path / 'missing' / 'x.sql')]) == 1
    assert 'no such directory' in capsys.readouterr().err
    assert cli.main(['synth', '--instances', '10']) == 2   # no target
    err = capsys.readouterr().err
    assert ('one of the arguments --dump --mysql-host --audit-dir is '
            'required') in err
    assert err.count('\n') == 1


def test_cli_refuses_a_misspelled_option_and_writes_nothing(tmp_path,
                                                            capsys):
    out = tmp_path / 'OUT.sql'
    assert cli.main(['synth', '--events', '100', '--dump', str(out),
                     '--sede', '3']) == 2
    err = capsys.readouterr().err
    assert 'unknown option --sede' in err
    assert 'did you mean --seed' in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(['synth', '--help'])
    assert exited.value.code == 0
    help_text = ' '.join(capsys.readouterr().out.split())
    for shown in ('(default: 0)', '(default: 2015-09-01)', '(default: 365)',
                  '(default: nova_cell0,nova_cell1)', '(default: 0.5)',
                  '(default: 3306)', '(default: root)'):
        assert help_text.count(shown) == 1, shown


def test_cli_loads_mysql(mariadb, tmp_path, capsys):
    if not mariadb.socket:
        pytest.skip('needs the throwaway server (root without password)')
    cells = _cells('synthcli')
    password = tmp_path / 'pw'
    password.write_text('\n')
    try:
        assert cli.main(['synth', '--instances', '200', '--seed', '9',
                         '--cells', ','.join(cells), '--mysql-host',
                         mariadb.host, '--mysql-port', str(mariadb.port),
                         '--mysql-user', 'root', '--mysql-password-file',
                         str(password)]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert 'synth: wrote 200 instances' in out
        assert _counts(mariadb, cells) == \
            _per_database(ROWS_200_SEED_9, cells)
    finally:
        _drop(mariadb, cells)
