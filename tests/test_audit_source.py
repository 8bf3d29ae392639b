"""Traces from audit-table exports (``--audit-dir``): the rows as of the cut,
through the same graph as every source.

One synthetic cloud, written both into MariaDB and as audit exports (as
MySQL triggers and a back-fill record it), gives the same trace from either;
small hand-written exports pin down the as-of rule: back-filled history,
repeated UPDATEs, DELETEs from soft-deletes and archiving, duplicates,
broken snapshots, several sites, missing tables.
"""
import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import READER, drop_databases, grant_reader
from helpers import job_args, read_csv, run_job, write_key_file
from starcompactor import synth
from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources import nova_source
from starcompactor.pipeline.sources.audit import AuditSource
from starcompactor.pipeline.sources.mysql import NovaMySQLSource
from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
from starcompactor.pipeline.times import UTC
from starcompactor.transforms.schema import HOST_SOURCE_TABLES

CUT = dt.datetime(2025, 1, 1, tzinfo=UTC)
FILES = {
    'instances': 'openstack_audit.audit_nova_instances.parquet',
    'actions': 'openstack_audit.audit_nova_instance_actions.parquet',
    'events': 'openstack_audit.audit_nova_instance_actions_events.parquet',
}
U1 = '11111111-1111-4111-8111-111111111111'
U2 = '22222222-2222-4222-8222-222222222222'
BUILD = 'compute__do_build_and_run_instance'


# -- hand-written exports ----------------------------------------------------

def _times(values):
    """Datetimes as a Parquet timestamp column, text as text."""
    if any(isinstance(v, str) for v in values):
        return pa.array(values, pa.string())
    return pa.array(values, pa.timestamp('us'))


def write_table(folder, table, rows):
    """One audit table's export: ``rows`` of (audit_id, id, type, event
    time, changed at, data), ``data`` a dict (written as JSON) or text."""
    folder.mkdir(parents=True, exist_ok=True)
    audit_ids, ids, kinds, times, changed, data = zip(*rows) if rows \
        else ((),) * 6
    pq.write_table(pa.table({
        'audit_id': pa.array(audit_ids, pa.int64()),
        'id': pa.array(ids, pa.string()),
        'audit_event_type': pa.array(kinds, pa.string()),
        'audit_event_time': _times(list(times)),
        'audit_changed_by': pa.array(['nova@10.0.0.1'] * len(rows),
                                     pa.string()),
        'audit_changed_at': _times(list(changed)),
        'data': pa.array([d if isinstance(d, str) else json.dumps(d)
                          for d in data], pa.string()),
    }), folder / FILES[table])


def write_exports(folder, instances, actions, events):
    for table, rows in (('instances', instances), ('actions', actions),
                        ('events', events)):
        write_table(folder, table, rows)
    return str(folder)


def T(day, second=0):
    """A time on day ``day`` of January 2020."""
    return dt.datetime(2020, 1, day, 0, 0, second)


def instance(host=None, memory_mb=2048, root_gb=20, vcpus=2, id=7, uuid=U1,
             user='alice', name='vm-1'):
    return {'id': id, 'uuid': uuid, 'user_id': user, 'project_id': 'proj-a',
            'hostname': name, 'host': host, 'memory_mb': memory_mb,
            'root_gb': root_gb, 'vcpus': vcpus, 'task_state': None}


def action(id=3, uuid=U1):
    return {'id': id, 'instance_uuid': uuid, 'action': 'create'}


def event(id=5, action_id=3, name=BUILD, start='2020-01-01 00:00:10',
          finish='2020-01-01 00:00:40.000000', result='Success'):
    return {'id': id, 'action_id': action_id, 'event': name,
            'start_time': start, 'finish_time': finish, 'result': result}


def trace(folders, tmp_path, name='trace', *extra, now=CUT):
    """The summary and CSV rows of a trace of ``folders``, unmasked."""
    out = tmp_path / name
    args = [a for folder in folders for a in ('--audit-dir', folder)]
    summary = run_job([*args, '--output', str(out), '--formats', 'csv',
                       '--mask-method', 'none', *extra], now=now)
    for table in ('instances', 'actions', 'events'):
        assert summary.tables[table].balanced, table
    return summary, read_csv(out)[1]


def counts(summary):
    return {table: (count.read, count.in_trace, summary.rejects(table))
            for table, count in summary.tables.items()}


# -- the generated cloud: exports and database give one trace -----------------

SYNTH = dict(seed=21, start='2024-01-01', days=120, archive_fraction=0.5,
             cells=[f'auditsrc{os.getpid()}_cell0',
                    f'auditsrc{os.getpid()}_cell1'])
INSTANCES = 400


@pytest.fixture
def synthetic_exports(tmp_path):
    """A synthetic two-cell cloud as audit exports: a folder per cell."""
    synth.write_audit(tmp_path / 'audit', INSTANCES, **SYNTH)
    return [str(tmp_path / 'audit' / cell) for cell in SYNTH['cells']]


@pytest.fixture
def synthetic_cloud(mariadb, synthetic_exports):
    """The same cloud loaded into MariaDB too: (cell databases, export
    folders)."""
    cells = SYNTH['cells']
    try:
        with mariadb.admin() as admin:
            synth.load_mysql(admin, INSTANCES, **SYNTH)
            with admin.cursor() as cursor:
                for cell in cells:
                    grant_reader(cursor, cell)
        yield cells, synthetic_exports
    finally:
        drop_databases(mariadb, cells)


@pytest.mark.parametrize('instance_type', ['vm', 'baremetal'])
def test_trace_from_exports_equals_trace_from_database(
        mariadb, password_file, synthetic_cloud, tmp_path, instance_type):
    """Also as bare metal: the host is then each instance's node, which
    the exports' instance snapshots hold."""
    cells, folders = synthetic_cloud
    key = write_key_file(tmp_path / 'key', b'audit-source-test-key-0123456789')
    kind = ['--instance-type', instance_type]
    from_db = tmp_path / 'db'
    db_summary = run_job(job_args(mariadb, password_file, cells, from_db,
                                  '--formats', 'csv', '--mask-key-file', key,
                                  *kind))
    from_exports = tmp_path / 'exports'
    exports_summary = run_job([
        '--audit-dir', folders[0], '--audit-dir', folders[1],
        '--output', str(from_exports), '--formats', 'csv',
        '--mask-key-file', key, *kind])
    assert exports_summary.linked == db_summary.linked
    if instance_type == 'baremetal':
        # every instance is bare metal; those never scheduled have no node
        assert db_summary.linked['baremetal_instances'] == INSTANCES
        assert 0 < db_summary.linked['baremetal_instances_node_unknown'] < 50

    _, db_rows = read_csv(from_db)
    _, export_rows = read_csv(from_exports)
    assert len(db_rows) > 1000
    assert export_rows == db_rows
    assert counts(exports_summary) == counts(db_summary)
    for table in ('instances', 'actions', 'events'):
        assert exports_summary.tables[table].balanced, table

    # The leak check looks for every raw identity of the database, and
    # for the hosts instances left too (in earlier snapshots).
    server = MySQLConnection(mariadb.host, mariadb.port, READER,
                             password_file)
    in_exports = AuditSource(folders).raw_identities()
    in_database = NovaMySQLSource(server, cells).raw_identities()
    assert in_exports >= in_database
    assert all(value.startswith('compute-')
               for value in in_exports - in_database)


def test_generated_exports_hold_what_the_as_of_rule_is_for(
        synthetic_exports):
    """The exports the equality above rests on have back-filled rows,
    several snapshots per instance, instances placed after their INSERT,
    DELETEs of soft-deleted and of archived rows."""
    cell1 = synthetic_exports[1]
    instances = pq.read_table(os.path.join(cell1, FILES['instances']))
    events = pq.read_table(os.path.join(cell1, FILES['events']))
    for table in (instances, events):
        ids = table.column('audit_id').to_pylist()
        assert ids == list(range(1, len(ids) + 1))
        changed = table.column('audit_changed_at').to_pylist()
        assert changed == sorted(changed)
    rows = instances.to_pylist()
    back_filled = [r for r in rows
                   if r['audit_changed_at'] > r['audit_event_time']]
    assert any(r['audit_event_type'] == 'INSERT' for r in back_filled)
    assert any(r['audit_event_type'] == 'DELETE' for r in back_filled)
    per_id = {}
    for r in rows:
        per_id.setdefault(r['id'], []).append(r)
    assert max(len(snapshots) for snapshots in per_id.values()) >= 5
    inserted_unplaced = [
        snapshots for snapshots in per_id.values()
        if json.loads(snapshots[0]['data'])['host'] is None
        and snapshots[0]['audit_changed_by'] != 'root@localhost'
        and any(json.loads(s['data'])['host'] for s in snapshots)]
    assert inserted_unplaced
    # soft-deletes (by Nova) and archiving (by nova-manage) of instances
    deleters = {r['audit_changed_by'] for r in rows
                if r['audit_event_type'] == 'DELETE'}
    assert len(deleters) == 3    # Nova, nova-manage, the back-fill
    archived_events = pc.sum(pc.equal(events.column('audit_event_type'),
                                      'DELETE')).as_py()
    assert archived_events > 100


def test_synth_cli_writes_audit_exports(tmp_path, capsys):
    out = tmp_path / 'exports'
    assert cli.main(['synth', '--instances', '50', '--days', '20', '--cells',
                     'c0,c1', '--audit-dir', str(out)]) == 0
    assert 'synth: wrote 50 instances' in capsys.readouterr().out
    for cell in ('c0', 'c1'):
        assert sorted(os.listdir(out / cell)) == sorted(FILES.values())
    assert cli.main(['synth', '--instances', '5', '--audit-dir',
                     str(tmp_path / 'no' / 'such')]) == 1
    assert 'no such directory' in capsys.readouterr().err


# -- the as-of rule, by hand --------------------------------------------------

def test_back_filled_rows_are_dated_by_their_event_time(tmp_path):
    back_fill = dt.datetime(2030, 6, 1)   # after the cut
    folder = write_exports(
        tmp_path / 'site',
        instances=[
            (1, '7', 'INSERT', T(1), back_fill, instance(host='cmp-1')),
            # a change after the cut is not the row as of the cut
            (2, '7', 'UPDATE', dt.datetime(2026, 1, 1),
             dt.datetime(2026, 1, 1), instance(host='cmp-9', vcpus=64))],
        actions=[(1, '3', 'INSERT', T(1), back_fill, action())],
        events=[
            (1, '5', 'INSERT', T(1, 10), back_fill, event()),
            (2, '6', 'INSERT', dt.datetime(2024, 12, 31),
             dt.datetime(2024, 12, 31),
             event(id=6, name='compute_reboot_instance',
                   start='2024-12-31 00:00:00', finish=None, result=None)),
            # it finished after the cut: still running at it
            (3, '6', 'UPDATE', dt.datetime(2025, 1, 2),
             dt.datetime(2025, 1, 2),
             event(id=6, name='compute_reboot_instance',
                   start='2024-12-31 00:00:00',
                   finish='2025-01-02 00:00:00'))])
    summary, rows = trace([folder], tmp_path)
    assert rows == [(U1, BUILD, '2020-01-01T00:00:10Z', '0',
                     '2020-01-01T00:00:40Z', '30', '30', 'Success', '2048',
                     '20', '2', 'vm-1', 'alice', 'proj-a', 'cmp-1')]
    assert counts(summary)['events'] == (2, 1, {'unfinished': 1})

    # As of a cut before the back-fill's own time, the rows are there.
    summary, rows = trace([folder], tmp_path, 'later',
                          now=dt.datetime(2026, 2, 1, tzinfo=UTC))
    assert sorted((r[1], r[10], r[14]) for r in rows) == [
        (BUILD, '64', 'cmp-9'), ('compute_reboot_instance', '64', 'cmp-9')]


def test_the_latest_update_wins_and_ties_go_to_the_higher_audit_id(tmp_path):
    folder = write_exports(
        tmp_path / 'site',
        instances=[
            # in the file out of order: the order is the times' and ids'
            (11, '7', 'UPDATE', T(3), T(3),
             instance(host='cmp-3', memory_mb=8192, root_gb=80, vcpus=8)),
            (1, '7', 'INSERT', T(1), T(1), instance(memory_mb=512,
                                                    root_gb=1, vcpus=1)),
            (2, '7', 'UPDATE', T(2), T(2), instance(host='cmp-1')),
            (10, '7', 'UPDATE', T(3), T(3),
             instance(host='cmp-2', memory_mb=4096, root_gb=40, vcpus=4))],
        actions=[(1, '3', 'INSERT', T(1), T(1), action())],
        events=[
            (2, '5', 'UPDATE', T(1, 40), T(1, 40), event()),
            (1, '5', 'INSERT', T(1, 10), T(1, 10),
             event(finish=None, result=None))])
    summary, rows = trace([folder], tmp_path)
    assert rows == [(U1, BUILD, '2020-01-01T00:00:10Z', '0',
                     '2020-01-01T00:00:40Z', '30', '30', 'Success', '8192',
                     '80', '8', 'vm-1', 'alice', 'proj-a', 'cmp-3')]
    assert counts(summary) == {'instances': (1, 1, {}),
                               'actions': (1, 1, {}),
                               'events': (1, 1, {})}


def test_deleted_rows_stay_in_the_history(tmp_path):
    deleted = instance(host=None, memory_mb=1, root_gb=1, vcpus=1)
    folder = write_exports(
        tmp_path / 'site',
        instances=[
            (1, '7', 'INSERT', T(1), T(1), instance()),
            (2, '7', 'UPDATE', T(1, 40), T(1, 40), instance(host='cmp-1')),
            # the soft-delete, then the archiving: they end its changes
            (3, '7', 'DELETE', T(2), T(2), deleted),
            (9, '7', 'DELETE', T(5), T(5), deleted)],
        actions=[
            (1, '3', 'INSERT', T(1), T(1), action()),
            (2, '4', 'INSERT', T(2), T(2), action(id=4)),
            (5, '3', 'DELETE', T(5), T(5), action()),
            (6, '4', 'DELETE', T(5), T(5), action(id=4))],
        events=[
            (1, '5', 'INSERT', T(1, 10), T(1, 10),
             event(finish=None, result=None)),
            (2, '5', 'UPDATE', T(1, 40), T(1, 40), event()),
            (7, '5', 'DELETE', T(5), T(5), event()),
            # made before the triggers, never back-filled: known only
            # from its archiving
            (8, '6', 'DELETE', T(5), T(5),
             event(id=6, action_id=4, name='compute_terminate_instance',
                   start='2020-01-02 00:00:00',
                   finish='2020-01-02 00:00:05'))])
    summary, rows = trace([folder], tmp_path)
    assert rows == [
        (U1, BUILD, '2020-01-01T00:00:10Z', '0', '2020-01-01T00:00:40Z',
         '30', '30', 'Success', '2048', '20', '2', 'vm-1', 'alice', 'proj-a',
         'cmp-1'),
        (U1, 'compute_terminate_instance', '2020-01-02T00:00:00Z', '86390',
         '2020-01-02T00:00:05Z', '86395', '5', 'Success', '2048', '20', '2',
         'vm-1', 'alice', 'proj-a', 'cmp-1')]
    assert counts(summary) == {'instances': (1, 1, {}),
                               'actions': (2, 2, {}),
                               'events': (2, 2, {})}


def test_duplicate_events_are_read_once(tmp_path):
    unfinished = event(finish=None, result=None)
    folder = write_exports(
        tmp_path / 'site',
        instances=[(1, '7', 'INSERT', T(1), T(1), instance(host='cmp-1'))],
        actions=[(1, '3', 'INSERT', T(1), T(1), action()),
                 (2, '3', 'INSERT', T(1), T(1), action())],
        events=[(1, '5', 'INSERT', T(1, 10), T(1, 10), unfinished),
                (2, '5', 'INSERT', T(1, 10), T(1, 10), unfinished),
                (3, '5', 'UPDATE', T(1, 40), T(1, 40), event()),
                (4, '5', 'UPDATE', T(1, 40), T(1, 40), event())])
    summary, rows = trace([folder], tmp_path)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (U1, BUILD, '2020-01-01T00:00:10Z')]
    assert counts(summary) == {'instances': (1, 1, {}),
                               'actions': (1, 1, {}),
                               'events': (1, 1, {})}


def test_broken_snapshots_are_counted_rejects(tmp_path):
    folder = write_exports(
        tmp_path / 'site',
        instances=[
            (1, '7', 'INSERT', '2020-01-01 00:00:00', '2020-01-01 00:00:00',
             instance(host='cmp-1')),
            # a size that is no number: this snapshot is broken, not the row
            (2, '7', 'UPDATE', '2020-01-01 00:01:00', '2020-01-01 00:01:00',
             json.dumps(instance(host='cmp-2')).replace('2048', '"lots"'))],
        actions=[(1, '3', 'INSERT', '2020-01-01T00:00:00Z',
                  '2020-01-01T00:00:00Z', action())],
        events=[
            (1, '5', 'INSERT', '2020-01-01 00:00:10', '2020-01-01 00:00:10',
             event()),
            (2, '6', 'INSERT', '2020-01-01 00:00:10', '2020-01-01 00:00:10',
             event(id=6, name='compute_x', finish=None, result=None)),
            (3, '6', 'UPDATE', '2020-01-01 00:00:50', '2020-01-01 00:00:50',
             '{"id": 6, "finish_time": "2020-01-01 00:0'),
            (4, '8', 'INSERT', '2020-01-01 00:00:10', '2020-01-01 00:00:10',
             event(id=7, name='compute_y')),
            (5, '9', 'INSERT', 'yesterday', '2020-01-01 00:00:10',
             event(id=9, name='compute_z')),
            (6, '10', 'UPSERT', '2020-01-01 00:00:10', '2020-01-01 00:00:10',
             event(id=10, name='compute_w')),
            (7, '11', 'INSERT', '2020-01-01 00:00:10', '2020-01-01 00:00:10',
             'not json at all')])
    summary, rows = trace([folder], tmp_path)
    assert [(r[1], r[14], r[8]) for r in rows] == [(BUILD, 'cmp-1', '2048')]
    # Every audit row is accounted for: the rows of ids 5 and 6 (read once
    # each, whatever their snapshots), and each broken snapshot.
    assert counts(summary) == {
        'instances': (2, 1, {'bad_json': 1}),
        'actions': (1, 1, {}),
        'events': (7, 1, {'unfinished': 1, 'bad_json': 2, 'id_mismatch': 1,
                          'bad_time': 1, 'bad_event_type': 1})}


def test_sites_keep_their_colliding_ids_apart(tmp_path):
    """Two Nova databases both count from 1."""
    def site(name, uuid, host, start):
        return write_exports(
            tmp_path / name,
            instances=[(1, '1', 'INSERT', T(1), T(1),
                        instance(id=1, uuid=uuid, host=host))],
            actions=[(1, '1', 'INSERT', T(1), T(1), action(id=1, uuid=uuid))],
            events=[(1, '1', 'INSERT', T(1), T(1),
                     event(id=1, action_id=1, start=start,
                           finish=start[:-2] + '59'))])
    a = site('site-a', U1, 'cmp-a', '2020-01-01 00:00:00')
    b = site('site-b', U2, 'cmp-b', '2020-01-01 00:10:00')
    summary, rows = trace([a, b], tmp_path)
    assert [(r[0], r[2], r[14]) for r in rows] == [
        (U1, '2020-01-01T00:00:00Z', 'cmp-a'),
        (U2, '2020-01-01T00:10:00Z', 'cmp-b')]
    assert counts(summary)['events'] == (2, 2, {})

    # --start and --end choose events by their start, as of the cut
    summary, rows = trace([a, b], tmp_path, 'window', '--start',
                          '2020-01-01T00:05:00Z', '--end', '2020-01-02')
    assert [r[0] for r in rows] == [U2]
    assert counts(summary)['events'] == (1, 1, {})


def test_dated_copies_in_sub_folders_are_not_read(tmp_path):
    folder = write_exports(
        tmp_path / 'site',
        instances=[(1, '7', 'INSERT', T(1), T(1), instance(host='cmp-1'))],
        actions=[(1, '3', 'INSERT', T(1), T(1), action())],
        events=[(1, '5', 'INSERT', T(1, 10), T(1, 10), event())])
    write_exports(
        tmp_path / 'site' / '2019-12-31',
        instances=[(1, '7', 'INSERT', T(1), T(1), instance(host='old'))],
        actions=[(1, '3', 'INSERT', T(1), T(1), action())],
        events=[(1, '5', 'INSERT', T(1, 10), T(1, 10), event()),
                (2, '6', 'INSERT', T(1, 10), T(1, 10), event(id=6))])
    summary, rows = trace([folder], tmp_path)
    assert [(r[1], r[14]) for r in rows] == [(BUILD, 'cmp-1')]
    assert counts(summary)['events'] == (1, 1, {})


def test_a_missing_audit_table_is_one_line_naming_it(tmp_path, capsys):
    folder = tmp_path / 'site'
    write_table(folder, 'instances', [])
    write_table(folder, 'actions', [])
    # a dated copy of the missing table does not stand in for it
    write_table(folder / '2024-05-01', 'events', [])
    out = tmp_path / 'out' / 'trace'
    status = cli.main(['instances', '--audit-dir', str(folder), '--output',
                       str(out)])
    assert status == 1
    err = capsys.readouterr().err
    assert err == (f'starcompactor: error: {folder}/openstack_audit.audit_'
                   f'nova_instance_actions_events.parquet: missing audit '
                   f'table openstack_audit.audit_nova_instance_actions_'
                   f'events\n')
    assert not (tmp_path / 'out').exists()

    status = cli.main(['instances', '--audit-dir', str(tmp_path / 'nope'),
                       '--output', str(out)])
    assert status == 1
    assert capsys.readouterr().err == (
        f'starcompactor: error: {tmp_path / "nope"}: no such folder of '
        f'audit exports\n')


def test_what_does_not_go_with_audit_exports_is_refused(tmp_path):
    def source(*args, tables=None):
        options = PipelineOptions(['--audit-dir', str(tmp_path), *args])
        return nova_source(options, tables) if tables else \
            nova_source(options)

    for args, message in (
            (('--dump', 'x.sql'), 'drop --api, --dump and --databases'),
            (('--databases', 'nova'), 'drop --api, --dump and --databases'),
            (('--no-archived',), '--no-archived cannot apply')):
        with pytest.raises(UserError, match=message):
            source(*args)
    with pytest.raises(UserError, match='instances, actions and events only'):
        source(tables=HOST_SOURCE_TABLES)
    with pytest.raises(UserError, match='given twice'):
        AuditSource([str(tmp_path), str(tmp_path) + '/']).plan()


def test_about_says_what_is_read():
    assert AuditSource(['exports/cell1']).about() == (
        'audit exports, folder exports/cell1 (live and shadow_ tables)')
    assert AuditSource(['a', 'b'], window=('2024-01-01 00:00:00',
                                           None)).about() == (
        'audit exports, folders a, b (live and shadow_ tables), events from '
        '2024-01-01 00:00:00')
