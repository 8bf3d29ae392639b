"""The synthetic Nova history: deterministic, shaped like what real Nova
writes, and loadable into real MariaDB directly or through a dump file."""
import collections
import datetime as dt
import gzip
import itertools
import os
import re
import subprocess

import pytest

from starcompactor import synth
from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError

I, A, E = (synth.COLUMNS[t] for t in synth.BASE_TABLES)
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
TIME = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$')
START, DAYS = dt.datetime(2015, 9, 1), 365


def _time(text):
    return dt.datetime.strptime(text, '%Y-%m-%d %H:%M:%S')


def _dicts(rows, columns):
    return [dict(zip(columns, row)) for row in rows]


@pytest.fixture(scope='module')
def history():
    """4,000 instances, a year, two cells: as dict rows per db and table."""
    data = synth.collect(4000, seed=7)
    return {db: {t: _dicts(rows, synth.COLUMNS[t]) for t, rows in tables.items()}
            for db, tables in data.items()}


def _all(history, table):
    """(db, shadow?, row) over every database, live then shadow."""
    for db, tables in history.items():
        for shadow in (False, True):
            for row in tables[(synth.SHADOW if shadow else '') + table]:
                yield db, shadow, row


def test_columns_are_real_nova_columns():
    for table in synth.TABLES:
        real = synth.table_columns(table)
        assert real, table
        assert set(synth.COLUMNS[table]) <= set(real), table


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
    cell0 = len(history['nova_cell0']['instances']) + \
        len(history['nova_cell0']['shadow_instances'])
    unfinished = [e for e in events if e['finish_time'] is None]
    errors = [e for e in events if e['result'] == 'Error']
    # The proportions the module docstring documents.
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
                assert TIME.match(e['start_time'])
                assert e['created_at'] == e['start_time']
                assert e['deleted'] == 0 and e['deleted_at'] is None
                if e['finish_time'] is None:
                    assert e['result'] is None and e['updated_at'] is None
                    # only in the last 2 days of the span
                    assert _time(e['start_time']) >= now - dt.timedelta(days=2)
                else:
                    assert e['result'] in ('Success', 'Error')
                    assert e['start_time'] <= e['finish_time'] == \
                        e['updated_at']
                    assert _time(e['finish_time']) <= now
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
            assert r['uuid'] and TIME.match(r['created_at'])
            if r['deleted']:
                assert r['deleted'] == r['id']
                assert r['vm_state'] == 'deleted'
                assert r['deleted_at'] and r['terminated_at'] <= r['deleted_at']
            else:
                assert r['deleted_at'] is None and r['vm_state'] != 'deleted'
            if shadow:   # archived: deleted before the archive cutoff
                assert r['deleted'] and \
                    _time(r['deleted_at']) < archive_before
            elif r['deleted']:
                assert _time(r['deleted_at']) >= archive_before
            if r['host'] is not None:
                assert re.fullmatch(r'compute-\d{4}', r['host'])
            if r['launched_at'] is not None:
                assert r['launched_at'] >= r['created_at']
            assert (r['vcpus'], r['memory_mb'], r['root_gb']) in {
                f[2:5] for f in synth.FLAVORS}
    # Scheduling failures live in cell0, with their failed create action.
    cell0 = history['nova_cell0']
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
    assert any(r['id'] == 1 for r in history['nova_cell0']['shadow_instances']
               + history['nova_cell0']['instances'])
    assert any(r['id'] == 1 for r in history['nova_cell1']['shadow_instances']
               + history['nova_cell1']['instances'])


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
    assert synth.sql_literal(None) == 'NULL'
    assert synth.sql_literal(12) == '12'
    assert synth.sql_literal('a\'b"c\\d\ne\rf\0g\x1ah') == \
        "'a\\'b\\\"c\\\\d\\ne\\rf\\0g\\Zh'"
    values = {'created_at': '2016-01-01 00:00:00', 'id': 3, 'event': 'x',
              'action_id': 2, 'start_time': '2016-01-01 00:00:00',
              'traceback': "it's\n", 'deleted': 0}
    row = tuple(values.get(c) for c in E)
    assert synth.row_formatter('shadow_instance_actions_events')(row) == (
        "('2016-01-01 00:00:00',NULL,NULL,3,'x',2,'2016-01-01 00:00:00',"
        "NULL,NULL,'it\\'s\\n',0,NULL,NULL)")


_names = itertools.count()


def _cells(prefix):
    n = next(_names)
    return (f'{prefix}_{os.getpid()}_{n}_cell0', f'{prefix}_{os.getpid()}_{n}_cell1')


def _counts(server, cells):
    out = {}
    with server.admin() as admin, admin.cursor() as cursor:
        for db in cells:
            for table in synth.TABLES:
                cursor.execute(f'SELECT COUNT(*) FROM `{db}`.`{table}`')
                out[db, table] = cursor.fetchone()[0]
    return out


def _drop(server, cells):
    with server.admin() as admin, admin.cursor() as cursor:
        for db in cells:
            cursor.execute(f'DROP DATABASE IF EXISTS `{db}`')


def _expected(instances, **kwargs):
    return {(db, t): len(rows)
            for db, tables in synth.collect(instances, **kwargs).items()
            for t, rows in tables.items()}


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
    names, tracebacks = set(), set()
    for _, table, rows in synth.generate(instances, **kwargs):
        if table.endswith('instances'):
            names |= {r[I.index('display_name')] for r in rows}
        elif table.endswith('events'):
            tracebacks |= {r[E.index('traceback')] for r in rows} - {None}
    return names, tracebacks


def test_load_mysql_round_trip(mariadb):
    cells = _cells('synthload')
    kwargs = dict(seed=5, cells=cells, days=200)
    try:
        with mariadb.admin() as admin:
            result = synth.load_mysql(admin, 1500, **kwargs)
        expected = _expected(1500, **kwargs)
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
            unfinished = sum(
                r[E.index('finish_time')] is None
                for db, table, rows in synth.generate(1500, **kwargs)
                if (db, table) == (cells[1], 'instance_actions_events')
                for r in rows)
            assert cursor.fetchone()[0] == unfinished > 0
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
    path = tmp_path / f'nova{suffix}'
    try:
        result = synth.write_dump(path, 800, **kwargs)
        expected = _expected(800, **kwargs)
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


def test_odd_names_are_escaped_correctly(mariadb, tmp_path):
    """Names with quotes, backslashes and non-ASCII survive a dump."""
    cells = _cells('synthodd')
    kwargs = dict(seed=0, cells=cells, days=30)
    old = synth.P_ODD_NAME
    synth.P_ODD_NAME = 0.5
    try:
        path = tmp_path / 'odd.sql'
        synth.write_dump(path, 200, **kwargs)
        names, _ = _generated_odd_values(200, **kwargs)
        assert set(synth.ODD_NAMES) <= names
        proc = subprocess.run(_mariadb_client(mariadb),
                              input=path.read_bytes(), capture_output=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        assert _odd_values(mariadb, cells)[0] == names
    finally:
        synth.P_ODD_NAME = old
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
    with pytest.raises(SystemExit):   # exactly one target
        cli.main(['synth', '--instances', '10'])


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
            _expected(200, seed=9, cells=cells)
    finally:
        _drop(mariadb, cells)
