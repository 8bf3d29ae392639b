"""``starcompactor report``: statistics checked against hand-counted values."""
import collections
import json
import os
import re
import subprocess
import sys

import pytest
from fastavro import parse_schema
from fastavro.write import Writer

from helpers import job_args, read_csv, write_key_file
from starcompactor.pipeline import cli, shards
from starcompactor.pipeline.errors import UserError
from starcompactor.report import aggregate, capacity, read, write_report
from starcompactor.transforms.schema import AVRO_SCHEMA, CSV_HEADER
import test_baremetal as bm
from test_baremetal import service_db  # noqa: F401 (a fixture)
from test_trace_command import CAPACITY_STEPS, _steps, run_trace
from test_trace_command import cells  # noqa: F401 (a fixture)

BUILD = 'compute__do_build_and_run_instance'
SCHED = 'conductor_schedule_and_build_instances'
REBOOT = 'compute_reboot_instance'
TERM = 'compute_terminate_instance'
A, B, C, D = ('aaaaaaaa-0000-0000-0000-00000000000a',
              'bbbbbbbb-0000-0000-0000-00000000000b',
              'cccccccc-0000-0000-0000-00000000000c',
              'dddddddd-0000-0000-0000-00000000000d')
# instance -> (memory_mb, disk_gb, vcpus, name, user, project, host)
INSTANCES = {
    A: (4096, 40, 2, 'na', 'u1', 'p1', 'h1'),
    B: (4096, 40, 2, 'nb', 'u2', 'p1', 'h2'),
    C: (16384, 80, 8, 'nc', 'u1', 'p2', ''),     # never placed: host ''
    D: (512, 1, 1, None, 'u3', 'p2', 'h1'),
}
EPOCH = 1704067200   # 2024-01-01T00:00:00Z
# (instance, event, start, finish, result); 10 rows, two shards.
SHARD0 = [
    (A, SCHED, '2024-01-01T00:00:00Z', '2024-01-01T00:00:02Z', 'Success'),
    (A, BUILD, '2024-01-01T00:00:03Z', '2024-01-01T00:00:33Z', 'Success'),
    (B, SCHED, '2024-01-01T12:00:00Z', '2024-01-01T12:00:01Z', 'Success'),
    (B, BUILD, '2024-01-01T12:00:01Z', '2024-01-01T12:00:01Z', 'Error'),
    (C, SCHED, '2024-01-02T00:00:00Z', '2024-01-02T00:00:01Z', 'Success'),
]
SHARD1 = [
    (A, REBOOT, '2024-01-02T10:00:00Z', '2024-01-02T10:00:10Z', 'Success'),
    (A, TERM, '2024-01-03T00:00:00Z', '2024-01-03T00:00:05Z', 'Success'),
    (B, TERM, '2024-01-01T13:00:00Z', '2024-01-01T13:00:00Z', 'Success'),
    (C, BUILD, '2024-01-02T00:00:01Z', '2024-01-02T00:00:40Z', 'Error'),
    (D, SCHED, '2024-01-03T06:00:00Z', '2024-01-03T06:00:03Z', 'Success'),
]


def _sec(iso):
    import datetime as dt
    return int(dt.datetime.strptime(iso, '%Y-%m-%dT%H:%M:%SZ').replace(
        tzinfo=dt.timezone.utc).timestamp()) - EPOCH


def record(uuid, event, start, finish, result):
    memory, disk, vcpus, name, user, project, host = INSTANCES[uuid]
    return {'instance_uuid': uuid, 'event': event,
            'start_time': start, 'start_sec': _sec(start),
            'finish_time': finish, 'finish_sec': _sec(finish),
            'event_duration': _sec(finish) - _sec(start), 'result': result,
            'memory_mb': memory, 'disk_gb': disk, 'vcpus': vcpus,
            'instance_name': name, 'user_id': user, 'project_id': project,
            'host_name_physical': host}


def csv_line(rec):
    def cell(v):
        if v is None:
            return ''
        return str(v) if isinstance(v, int) else '"' + v + '"'
    return ','.join(cell(v) for v in rec.values())


def write_csv(prefix, shards):
    for i, rows in enumerate(shards):
        with open(f'{prefix}-{i:05d}-of-{len(shards):05d}.csv', 'w') as f:
            f.write(','.join(CSV_HEADER) + '\n')
            for row in rows:
                f.write(csv_line(record(*row)) + '\n')


def write_avro(prefix, shards):
    schema = parse_schema(AVRO_SCHEMA)
    for i, rows in enumerate(shards):
        with open(f'{prefix}-{i:05d}-of-{len(shards):05d}.avro', 'wb') as f:
            writer = Writer(f, schema, codec='deflate')
            for row in rows:
                writer.write(record(*row))
            writer.flush()


def report(prefix):
    html_path, json_path = f'{prefix}.report.html', f'{prefix}.report.json'
    stats = write_report(str(prefix), html_path, json_path)
    with open(json_path) as f:
        assert json.load(f) == stats
    with open(html_path) as f:
        return stats, f.read()


PLOT_HEADINGS = ('Events per day', 'Concurrent instances over time',
                 'Instance lifetimes (CDF)', 'Event durations per kind',
                 'Flavor mix')


def check_html(page, no_data=0):
    """Every plot is there, as an image with a heading and alt text;
    ``no_data`` of them say "No data"."""
    assert page.count('<img src="data:image/png;base64,') == 5
    for heading in PLOT_HEADINGS:
        assert f'<h2>{heading}</h2>' in page
    assert page.count(' alt="') == 5
    assert page.count(' alt="No data. ') == no_data


def test_hand_counted_statistics(tmp_path):
    prefix = tmp_path / 'trace'
    write_csv(prefix, [SHARD0, SHARD1])
    stats, page = report(prefix)

    assert stats['trace']['format'] == 'csv'
    assert stats['trace']['shards'] == 2
    assert stats['span']['first_start'] == '2024-01-01T00:00:00Z'
    assert stats['span']['last_finish'] == '2024-01-03T06:00:03Z'
    assert stats['span']['seconds'] == 2 * 86400 + 6 * 3600 + 3
    assert stats['counts'] == {'rows': 10, 'events': 10, 'instances': 4,
                               'users': 3, 'projects': 2, 'hosts': 2}
    assert stats['events_per_kind'] == {SCHED: 4, BUILD: 3, TERM: 2,
                                        REBOOT: 1}
    assert stats['results_per_kind'][BUILD] == {
        'Success': 1, 'Error': 2, 'other': 0, 'failure_rate': 0.666667}
    assert stats['results_per_kind'][SCHED] == {
        'Success': 4, 'Error': 0, 'other': 0, 'failure_rate': 0.0}
    # A: 2024-01-01T00:00:00 .. terminate finish 2024-01-03T00:00:05;
    # B: 12:00:00 .. 13:00:00; C and D are never terminated.
    assert stats['instance_lifetimes']['terminated'] == 2
    assert stats['instance_lifetimes']['open_ended'] == 2
    assert stats['instance_lifetimes']['min_s'] == 3600
    assert stats['instance_lifetimes']['max_s'] == 2 * 86400 + 5
    assert stats['flavors'] == [
        {'vcpus': 2, 'memory_mb': 4096, 'instances': 2},
        {'vcpus': 1, 'memory_mb': 512, 'instances': 1},
        {'vcpus': 8, 'memory_mb': 16384, 'instances': 1}]
    assert [(d['date'], d['events'])
            for d in stats['events_per_day']['days']] == [
        ('2024-01-01', 5), ('2024-01-02', 3), ('2024-01-03', 2)]
    # A+B on 2024-01-01 12:00, A+C on the 2nd, C+D from the 3rd 06:00.
    conc = stats['concurrent_instances']
    assert conc['peak'] == 2
    assert conc['peak_time'] == '2024-01-01T12:00:00Z'
    assert [d['max'] for d in conc['daily_max']] == [2, 2, 2]
    # terminate durations: 5 s and 0 s; build: 30, 0, 39.
    term = stats['event_durations'][TERM]
    assert (term['count'], term['zero'], term['min_s'], term['max_s'],
            term['mean_s']) == (2, 1, 0, 5, 2.5)
    build = stats['event_durations'][BUILD]
    assert (build['min_s'], build['max_s'], build['mean_s']) == (0, 39, 23.0)
    assert 28 <= build['p50_s'] <= 32
    check_html(page)


def test_avro_only_trace_gives_the_same_statistics(tmp_path):
    write_csv(tmp_path / 'c', [SHARD0, SHARD1])
    write_avro(tmp_path / 'a', [SHARD0, SHARD1])
    from_csv, _ = report(tmp_path / 'c')
    from_avro, page = report(tmp_path / 'a')
    assert from_avro.pop('trace') == {
        'prefix': str(tmp_path / 'a'), 'format': 'avro', 'shards': 2}
    from_csv.pop('trace')
    assert from_avro == from_csv
    check_html(page)


def test_small_batches_and_merges_give_the_same_statistics(tmp_path,
                                                          monkeypatch):
    write_csv(tmp_path / 'c', [SHARD0, SHARD1])
    write_avro(tmp_path / 'a', [SHARD0, SHARD1])
    whole, _ = report(tmp_path / 'c')
    whole.pop('trace')
    monkeypatch.setattr(read, 'CSV_BLOCK_BYTES', 700)
    monkeypatch.setattr(read, 'AVRO_BATCH_ROWS', 2)
    monkeypatch.setattr(aggregate, 'MERGE_ROWS', 1)
    for prefix, shard, reader in (
            ('c', 'c-00000-of-00002.csv', read.csv_batches),
            ('a', 'a-00000-of-00002.avro', read.avro_batches)):
        assert len(list(reader(str(tmp_path / shard)))) >= 2   # 5 rows
        pieces, _ = report(tmp_path / prefix)
        pieces.pop('trace')
        assert pieces == whole


def test_published_time_format(tmp_path):
    """Naive 'YYYY-MM-DD HH:MM:SS' times (the published traces) are UTC."""
    write_csv(tmp_path / 'iso', [SHARD0, SHARD1])
    write_csv(tmp_path / 'plain', [SHARD0, SHARD1])
    for path in tmp_path.glob('plain-*.csv'):
        path.write_text(re.sub(r'"(\d{4}-\d\d-\d\d)T([\d:]+)Z"',
                               r'"\1 \2"', path.read_text()))
    iso, _ = report(tmp_path / 'iso')
    plain, _ = report(tmp_path / 'plain')
    iso.pop('trace'), plain.pop('trace')
    assert plain == iso


def test_csv_preferred_when_both_exist(tmp_path):
    write_csv(tmp_path / 't', [SHARD0])
    write_avro(tmp_path / 't', [SHARD0, SHARD1])
    stats, _ = report(tmp_path / 't')
    assert stats['trace']['format'] == 'csv'
    assert stats['counts']['rows'] == 5


def test_one_event_trace(tmp_path):
    write_csv(tmp_path / 't', [[SHARD1[-1]]])
    stats, page = report(tmp_path / 't')
    assert stats['counts']['rows'] == 1
    assert stats['counts']['instances'] == 1
    assert stats['instance_lifetimes'] == {'terminated': 0, 'open_ended': 1}
    assert stats['concurrent_instances']['peak'] == 1
    check_html(page, no_data=1)   # no terminated instance: no lifetimes
    assert 'alt="No data. Cumulative distribution of lifetimes' in page


@pytest.mark.parametrize('shards', [[[]], [[], []]])
def test_empty_trace(tmp_path, shards):
    write_csv(tmp_path / 't', shards)
    stats, page = report(tmp_path / 't')
    assert stats['counts'] == {'rows': 0, 'events': 0, 'instances': 0,
                               'users': 0, 'projects': 0, 'hosts': 0}
    assert stats['span']['first_start'] is None
    assert stats['events_per_kind'] == {}
    assert stats['flavors'] == []
    check_html(page, no_data=5)


def test_missing_prefix(tmp_path):
    prefix = str(tmp_path / 'nothing')
    with pytest.raises(UserError, match=re.escape(f'no trace at {prefix}:')):
        write_report(prefix)


def test_incomplete_trace(tmp_path):
    write_csv(tmp_path / 't', [SHARD0, SHARD1])
    (tmp_path / 't-00000-of-00002.csv').unlink()
    with pytest.raises(UserError, match=re.escape(
            f'incomplete or mixed trace at {tmp_path / "t"}: 1 .csv shards, '
            't-00001-of-00002.csv')):
        write_report(str(tmp_path / 't'))


def test_json_lines_only_trace(tmp_path):
    (tmp_path / 't-00000-of-00001.jsonl').write_text('{}\n')
    with pytest.raises(UserError, match=re.escape(
            f'only jsonl shards at {tmp_path / "t"}; '
            'this reads parquet, csv or avro')):
        write_report(str(tmp_path / 't'))


def test_not_a_trace_csv(tmp_path):
    (tmp_path / 't-00000-of-00001.csv').write_text('a,b\n1,2\n')
    with pytest.raises(UserError, match='not a readable trace CSV'):
        write_report(str(tmp_path / 't'))


def starcompactor(*args):
    return subprocess.run([sys.executable, '-m', 'starcompactor', *args],
                          capture_output=True, text=True, timeout=300)


def test_report_command(tmp_path):
    prefix = str(tmp_path / 'trace')
    write_csv(prefix, [SHARD0, SHARD1])
    run = starcompactor('report', prefix)
    assert run.returncode == 0, run.stderr
    assert '10 rows, 4 instances' in run.stdout
    with open(prefix + '.report.json') as f:
        assert json.load(f)['counts']['instances'] == 4
    with open(prefix + '.report.html') as f:
        check_html(f.read())

    run = starcompactor('report', str(tmp_path / 'missing'))
    assert run.returncode == 1
    assert run.stderr.startswith('starcompactor: error: no trace at')
    assert len(run.stderr.strip().splitlines()) == 1


def test_report_command_rejects_a_misspelled_option(tmp_path, capsys):
    prefix = str(tmp_path / 'trace')
    write_csv(prefix, [SHARD0, SHARD1])
    html_path = tmp_path / 'x.html'
    assert cli.main(['report', prefix, '--htm', str(html_path)]) == 2
    error = capsys.readouterr().err
    assert 'unknown option --htm' in error
    assert 'did you mean --html' in error
    assert not html_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'trace-00000-of-00002.csv', 'trace-00001-of-00002.csv']


# -- v0.3 tables --------------------------------------------------------------

def report_of_trace(prefix):
    """The report of ``prefix``-instances with the host capacity of
    ``prefix``-hosts, and the formats it read them in; where the tables
    are left out, so that two traces' reports compare."""
    stats = write_report(f'{prefix}-instances', extra_sections=[
        capacity.section(f'{prefix}-hosts')])
    host_capacity = stats['extra']['host_capacity']
    formats = (stats.pop('trace')['format'],
               host_capacity.pop('host_table')['format'])
    return stats, formats


def test_v03_tables_give_the_report_figures_of_their_v02_tables(
        mariadb, cells, password_file, tmp_path):  # noqa: F811
    """The same history, traced in v0.2 and in v0.3 (flavors and
    capacities in PROPERTIES) in each format the report reads: the same
    statistics and host capacity."""
    key = write_key_file(tmp_path / 'key', b'report-v03-key-0123456789abcdef')
    for version, formats in (('v0.2', 'csv'), ('v0.3', 'parquet,csv,avro')):
        run_trace(job_args(mariadb, password_file, cells, tmp_path / version,
                           '--mask-key-file', key, '--trace-format', version,
                           '--formats', formats))
    v02, _ = report_of_trace(tmp_path / 'v0.2')
    # by hand: every instance of the fixture is 2 vCPUs, 2048 MB
    assert v02['flavors'] == [{'vcpus': 2, 'memory_mb': 2048, 'instances': 5}]
    assert _steps(v02['extra']['host_capacity']) == CAPACITY_STEPS
    for fmt in ('parquet', 'csv', 'avro'):   # the order the report prefers
        v03, formats = report_of_trace(tmp_path / 'v0.3')
        assert formats == (fmt, fmt)
        assert v03 == v02
        for table in ('instances', 'hosts'):
            for path in shards.find(f'{tmp_path / "v0.3"}-{table}', (fmt,)):
                os.remove(path)


def test_a_bare_metal_v03_trace_reports_the_figures_its_properties_have(
        mariadb, nova_db, service_db, password_file, tmp_path,  # noqa: F811
        capsys):
    """Bare-metal instances with leases and their nodes' figures (and one
    with neither flavor nor node figures) beside a VM, Ironic nodes as
    hosts: an instance's flavor is the memory_mb and vcpus its PROPERTIES
    have, else unknown; the nodes count as hosts in service, their
    capabilities no capacity."""
    cell, ironic, blazar = bm.leased_cloud(mariadb, nova_db, service_db)
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"UPDATE `{cell}`.instances SET memory_mb = NULL,"
                       f" root_gb = NULL, vcpus = NULL WHERE uuid = "
                       f"'{bm.B5}'")
    out = tmp_path / 'trace'
    assert cli.main(['trace', *job_args(
        mariadb, password_file, [cell], out, '--instance-type', 'auto',
        '--trace-format', 'v0.3', '--ironic-database', ironic,
        '--blazar-database', blazar, '--formats', 'csv')]) == 0
    assert cli.main(['report', f'{out}-instances']) == 0
    assert f'host capacity from {out}-hosts: 3 hosts' in \
        capsys.readouterr().out
    with open(f'{out}-instances.report.json') as f:
        stats = json.load(f)
    (header,), rows = read_csv(f'{out}-instances')
    properties = {row[0]: json.loads(row[header.index('PROPERTIES')])
                  for row in rows}
    flavors = collections.Counter((p.get('vcpus'), p.get('memory_mb'))
                                  for p in properties.values())
    assert flavors[1, 2048] == 1                 # VM1's flavor
    assert (properties[bm.B5].get('vcpus'),
            properties[bm.B5].get('memory_mb')) == (None, None)
    assert {(f['vcpus'], f['memory_mb']): f['instances']
            for f in stats['flavors']} == flavors
    # N1, N2, N3 created on Nov 1, 2, 3; N2 in maintenance from Jan 6
    assert _steps(stats['extra']['host_capacity']) == [
        ('2023-11-01T00:00:00Z', 1, 0, 0, 0),
        ('2023-11-02T00:00:00Z', 2, 0, 0, 0),
        ('2023-11-03T00:00:00Z', 3, 0, 0, 0),
        ('2024-01-06T00:00:00Z', 2, 0, 0, 0)]


def test_properties_that_are_no_json_object_are_a_one_line_error(tmp_path):
    header = ','.join(h if h != 'MEMORY_MB' else 'PROPERTIES'
                      for h in CSV_HEADER if h not in ('DISK_GB', 'VCPUS'))
    row = ('"a",{},"2024-01-01T00:00:00Z",0,"2024-01-01T00:00:01Z",1,1,'
           '"Success",{},"n","u","p","h"')
    prefix = tmp_path / 't'
    for properties, problem in (('"[1,2]"', 'a JSON list, not an object'),
                                ('"{memory_mb: 1}"', 'Expecting property')):
        (tmp_path / 't-00000-of-00001.csv').write_text(
            header + '\n' + row.format('"x"', properties) + '\n')
        with pytest.raises(UserError, match=re.escape(
                f'{prefix}-00000-of-00001.csv: a PROPERTIES value is no JSON '
                f'object: {problem}')):
            write_report(str(prefix))
