"""The host (machine) event table: the event rules, then real MariaDB with
Nova's real compute_nodes and services, two cells, read from the server and
from a series of three real dumps. Expected events are written out by hand.
"""
import hashlib
import hmac

import pytest


from helpers import (
    dump_state, insert, job_args, node_row, ran_job, read_csv, service_row)
from starcompactor import synth
from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.hosts import HostsJob
from starcompactor.transforms.hosts import (
    CREATE, DELETE, DISABLE, ENABLE, UPDATE, HostEvent, HostState, Node,
    Service, host_events, kept_by_rules)
from starcompactor.transforms.schema import HOST_TRACE

DAY = 86_400


# -- the rules, on one host -------------------------------------------------

def node(id_, created, capacity, deleted=None, updated=None):
    return Node(('cell1', id_), created, updated, deleted, capacity)


def test_one_state_gives_creates_deletes_and_a_disable():
    state = HostState(100 * DAY, (
        node(1, 1 * DAY, (8, 100, 10), deleted=3 * DAY),
        node(2, 3 * DAY, (16, 200, 20))), Service(5 * DAY, True))
    assert host_events([state]) == ([
        HostEvent(1 * DAY, CREATE, (8, 100, 10)),
        HostEvent(3 * DAY, DELETE, (8, 100, 10)),   # replaced: DELETE first
        HostEvent(3 * DAY, CREATE, (16, 200, 20)),
        HostEvent(5 * DAY, DISABLE, (16, 200, 20)),
    ], {})


def test_changes_between_states_are_dated_where_updated_at_moved():
    first = HostState(10 * DAY, (node(1, 1 * DAY, (8, 100, 10),
                                      updated=2 * DAY),),
                      Service(4 * DAY, True))
    second = HostState(20 * DAY, (node(1, 1 * DAY, (8, 200, 10),
                                       updated=2 * DAY),),   # not moved
                       Service(15 * DAY, False))
    third = HostState(30 * DAY)                              # host gone
    assert host_events([first, second, third]) == ([
        HostEvent(1 * DAY, CREATE, (8, 100, 10)),
        HostEvent(4 * DAY, DISABLE, (8, 100, 10)),
        HostEvent(15 * DAY, ENABLE, (8, 100, 10)),
        HostEvent(20 * DAY, UPDATE, (8, 200, 10)),
        HostEvent(30 * DAY, DELETE, (8, 200, 10)),
    ], {})


def test_events_breaking_a_rule_are_counted_not_written():
    capacity, larger = (8, 100, 10), (16, 100, 10)
    events, rejects = kept_by_rules([
        HostEvent(1, DELETE, capacity),     # nothing to delete
        HostEvent(2, ENABLE, None),         # enabled already
        HostEvent(3, CREATE, capacity),
        HostEvent(4, CREATE, capacity),     # created already
        HostEvent(5, UPDATE, capacity),     # changes nothing
        HostEvent(6, DISABLE, None),
        HostEvent(7, DISABLE, None),        # disabled already
        HostEvent(8, UPDATE, larger),
        HostEvent(9, DELETE, larger),
        HostEvent(10, DELETE, larger),      # deleted already
    ])
    assert events == [HostEvent(3, CREATE, capacity),
                      HostEvent(6, DISABLE, capacity),
                      HostEvent(8, UPDATE, larger),
                      HostEvent(9, DELETE, larger)]
    assert rejects == {'delete_unless_created': 2, 'repeated_enable': 1,
                       'create_while_created': 1,
                       'update_changes_nothing': 1, 'repeated_disable': 1}


def test_two_live_nodes_on_one_host_break_the_rules():
    first = HostState(10 * DAY, (node(1, 1 * DAY, (8, 100, 10)),
                                 node(2, 2 * DAY, (8, 100, 10))))
    second = HostState(20 * DAY, (node(2, 2 * DAY, (8, 100, 10),
                                       deleted=12 * DAY),))
    # node 2's CREATE while node 1 lives; node 1, gone from the second
    # state, is deleted after node 2's DELETE left nothing to delete
    assert host_events([first, second]) == (
        [HostEvent(1 * DAY, CREATE, (8, 100, 10)),
         HostEvent(12 * DAY, DELETE, (8, 100, 10))],
        {'create_while_created': 1, 'delete_unless_created': 1})


# -- real MariaDB, two cells, three states ----------------------------------

def _first_state(admin, cell1, cell2):
    insert(admin, cell1, 'compute_nodes', [
        node_row(1, 'r01-c01', '2024-01-01 00:00:00', (32, 128000, 1000),
                 updated='2024-01-09 00:00:00'),
        node_row(2, 'r01-c02', '2024-01-02 00:00:00', (16, 64000, 500),
                 updated='2024-01-09 00:00:00'),
        # r02-c01's first node, replaced by node 4 in the same second
        node_row(3, 'r02-c01', '2024-01-01 00:00:00', (32, 128000, 1000),
                 updated='2024-01-03 00:00:00',
                 deleted_at='2024-01-03 00:00:00'),
        node_row(4, 'r02-c01', '2024-01-03 00:00:00', (64, 256000, 2000),
                 updated='2024-01-09 00:00:00')])
    insert(admin, cell1, 'services', [
        service_row(1, 'r01-c01', '2024-01-01 00:00:00'),
        service_row(2, 'r01-c02', '2024-01-05 00:00:00', disabled=1,
                    reason='disk replacement'),
        service_row(3, 'r02-c01', '2024-01-03 00:00:00'),
        service_row(4, 'ctl1', '2024-01-09 00:00:00',
                    binary='nova-conductor')])
    # cell2: r02-c02 retired and archived; r03-c01 live.
    insert(admin, cell2, 'shadow_compute_nodes', [
        node_row(1, 'r02-c02', '2023-12-01 00:00:00', (8, 32000, 200),
                 deleted_at='2023-12-20 00:00:00')])
    insert(admin, cell2, 'shadow_services', [
        service_row(1, 'r02-c02', '2023-12-20 00:00:00',
                    deleted_at='2023-12-20 00:00:00')])
    insert(admin, cell2, 'compute_nodes', [
        node_row(2, 'r03-c01', '2024-01-04 00:00:00', (8, 32000, 200),
                 updated='2024-01-04 00:00:00')])
    insert(admin, cell2, 'services', [
        service_row(2, 'r03-c01', '2024-01-04 00:00:00')])


def _second_state(admin, cell1, cell2):
    with admin.cursor() as cursor:
        # re-enabled; resized (updated_at moved); resized, updated_at not
        cursor.execute(f"UPDATE `{cell1}`.services SET disabled = 0, "
                       f"disabled_reason = NULL, updated_at = "
                       f"'2024-01-15 00:00:00' WHERE id = 2")
        cursor.execute(f"UPDATE `{cell1}`.compute_nodes SET vcpus = 48, "
                       f"updated_at = '2024-01-16 00:00:00' WHERE id = 1")
        cursor.execute(f"UPDATE `{cell2}`.compute_nodes SET "
                       f"memory_mb = 64000 WHERE id = 2")


def _third_state(admin, cell1, cell2):
    with admin.cursor() as cursor:
        # r01-c01 deleted; r03-c01 gone without a trace; r01-c02 disabled
        cursor.execute(f"UPDATE `{cell1}`.compute_nodes SET deleted = id, "
                       f"deleted_at = '2024-01-25 00:00:00' WHERE id = 1")
        cursor.execute(f"UPDATE `{cell1}`.services SET deleted = id, "
                       f"deleted_at = '2024-01-25 00:00:00' WHERE id = 1")
        cursor.execute(f'DELETE FROM `{cell2}`.compute_nodes')
        cursor.execute(f'DELETE FROM `{cell2}`.services')
        cursor.execute(f"UPDATE `{cell1}`.services SET disabled = 1, "
                       f"disabled_reason = 'retiring', updated_at = "
                       f"'2024-01-28 00:00:00' WHERE id = 2")


def _row(day, seconds, host, rack, event, capacity):
    return (f'{day}T00:00:00Z', str(seconds), host, str(rack), event,
            *map(str, capacity))


FIRST_STATE_EVENTS = [
    _row('2023-12-01', -1, 'r02-c02', 1, 'CREATE', (8, 32000, 200)),
    _row('2023-12-20', -1, 'r02-c02', 1, 'DELETE', (8, 32000, 200)),
    _row('2024-01-01', 0, 'r01-c01', 0, 'CREATE', (32, 128000, 1000)),
    _row('2024-01-01', 0, 'r02-c01', 1, 'CREATE', (32, 128000, 1000)),
    _row('2024-01-02', DAY, 'r01-c02', 0, 'CREATE', (16, 64000, 500)),
    _row('2024-01-03', 2 * DAY, 'r02-c01', 1, 'CREATE', (64, 256000, 2000)),
    _row('2024-01-03', 2 * DAY, 'r02-c01', 1, 'DELETE', (32, 128000, 1000)),
    _row('2024-01-04', 3 * DAY, 'r03-c01', 2, 'CREATE', (8, 32000, 200)),
    _row('2024-01-05', 4 * DAY, 'r01-c02', 0, 'DISABLE', (16, 64000, 500)),
]
SERIES_EVENTS = sorted(FIRST_STATE_EVENTS + [
    _row('2024-01-15', 14 * DAY, 'r01-c02', 0, 'ENABLE', (16, 64000, 500)),
    _row('2024-01-16', 15 * DAY, 'r01-c01', 0, 'UPDATE', (48, 128000, 1000)),
    # updated_at did not move: the second dump's time
    _row('2024-01-20', 19 * DAY, 'r03-c01', 2, 'UPDATE', (8, 64000, 200)),
    _row('2024-01-25', 24 * DAY, 'r01-c01', 0, 'DELETE', (48, 128000, 1000)),
    _row('2024-01-28', 27 * DAY, 'r01-c02', 0, 'DISABLE', (16, 64000, 500)),
    # gone from the third dump: its time
    _row('2024-01-30', 29 * DAY, 'r03-c01', 2, 'DELETE', (8, 64000, 200)),
])
COMMON = ['--mask-method', 'none', '--epoch', '2024-01-01T00:00:00Z',
          '--rack-regex', r'^(r\d+)-', '--formats', 'csv,avro']


def run_hosts(args, now=None):
    return ran_job(args, HostsJob, now).summarize(0.0)


def test_one_database_state_from_the_server(mariadb, nova_db, password_file,
                                            tmp_path):
    cells = [nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        _first_state(admin, *cells)
    summary = run_hosts(job_args(mariadb, password_file, cells,
                                 tmp_path / 'hosts', *COMMON))
    headers, rows = read_csv(tmp_path / 'hosts')
    assert headers == {tuple(HOST_TRACE.csv_header)}
    assert rows == sorted(FIRST_STATE_EVENTS)
    nodes, services, events = (summary.tables[t] for t in (
        'compute_nodes', 'services', 'host_events'))
    assert (nodes.read, nodes.in_trace, nodes.left_out) == (6, 6, {})
    assert (services.read, services.in_trace) == (6, 4)
    assert services.left_out == {'not_nova_compute': 1, 'deleted': 1}
    assert (events.read, events.in_trace, events.left_out) == (9, 9, {})
    assert summary.trace_rows == 9


def test_a_series_of_three_dumps(mariadb, nova_db, tmp_path):
    cells = [nova_db('cell1'), nova_db('cell2')]
    dumps = tmp_path / 'nightly'
    dumps.mkdir()
    states = ((_first_state, '2024-01-10 00:00:00'),
              (_second_state, '2024-01-20  0:00:00'),
              (_third_state, '2024-01-30 00:00:00'))
    # named against their order: the dumps' own times order them
    for (change, completed), name in zip(states, ('c.sql', 'b.sql', 'a.sql')):
        with mariadb.admin() as admin:
            change(admin, *cells)
        dump_state(mariadb, cells, dumps / name, completed)
    summary = run_hosts(['--dump', str(dumps), '--output',
                         str(tmp_path / 'hosts'), *COMMON])
    _, rows = read_csv(tmp_path / 'hosts')
    assert rows == SERIES_EVENTS
    events = summary.tables['host_events']
    assert (events.read, events.in_trace, events.left_out) == (15, 15, {})
    nodes = summary.tables['compute_nodes']
    assert (nodes.read, nodes.in_trace) == (6 + 6 + 5, 6 + 6 + 5)
    for table in summary.tables.values():
        assert table.balanced


def test_a_series_of_dumps_of_different_cells_is_refused(mariadb, nova_db,
                                                        tmp_path):
    """One dump per cell is no series of states: read as one, every host
    of the first cell would seem deleted by the second dump."""
    cells = [nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        _first_state(admin, *cells)
    dump_state(mariadb, cells[:1], tmp_path / 'cell1.sql',
               '2024-01-10 00:00:00')
    dump_state(mariadb, cells[1:], tmp_path / 'cell2.sql',
               '2024-01-10 00:05:00')
    with pytest.raises(UserError) as error:
        run_hosts(['--dump', str(tmp_path / 'cell1.sql'),
                   str(tmp_path / 'cell2.sql'),
                   '--output', str(tmp_path / 'hosts'), *COMMON])
    assert str(error.value) == (
        f'the dumps of a series must hold the same databases, but '
        f'{tmp_path / "cell1.sql"} has {cells[0]} and '
        f'{tmp_path / "cell2.sql"} has {cells[1]}: give one dump of every '
        f'cell per state (or --databases)')


def test_hosts_are_masked_as_the_instance_table_masks_them(
        mariadb, nova_db, password_file, tmp_path):
    cells = [nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        _first_state(admin, *cells)
    key = tmp_path / 'key'
    key.write_bytes(b'host-table-key-0123456789abcdef!')
    key.chmod(0o600)
    run_hosts(job_args(mariadb, password_file, cells, tmp_path / 'hosts',
                       '--mask-key-file', str(key), '--formats', 'csv'))
    _, rows = read_csv(tmp_path / 'hosts')
    masked = {hmac.new(key.read_bytes(), host.encode(),
                       hashlib.sha256).hexdigest()[:32]
              for host in ('r01-c01', 'r01-c02', 'r02-c01', 'r02-c02',
                           'r03-c01')}
    assert {row[2] for row in rows} == masked
    assert {row[3] for row in rows} == {''}    # no --rack-regex


def _mask(key, value):
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _host_use(admin, cells):
    """{host: first start} of the instance events on compute hosts, and the
    hosts of ``instances.host``, live and archived, by SQL."""
    def union(columns, table):
        return ' UNION ALL '.join(
            f'SELECT {columns} FROM `{db}`.`{prefix}{table}`'
            for db in cells for prefix in ('', 'shadow_'))
    with admin.cursor() as cursor:
        events = union('host, start_time', 'instance_actions_events')
        cursor.execute(f"SELECT host, MIN(start_time) FROM ({events}) e "
                       f"WHERE host LIKE 'compute-%' GROUP BY host")
        first_use = dict(cursor.fetchall())
        cursor.execute(f"SELECT DISTINCT host FROM "
                       f"({union('host', 'instances')}) i "
                       f"WHERE host IS NOT NULL")
        return first_use, {host for host, in cursor}


def test_a_synthetic_history_places_instances_on_hosts_that_exist(
        mariadb, nova_db, password_file, tmp_path):
    """synth's hosts: each instance host has its CREATE, masked as the
    instance table masks it, before the first event on it, and a live node
    at the end (a replaced node's DELETE comes with a new CREATE)."""
    cells = [nova_db('cell0'), nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        synth.load_mysql(admin, 3000, seed=3, cells=cells, days=90)
        first_use, instance_hosts = _host_use(admin, cells)
    key = b'synth-hosts-key-0123456789abcdef'
    key_file = tmp_path / 'key'
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    summary = run_hosts(job_args(
        mariadb, password_file, cells, tmp_path / 'hosts', '--formats',
        'csv', '--mask-key-file', str(key_file), '--epoch',
        '2015-09-01T00:00:00Z'))
    _, rows = read_csv(tmp_path / 'hosts')
    events = {}
    for time, _, host, _, event, *_ in rows:
        events.setdefault(host, []).append((time, event))
    assert len(instance_hosts) == 16     # 8 a live cell
    assert set(first_use) == instance_hosts
    for host, first in first_use.items():
        history = events[_mask(key, host)]
        created = sorted(time for time, event in history if event == CREATE)
        assert created and created[0] < first.isoformat() + 'Z', host
        assert len(created) - [e for _, e in history].count(DELETE) == 1
    # disabled, re-enabled, resized, replaced, retired and archived too
    kinds = {event for host in events.values() for _, event in host}
    assert kinds == {CREATE, DELETE, DISABLE}
    nodes = summary.tables['compute_nodes']
    assert nodes.left_out == {}
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(' UNION ALL '.join(
            f'SELECT COUNT(*) FROM `{db}`.`shadow_compute_nodes`'
            for db in cells))
        assert sum(n for n, in cursor) > 0
    for table in summary.tables.values():
        assert table.balanced


def test_verify_checks_a_host_table_for_raw_hosts(
        mariadb, nova_db, password_file, tmp_path, capsys):
    cells = [nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        _first_state(admin, *cells)
    key = tmp_path / 'key'
    key.write_bytes(b'host-table-key-0123456789abcdef!')
    key.chmod(0o600)
    for name, extra in (('masked', ['--mask-key-file', str(key)]),
                        ('raw', ['--mask-method', 'none'])):
        run_hosts(job_args(mariadb, password_file, cells, tmp_path / name,
                           '--formats', 'csv,avro', *extra))
    # the source options: job_args without its --output
    source = job_args(mariadb, password_file, cells, 'unused')[:-2]
    assert cli.main(['verify', str(tmp_path / 'masked'), *source,
                     '--mask-key-file', str(key)]) == 0
    assert 'no raw identity and no key found' in capsys.readouterr().out
    assert cli.main(['verify', str(tmp_path / 'raw'), *source]) == 1
    # each of the 9 rows of FIRST_STATE_EVENTS holds one raw host, in
    # both files
    assert capsys.readouterr().err.strip() == \
        'starcompactor: error: 18 leaks in 2 files'
