"""``starcompactor trace``: both tables in one run under one key, against
real MariaDB (two cells, Nova's real schema), and the report's host
capacity plot. Expected rows, seconds, counts and capacities are written
out by hand from the fixture below; masks are computed with the standard
library.

The fixture: hosts r01-c01, r01-c02 (disabled on 2024-01-05) in cell1;
r02-c01 in cell2, its first node (archived) replaced on 2024-01-03.
Instances A (r01-c01), B (r09-c01: a host without any compute node row),
C (r01-c02) in cell1; D (r02-c01) and E (never placed, no host) in cell2.
The earliest instance event starts 2024-01-02 06:00:00: the epoch.
"""
import csv
import hashlib
import hmac
import json
import random

import pytest

from helpers import (
    dump_state, insert, job_args, node_row, ran_job, read_csv, run_job,
    service_row, write_key_file)
from starcompactor.pipeline import cli
from starcompactor.pipeline.hosts import HostsJob
from starcompactor.pipeline.trace import TraceJob
from starcompactor.report import capacity, write_report
from starcompactor.transforms.schema import HOST_TRACE, INSTANCE_TRACE

UUID = {name: f'{name * 8}-0000-4000-8000-00000000000{i}'.lower()
        for i, name in enumerate('ABCDE', start=1)}
RACKS = ['--rack-regex', r'^(r\d+)-']


def _instance(id_, name, host):
    return dict(id=id_, uuid=UUID[name], user_id=f'user-{name}',
                project_id='proj-1', hostname=f'vm-{name}', host=host,
                memory_mb=2048, root_gb=20, vcpus=2, deleted=0)


def _event(id_, action_id, event, start, finish, result='Success'):
    return dict(id=id_, action_id=action_id, event=event, start_time=start,
                finish_time=finish, result=result)


def load_fixture(admin, cell1, cell2):
    insert(admin, cell1, 'compute_nodes', [
        node_row(1, 'r01-c01', '2024-01-01 00:00:00', (32, 128000, 1000),
                 updated='2024-01-09 00:00:00'),
        node_row(2, 'r01-c02', '2024-01-02 00:00:00', (16, 64000, 500),
                 updated='2024-01-09 00:00:00')])
    insert(admin, cell1, 'services', [
        service_row(1, 'r01-c01', '2024-01-01 00:00:00'),
        service_row(2, 'r01-c02', '2024-01-05 00:00:00', disabled=1,
                    reason='fan'),
        service_row(3, 'ctl1', '2024-01-01 00:00:00',
                    binary='nova-conductor')])
    insert(admin, cell2, 'shadow_compute_nodes', [
        node_row(1, 'r02-c01', '2023-12-01 00:00:00', (8, 32000, 200),
                 updated='2024-01-03 00:00:00',
                 deleted_at='2024-01-03 00:00:00')])
    insert(admin, cell2, 'compute_nodes', [
        node_row(2, 'r02-c01', '2024-01-03 00:00:00', (16, 64000, 400),
                 updated='2024-01-03 00:00:00')])
    insert(admin, cell2, 'services', [
        service_row(1, 'r02-c01', '2024-01-03 00:00:00')])

    insert(admin, cell1, 'instances', [
        _instance(1, 'A', 'r01-c01'), _instance(2, 'B', 'r09-c01'),
        _instance(3, 'C', 'r01-c02')])
    insert(admin, cell1, 'instance_actions', [
        dict(id=1, action='create', instance_uuid=UUID['A']),
        dict(id=2, action='create', instance_uuid=UUID['B']),
        dict(id=3, action='reboot', instance_uuid=UUID['B']),
        dict(id=4, action='create', instance_uuid=UUID['C'])])
    insert(admin, cell1, 'instance_actions_events', [
        _event(1, 1, 'conductor_schedule_and_build_instances',
               '2024-01-02 06:00:00', '2024-01-02 06:00:02'),
        _event(2, 1, 'compute__do_build_and_run_instance',
               '2024-01-02 06:00:03', '2024-01-02 06:00:33'),
        _event(3, 2, 'compute__do_build_and_run_instance',
               '2024-01-04 12:00:00', '2024-01-04 12:00:40'),
        _event(4, 3, 'compute_reboot_instance',
               '2024-01-06 00:00:00', '2024-01-06 00:00:30'),
        _event(5, 4, 'compute__do_build_and_run_instance',
               '2024-01-03 08:00:00', '2024-01-03 08:01:00')])
    insert(admin, cell2, 'instances', [
        _instance(1, 'D', 'r02-c01'), _instance(2, 'E', None)])
    insert(admin, cell2, 'instance_actions', [
        dict(id=1, action='create', instance_uuid=UUID['D']),
        dict(id=2, action='create', instance_uuid=UUID['E'])])
    insert(admin, cell2, 'instance_actions_events', [
        _event(1, 1, 'compute__do_build_and_run_instance',
               '2024-01-04 00:00:00', '2024-01-04 00:00:20'),
        _event(2, 2, 'conductor_schedule_and_build_instances',
               '2024-01-02 07:00:00', '2024-01-02 07:00:01', 'Error')])


EPOCH = '2024-01-02T06:00:00Z'
HOURS = 3600
# The host table, seconds from EPOCH: 2024-01-03 00:00 is 18 h after it,
# 2024-01-05 00:00 two days and 18 h.
HOST_ROWS = sorted([
    ('2023-12-01T00:00:00Z', '-1', 'r02-c01', '1', 'CREATE', '8', '32000',
     '200'),
    ('2024-01-01T00:00:00Z', '-1', 'r01-c01', '0', 'CREATE', '32', '128000',
     '1000'),
    ('2024-01-02T00:00:00Z', '-1', 'r01-c02', '0', 'CREATE', '16', '64000',
     '500'),
    ('2024-01-03T00:00:00Z', str(18 * HOURS), 'r02-c01', '1', 'DELETE', '8',
     '32000', '200'),
    ('2024-01-03T00:00:00Z', str(18 * HOURS), 'r02-c01', '1', 'CREATE', '16',
     '64000', '400'),
    ('2024-01-05T00:00:00Z', str(66 * HOURS), 'r01-c02', '0', 'DISABLE',
     '16', '64000', '500'),
])
INSTANCE_ROWS = {'A': 2, 'B': 2, 'C': 1, 'D': 1, 'E': 1}
INSTANCE_HOSTS = {'A': 'r01-c01', 'B': 'r09-c01', 'C': 'r01-c02',
                  'D': 'r02-c01', 'E': ''}
# Where each host's first CREATE is: how a host is found in the host table
# without knowing its (random) mask.
FIRST_CREATE = {'2023-12-01T00:00:00Z': 'r02-c01',
                '2024-01-01T00:00:00Z': 'r01-c01',
                '2024-01-02T00:00:00Z': 'r01-c02'}


@pytest.fixture
def cells(mariadb, nova_db):
    cells = [nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        load_fixture(admin, *cells)
    return cells


def run_trace(args, now=None):
    """The trace job through Beam's TestPipeline; its summaries."""
    return ran_job(args, TraceJob, now).summaries(0.0)


def _mask(key, value):
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _records(prefix, table):
    """Rows of a table's CSV shards as dicts keyed by field name."""
    headers, rows = read_csv(prefix)
    assert headers == {tuple(table.csv_header)}
    return [dict(zip(table.fields, row)) for row in rows]


def test_host_seconds_count_from_the_instance_epoch(
        mariadb, cells, password_file, tmp_path):
    out = tmp_path / 'trace'
    instances, hosts = run_trace(job_args(
        mariadb, password_file, cells, out, '--mask-method', 'none',
        '--formats', 'csv', *RACKS))
    _, host_rows = read_csv(f'{out}-hosts')
    assert host_rows == HOST_ROWS
    # the instance table counts from the same epoch: its first row is 0
    starts = {(r['instance_uuid'], r['start_time']): r['start_sec']
              for r in _records(f'{out}-instances', INSTANCE_TRACE)}
    assert starts[UUID['A'], '2024-01-02T06:00:00Z'] == '0'
    assert starts[UUID['C'], '2024-01-03T08:00:00Z'] == str(26 * HOURS)
    assert instances.epoch == hosts.epoch == 1704175200   # EPOCH
    assert (instances.trace_rows, hosts.trace_rows) == (7, 6)
    events = hosts.tables['host_events']
    assert (events.read, events.in_trace) == (6, 6)
    assert set(instances.tables) == {'instances', 'actions', 'events'}
    for summary in (instances, hosts):
        assert all(table.balanced for table in summary.tables.values())


def test_a_given_epoch_is_both_tables_epoch(mariadb, cells, password_file,
                                            tmp_path):
    out = tmp_path / 'trace'
    run_trace(job_args(mariadb, password_file, cells, out,
                       '--mask-method', 'none', '--formats', 'csv',
                       '--epoch', '2024-01-01T00:00:00Z'))
    seconds = sorted((r['event_time'], r['event_time_sec'])
                     for r in _records(f'{out}-hosts', HOST_TRACE))
    day = 24 * HOURS
    assert seconds == [
        ('2023-12-01T00:00:00Z', '-1'), ('2024-01-01T00:00:00Z', '0'),
        ('2024-01-02T00:00:00Z', str(day)),
        ('2024-01-03T00:00:00Z', str(2 * day)),
        ('2024-01-03T00:00:00Z', str(2 * day)),
        ('2024-01-05T00:00:00Z', str(4 * day))]
    first = [r for r in _records(f'{out}-instances', INSTANCE_TRACE)
             if r['start_time'] == '2024-01-02T06:00:00Z']
    assert [r['start_sec'] for r in first] == [str(30 * HOURS)]


def test_one_random_key_masks_both_tables_alike(
        mariadb, cells, password_file, tmp_path, monkeypatch):
    monkeypatch.delenv('STARCOMPACTOR_MASK_KEY', raising=False)
    out = tmp_path / 'trace'
    instances, _ = run_trace(job_args(mariadb, password_file, cells, out,
                                      '--formats', 'csv,avro'))
    instance_rows = _records(f'{out}-instances', INSTANCE_TRACE)
    host_rows = _records(f'{out}-hosts', HOST_TRACE)
    host_of = {r['instance_uuid']: r['host_name_physical']
               for r in instance_rows}
    created = {FIRST_CREATE[r['event_time']]: r['host_name_physical']
               for r in host_rows if r['event_time'] in FIRST_CREATE}
    # every host of the instance table is the host table's, masked alike
    for name in 'ACD':
        assert host_of[UUID[name]] == created[INSTANCE_HOSTS[name]]
    assert host_of[UUID['E']] == ''
    assert {r['host_name_physical'] for r in host_rows} == set(
        created.values())
    masks = set(host_of.values()) - {''}
    assert len(masks) == 4
    assert all(len(m) == 32 and int(m, 16) >= 0 for m in masks)
    assert not masks & set(INSTANCE_HOSTS.values())
    # B's host has no compute node: counted, and its rows kept
    assert masks - set(created.values()) == {host_of[UUID['B']]}
    assert instances.linked == {'instance_hosts': 4,
                                'hosts_without_compute_node': 1}
    assert sum(r['instance_uuid'] == UUID['B']
               for r in instance_rows) == INSTANCE_ROWS['B']


def test_two_runs_with_a_supplied_key_match_the_trace_run(
        mariadb, cells, password_file, tmp_path):
    key = b'trace-command-key-0123456789abc!'
    key_file = write_key_file(tmp_path / 'secrets', key)
    common = ['--mask-key-file', key_file, '--formats', 'csv',
              '--epoch', EPOCH, *RACKS]
    run_job(job_args(mariadb, password_file, cells, tmp_path / 'instances',
                     *common[:-2]))
    ran_job(job_args(mariadb, password_file, cells, tmp_path / 'hosts',
                     *common), HostsJob)

    instance_hosts = {r['host_name_physical'] for r in _records(
        tmp_path / 'instances', INSTANCE_TRACE)}
    host_hosts = {r['host_name_physical']
                  for r in _records(tmp_path / 'hosts', HOST_TRACE)}
    assert instance_hosts == {_mask(key, h) for h in INSTANCE_HOSTS.values()
                              if h} | {''}
    assert host_hosts == {_mask(key, h) for h in FIRST_CREATE.values()}
    assert instance_hosts - host_hosts == {_mask(key, 'r09-c01'), ''}

    # the trace run under the same key writes the same two tables
    run_trace(job_args(mariadb, password_file, cells, tmp_path / 'both',
                       *common))
    for table in ('instances', 'hosts'):
        assert read_csv(f'{tmp_path / "both"}-{table}') == \
            read_csv(tmp_path / table)


def test_the_command_writes_two_tables_with_manifests_and_one_summary(
        mariadb, cells, password_file, tmp_path, capsys):
    key = b'trace-command-key-0123456789abc!'
    key_file = write_key_file(tmp_path / 'secrets', key)
    out = tmp_path / 'out' / 'trace'
    assert cli.main(['trace', *job_args(
        mariadb, password_file, cells, out, '--mask-key-file', key_file,
        '--formats', 'csv,jsonl')]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith('starcompactor trace: cut ')
    assert printed[1].startswith(f'instance events ({out}-instances): 7 '
                                 f'trace rows written in ')
    assert '  hosts of instance events 4, without a compute node row 1 ' \
           '(their instance rows are in the trace)' in printed
    assert printed[-2:] == [f'  wrote {out}-instances.manifest.json',
                            f'  wrote {out}-hosts.manifest.json']
    assert sorted(p.name for p in out.parent.iterdir()) == [
        'trace-hosts-00000-of-00001.csv', 'trace-hosts-00000-of-00001.jsonl',
        'trace-hosts.manifest.json', 'trace-instances-00000-of-00001.csv',
        'trace-instances-00000-of-00001.jsonl',
        'trace-instances.manifest.json']
    manifests = {table: json.loads(
        (out.parent / f'trace-{table}.manifest.json').read_text())
        for table in ('instances', 'hosts')}
    links = {'instances': 'trace-instances', 'hosts': 'trace-hosts',
             'instance_hosts': 4, 'hosts_without_compute_node': 1}
    for manifest in manifests.values():
        assert manifest['tables'] == links
        assert manifest['epoch'] == EPOCH
        assert manifest['masking']['key_fingerprint'] == hmac.new(
            key, b'starcompactor key fingerprint v1',
            hashlib.sha256).hexdigest()[:16]
    assert manifests['instances']['trace_rows'] == 7
    assert manifests['hosts']['trace_rows'] == 6
    assert manifests['hosts']['masking']['fields'] == ['host_name_physical']
    assert set(manifests['hosts']['source_rows']) == {
        'compute_nodes', 'services', 'host_events'}
    assert manifests['hosts']['source_rows']['services']['left_out'] == {
        'not_nova_compute': 1}
    # each table holds its own rows, in both formats
    for table, rows in (('instances', 7), ('hosts', 6)):
        assert [s['rows'] for s in manifests[table]['shards']] == [rows, rows]

    # an existing trace is refused, naming the table found
    assert cli.main(['trace', *job_args(
        mariadb, password_file, cells, out, '--mask-key-file',
        key_file)]) == 1
    assert f'a trace already exists at {out}-instances' in \
        capsys.readouterr().err


def test_a_dump_series_reads_instances_from_the_latest_dump(
        mariadb, cells, password_file, tmp_path):
    dumps = tmp_path / 'nightly'
    dumps.mkdir()
    dump_state(mariadb, cells, dumps / 'b.sql', '2024-01-08 00:00:00')
    with mariadb.admin() as admin, admin.cursor() as cursor:
        # re-enabled (updated_at moved); a new event on A
        cursor.execute(f"UPDATE `{cells[0]}`.services SET disabled = 0, "
                       f"updated_at = '2024-01-10 00:00:00' WHERE id = 2")
        insert(admin, cells[0], 'instance_actions_events', [_event(
            6, 1, 'compute_reboot_instance', '2024-01-10 01:00:00',
            '2024-01-10 01:00:05')])
    dump_state(mariadb, cells, dumps / 'a.sql', '2024-01-12 00:00:00')
    common = ['--mask-method', 'none', '--formats', 'csv', *RACKS]
    instances, hosts = run_trace(['--dump', str(dumps), '--output',
                                  str(tmp_path / 'series'), *common])
    run_job(['--dump', str(dumps / 'a.sql'), '--output',
             str(tmp_path / 'latest'), '--epoch', EPOCH, *common[:-2]])
    assert read_csv(f'{tmp_path / "series"}-instances') == \
        read_csv(tmp_path / 'latest')
    assert (instances.tables['events'].read, instances.trace_rows) == (8, 8)
    _, host_rows = read_csv(f'{tmp_path / "series"}-hosts')
    # 2024-01-10 00:00 is 7 days and 18 h after the epoch
    assert host_rows == sorted(HOST_ROWS + [(
        '2024-01-10T00:00:00Z', str(186 * HOURS), 'r01-c02', '0', 'ENABLE',
        '16', '64000', '500')])
    assert hosts.tables['compute_nodes'].read == 2 * 4   # two states


# -- the report's host capacity ----------------------------------------------

# (hosts in service, vCPUs, memory MB, disk GB) from each change on, by
# hand from HOST_ROWS: r02-c01 on 2023-12-01; r01-c01 on 2024-01-01;
# r01-c02 on 2024-01-02; r02-c01 replaced by a larger node on 2024-01-03;
# r01-c02 disabled on 2024-01-05.
CAPACITY_STEPS = [
    ('2023-12-01T00:00:00Z', 1, 8, 32000, 200),
    ('2024-01-01T00:00:00Z', 2, 40, 160000, 1200),
    ('2024-01-02T00:00:00Z', 3, 56, 224000, 1700),
    ('2024-01-03T00:00:00Z', 3, 64, 256000, 1900),
    ('2024-01-05T00:00:00Z', 2, 48, 192000, 1400),
]


def _steps(stats):
    return [(s['time'], s['hosts'], s['vcpus'], s['memory_mb'], s['disk_gb'])
            for s in stats['steps']]


def test_report_plots_host_capacity_of_the_trace(
        mariadb, cells, password_file, tmp_path, capsys):
    out = tmp_path / 'trace'
    run_trace(job_args(mariadb, password_file, cells, out, '--formats',
                       'csv,avro'))
    # the host table beside OUT-instances is found
    assert cli.main(['report', f'{out}-instances']) == 0
    assert f'  host capacity from {out}-hosts: 3 hosts, 6 events' in \
        capsys.readouterr().out
    stats = json.loads((tmp_path / 'trace-instances.report.json')
                       .read_text())['extra']['host_capacity']
    assert _steps(stats) == CAPACITY_STEPS
    assert stats['peak'] == dict(hosts=3, vcpus=64, memory_mb=256000,
                                 disk_gb=1900)
    assert stats['final'] == dict(hosts=2, vcpus=48, memory_mb=192000,
                                  disk_gb=1400)
    assert stats['events_per_kind'] == {'CREATE': 4, 'DELETE': 1,
                                        'DISABLE': 1}
    page = (tmp_path / 'trace-instances.report.html').read_text()
    assert '<h2>Host capacity over time</h2>' in page
    assert page.count('<img src="data:image/png;base64,') == 6
    assert 'alt="Step plots of the total vCPUs' in page   # not "No data"
    # or named with --hosts: the same figures, from another prefix
    html_path = tmp_path / 'named.html'
    assert cli.main(['report', f'{out}-instances', '--hosts', f'{out}-hosts',
                     '--html', str(html_path), '--json',
                     str(tmp_path / 'named.json')]) == 0
    named = json.loads((tmp_path / 'named.json').read_text())
    assert _steps(named['extra']['host_capacity']) == CAPACITY_STEPS


def _replayed_capacity(events):
    """The capacity after each event time, replaying each host's events up
    to that time in the order written, then only the times it changed."""
    steps, previous = [], (0, 0, 0, 0)
    for time in sorted({time for _, time, _, _ in events}):
        total = [0, 0, 0, 0]
        for host in {host for host, *_ in events}:
            created, enabled, size = False, True, (0, 0, 0)
            for _, _, event, capacity in [e for e in events
                                          if e[0] == host and e[1] <= time]:
                if event in ('CREATE', 'UPDATE'):
                    size = capacity
                created = {'CREATE': True, 'DELETE': False}.get(event,
                                                                created)
                enabled = {'ENABLE': True, 'DISABLE': False}.get(event,
                                                                 enabled)
            if created and enabled:
                total = [t + v for t, v in zip(total, (1, *size))]
        if tuple(total) != previous:
            steps.append((time, *total))
            previous = tuple(total)
    return steps


def test_capacity_steps_of_every_kind_of_event(tmp_path):
    """A hand-written host table with all five events, a same-second
    replacement, an UPDATE and a DELETE while disabled, a host created
    again and empty capacities: the steps equal a replay of each host."""
    events = [   # (host, time, event, capacity), each host in time order
        ('h1', 100, 'CREATE', (8, 1000, 10)),
        ('h1', 200, 'DISABLE', (8, 1000, 10)),
        ('h1', 250, 'UPDATE', (16, 2000, 10)),     # while disabled
        ('h1', 300, 'ENABLE', (16, 2000, 10)),
        ('h1', 400, 'DELETE', (16, 2000, 10)),     # replaced, same second
        ('h1', 400, 'CREATE', (32, 4000, 20)),
        ('h2', 150, 'DISABLE', (0, 0, 0)),         # before its node exists
        ('h2', 200, 'CREATE', (4, 500, 0)),
        ('h2', 300, 'ENABLE', (4, 500, 0)),
        ('h2', 500, 'DELETE', (4, 500, 0)),
        ('h2', 600, 'CREATE', (4, 500, 0)),        # created again
        ('h3', 400, 'CREATE', (2, 100, 1)),
        ('h3', 450, 'DISABLE', (2, 100, 1)),
        ('h3', 460, 'DELETE', (2, 100, 1)),        # deleted while disabled
    ]
    expected = _replayed_capacity(events)
    assert expected[0] == (100, 1, 8, 1000, 10)
    assert expected[-1] == (600, 2, 36, 4500, 20)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    times, values = capacity.capacity_steps(shuffled)
    assert [(int(t), *map(int, v)) for t, v in zip(times, values)] == expected

    # the same through a host table's CSV, as the report reads it
    prefix = tmp_path / 'hosts'
    with open(f'{prefix}-00000-of-00001.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(HOST_TRACE.csv_header)
        for host, time, event, (vcpus, memory, disk) in shuffled:
            writer.writerow([f'1970-01-01T00:{time // 60:02d}:'
                             f'{time % 60:02d}Z', time, host, '', event,
                             vcpus or '', memory or '', disk or ''])
    stats, _ = capacity.capacity_stats(str(prefix))
    assert [(int(s['time'][14:16]) * 60 + int(s['time'][17:19]),
             s['hosts'], s['vcpus'], s['memory_mb'], s['disk_gb'])
            for s in stats['steps']] == expected
    assert stats['hosts'] == 3 and stats['events'] == len(events)


def test_a_report_of_an_empty_host_table_says_no_data(tmp_path):
    prefix = tmp_path / 'hosts'
    with open(f'{prefix}-00000-of-00001.csv', 'w') as f:
        f.write(','.join(HOST_TRACE.csv_header) + '\n')
    trace = tmp_path / 'trace'
    with open(f'{trace}-00000-of-00001.csv', 'w') as f:
        f.write(','.join(INSTANCE_TRACE.csv_header) + '\n')
    stats = write_report(str(trace), extra_sections=[
        capacity.section(str(prefix))])
    assert stats['extra']['host_capacity']['steps'] == []
    page = (tmp_path / 'trace.report.html').read_text()
    assert 'alt="No data. Step plots of the total vCPUs' in page
