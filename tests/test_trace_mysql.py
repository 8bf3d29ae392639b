"""The instances job end to end: real MariaDB, real Nova schema, real Beam
pipelines (TestPipeline on the DirectRunner)."""
import pytest

import golden
from datasets import cells_with_archive as _cells_with_archive
from helpers import (
    insert, job_args, read_avro, read_csv, read_jsonl, run_job, sort_records,
    write_key_file)
from starcompactor.transforms.schema import CSV_HEADER, TRACE_FIELDS


@pytest.fixture
def key_file(tmp_path):
    # one trailing newline is stripped
    return write_key_file(tmp_path, golden.GOLDEN_KEY + b'\n')


def test_golden_trace_in_every_format(mariadb, password_file, golden_db,
                                      key_file, tmp_path):
    out = tmp_path / 'trace'
    summary = run_job(job_args(mariadb, password_file, [golden_db], out,
                               '--formats', 'csv,avro,jsonl',
                               '--mask-key-file', key_file))

    headers, rows = read_csv(out)
    assert headers == {tuple(CSV_HEADER)}
    assert rows == golden.EXPECTED_CSV

    # Avro and JSON lines keep the numbers as numbers.
    numbers = {'start_sec', 'finish_sec', 'event_duration', 'memory_mb',
               'disk_gb', 'vcpus'}
    expected_records = sort_records([
        {field: int(value) if field in numbers else value
         for field, value in zip(TRACE_FIELDS, row)}
        for row in golden.EXPECTED_CSV])
    assert sort_records(read_avro(out)) == expected_records
    assert sort_records(read_jsonl(out)) == expected_records
    assert summary.trace_rows == 7


def test_every_row_is_in_the_trace_or_counted(mariadb, password_file,
                                              golden_db, key_file, tmp_path):
    summary = run_job(job_args(mariadb, password_file, [golden_db],
                               tmp_path / 'trace', '--formats', 'csv',
                               '--mask-key-file', key_file))
    for table, (read, in_trace, left_out) in golden.EXPECTED_COUNTS.items():
        count = summary.tables[table]
        assert (count.read, count.in_trace) == (read, in_trace), table
        assert summary.rejects(table) == left_out, table
        assert count.balanced, table


def _all_values(prefix):
    """Every value of every output format, as text, and the raw bytes of the
    text formats."""
    _, rows = read_csv(prefix)
    values = {v for row in rows for v in row}
    for records in (read_avro(prefix), read_jsonl(prefix)):
        values |= {str(v) for r in records for v in r.values()}
    return values


def _masks(prefix):
    _, rows = read_csv(prefix)
    return {(row[0], row[1], row[2]): row[11:] for row in rows}


def test_masks_follow_the_key(mariadb, password_file, golden_db, key_file,
                              tmp_path, monkeypatch):
    def trace(name, *extra):
        out = tmp_path / name
        run_job(job_args(mariadb, password_file, [golden_db], out,
                         '--formats', 'csv,avro,jsonl', *extra))
        return out

    same_a = trace('a', '--mask-key-file', key_file)
    same_b = trace('b', '--mask-key-file', key_file)
    assert _masks(same_a) == _masks(same_b)

    other_key = tmp_path / 'other.key'
    other_key.write_bytes(b'another-key-of-32-bytes-length!!')
    other = trace('other', '--mask-key-file', str(other_key))
    assert set(_masks(other)) == set(_masks(same_a))
    for row, masks in _masks(other).items():
        assert all(m != n for m, n in zip(masks[3:], _masks(same_a)[row][3:]))

    monkeypatch.setenv('STARCOMPACTOR_MASK_KEY', golden.GOLDEN_KEY.decode())
    from_env = trace('env')
    assert _masks(from_env) == _masks(same_a)
    monkeypatch.delenv('STARCOMPACTOR_MASK_KEY')

    random_1, random_2 = trace('random1'), trace('random2')
    assert _masks(random_1) != _masks(random_2)   # a new key every run

    for out in (same_a, other, from_env, random_1, random_2):
        values = _all_values(out)
        assert not values & set(golden.RAW_IDENTITIES)
        for path in tmp_path.glob(out.name + '-*'):
            data = path.read_bytes()
            if path.suffix != '.avro':   # avro blocks are deflated
                assert not any(raw.encode() in data
                               for raw in golden.RAW_IDENTITIES)


def test_mask_uuid_and_no_masking(mariadb, password_file, golden_db,
                                  key_file, tmp_path):
    out = tmp_path / 'uuid'
    run_job(job_args(mariadb, password_file, [golden_db], out, '--formats',
                     'csv', '--mask-key-file', key_file, '--mask-uuid'))
    _, rows = read_csv(out)
    uuids = {row[0] for row in rows}
    assert uuids == {'75355820560064fe97e66ac229175d13',
                     '44566be5721b09dd61d1ae88568e3b36'}

    out = tmp_path / 'raw'
    run_job(job_args(mariadb, password_file, [golden_db], out, '--formats',
                     'csv', '--mask-method', 'none'))
    _, rows = read_csv(out)
    assert {row[12] for row in rows} == {'alice', 'bob'}
    assert {row[14] for row in rows} == {'compute-01', 'compute-02'}


def test_empty_and_null_identities_stay_empty(mariadb, password_file,
                                              nova_db, key_file, tmp_path):
    database = nova_db()
    with mariadb.admin() as admin:
        insert(admin, database, 'instances', [dict(
            id=1, uuid=golden.U1, user_id='u', project_id='p', hostname='',
            host=None, memory_mb=None, root_gb=None, vcpus=None, deleted=0)])
        insert(admin, database, 'instance_actions', [dict(
            id=1, action='create', instance_uuid=golden.U1)])
        insert(admin, database, 'instance_actions_events', [dict(
            id=1, action_id=1, event='compute__do_build_and_run_instance',
            start_time='2020-01-01 00:00:00', finish_time='2020-01-01 00:00:09',
            result='Error')])
    out = tmp_path / 'trace'
    run_job(job_args(mariadb, password_file, [database], out,
                     '--formats', 'csv,avro', '--mask-key-file', key_file))
    _, rows = read_csv(out)
    assert rows == [(golden.U1, 'compute__do_build_and_run_instance',
                     '2020-01-01T00:00:00Z', '0', '2020-01-01T00:00:09Z', '9',
                     '9', 'Error', '', '', '', '',
                     '333ccfc7420ba73f30d4f086ecd916a0',
                     '06c9929a0fc471500fcd337080c55409', '')]
    [record] = read_avro(out)
    assert record['host_name_physical'] is None
    assert record['instance_name'] == ''
    assert record['memory_mb'] is None


def test_epoch_option_and_times_before_it(mariadb, password_file, golden_db,
                                          key_file, tmp_path):
    out = tmp_path / 'trace'
    run_job(job_args(mariadb, password_file, [golden_db], out, '--formats',
                     'csv', '--mask-key-file', key_file,
                     '--epoch', '2016-03-02T08:00:21Z'))
    _, rows = read_csv(out)
    seconds = {(row[1], row[2]): row[3:7] for row in rows}
    # Before the epoch: -1 in *_SEC, the duration still finish - start.
    assert seconds['compute__do_build_and_run_instance',
                   '2016-03-01T12:00:05Z'] == ('-1', '2016-03-01T12:00:35Z',
                                               '-1', '30')
    # Straddling it: starts before, finishes after.
    assert seconds['compute_reboot_instance', '2016-03-02T08:00:01Z'] == (
        '-1', '2016-03-02T08:00:31Z', '10', '30')
    assert seconds['compute_terminate_instance', '2016-03-04T09:00:01Z'] == (
        '176380', '2016-03-04T09:00:06Z', '176385', '5')


def test_window_is_pushed_down(mariadb, password_file, golden_db, key_file,
                               tmp_path):
    out = tmp_path / 'trace'
    summary = run_job(job_args(
        mariadb, password_file, [golden_db], out, '--formats', 'csv',
        '--mask-key-file', key_file,
        '--start', '2016-03-02T00:00:00', '--end', '2016-03-05T10:00:01Z'))
    _, rows = read_csv(out)
    assert [(row[1], row[2], row[3]) for row in rows] == [
        ('compute_reboot_instance', '2016-03-02T08:00:01Z', '0'),
        ('compute_terminate_instance', '2016-03-04T09:00:01Z', '176400')]
    # Only the events in the window were read at all: 102, 105 and 108.
    assert summary.tables['events'].read == 3
    assert summary.rejects('events') == {'no_action': 1}
    assert summary.tables['events'].balanced


def test_events_finished_after_the_cut_are_unfinished(
        mariadb, password_file, golden_db, key_file, tmp_path):
    import datetime as dt
    cut = dt.datetime(2016, 3, 4, 9, 0, 5, tzinfo=dt.timezone.utc)
    summary = run_job(job_args(mariadb, password_file, [golden_db],
                               tmp_path / 'trace', '--formats', 'csv',
                               '--mask-key-file', key_file), now=cut)
    # 105 finished at 09:00:06, 106 later still: both running at the cut.
    assert summary.rejects('events')['unfinished'] == 3
    assert summary.trace_rows == 5


def test_two_cells_and_archived_rows_in_one_trace(mariadb, password_file,
                                                  nova_db, tmp_path):
    cells, failed, live, archived = _cells_with_archive(mariadb, nova_db)
    out = tmp_path / 'all'
    summary = run_job(job_args(mariadb, password_file, cells, out,
                               '--formats', 'csv', '--mask-method', 'none'))
    _, rows = read_csv(out)
    assert [(r[0], r[1], r[3], r[6], r[10], r[14]) for r in rows] == sorted([
        (failed, 'conductor_schedule_and_build_instances', '1', '1', '1', ''),
        (live, 'compute__do_build_and_run_instance', '3', '7', '2', 'cmp-1'),
        (archived, 'compute__do_build_and_run_instance', '0', '30', '4',
         'cmp-2'),
        (archived, 'compute_terminate_instance', '86390', '10', '4',
         'cmp-2')])
    assert (summary.tables['events'].read, summary.trace_rows) == (4, 4)

    out = tmp_path / 'live'
    summary = run_job(job_args(mariadb, password_file, cells, out,
                               '--formats', 'csv', '--mask-method', 'none',
                               '--no-archived'))
    _, rows = read_csv(out)
    assert sorted((r[0], r[3]) for r in rows) == sorted(
        [(failed, '0'), (live, '2')])
    assert summary.tables['instances'].read == 2


def test_bad_rows_are_counted_rejects_not_crashes(mariadb, password_file,
                                                  nova_db, tmp_path):
    database = nova_db()
    good = golden.U1
    with mariadb.admin(database) as admin, admin.cursor() as cursor:
        # What strict Nova never writes, but damaged or hand-edited
        # databases hold. (Text that is not UTF-8 cannot be stored in Nova's
        # utf8mb3 columns at all: MariaDB refuses or replaces it. Dump files
        # can hold it: see test_dump_parser.)
        cursor.execute("SET SESSION sql_mode = ''")
        insert(admin, database, 'instances', [
            dict(id=1, uuid=good, hostname='fine', deleted=0),
            dict(id=2, uuid='not-a-uuid', hostname='x', deleted=0)])
        insert(admin, database, 'instance_actions', [
            dict(id=1, action='create', instance_uuid=good),
            dict(id=2, action='create', instance_uuid='not-a-uuid')])
        t0, t1 = '2020-01-01 00:00:00', '2020-01-01 00:00:05'
        insert(admin, database, 'instance_actions_events', [
            dict(id=1, action_id=1, event='ok', start_time=t0,
                 finish_time=t1, result='Success'),
            dict(id=2, action_id=1, event='zero', start_time=t0,
                 finish_time='0000-00-00 00:00:00', result='Success'),
            dict(id=3, action_id=1, event='nostart', start_time=None,
                 finish_time=t1, result='Success'),
            dict(id=4, action_id=1, event='backwards', start_time=t1,
                 finish_time=t0, result='Success'),
            dict(id=5, action_id=2, event='of-bad-uuid', start_time=t0,
                 finish_time=t1, result='Success')])
    out = tmp_path / 'trace'
    summary = run_job(job_args(mariadb, password_file, [database], out,
                               '--formats', 'csv', '--mask-method', 'none'))
    _, rows = read_csv(out)
    assert [(r[0], r[1], r[11]) for r in rows] == [(good, 'ok', 'fine')]
    assert summary.rejects('instances') == {'bad_uuid': 1}
    assert summary.rejects('events') == {
        'bad_time': 1, 'no_start_time': 1, 'finish_before_start': 1,
        'no_instance': 1}
    assert summary.rejects('actions') == {'no_instance': 1}
    for table in ('instances', 'actions', 'events'):
        assert summary.tables[table].balanced, table
