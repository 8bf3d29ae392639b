"""The instances job end to end: real MariaDB, real Nova schema, real Beam
pipelines (TestPipeline on the DirectRunner)."""
import pytest

import golden
from helpers import job_args, read_avro, read_csv, read_jsonl, run_job
from starcompactor.transforms.schema import CSV_HEADER, TRACE_FIELDS


@pytest.fixture
def golden_db(mariadb, nova_db):
    database = nova_db()
    with mariadb.admin() as admin:
        golden.load(admin, database)
    return database


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'mask.key'
    path.write_bytes(golden.GOLDEN_KEY + b'\n')   # one newline is stripped
    path.chmod(0o600)
    return str(path)


def test_golden_trace_in_every_format(mariadb, password_file, golden_db,
                                      key_file, tmp_path):
    out = tmp_path / 'trace'
    summary = run_job(job_args(mariadb, password_file, [golden_db], out,
                               '--formats', 'csv,avro,jsonl',
                               '--mask-key-file', key_file))

    headers, rows = read_csv(out)
    assert headers == {tuple(CSV_HEADER)}
    assert rows == golden.EXPECTED_CSV

    expected_records = [
        {field: (None if value == '' else value)
         for field, value in zip(TRACE_FIELDS, row)}
        for row in golden.EXPECTED_CSV]
    for records in (read_avro(out), read_jsonl(out)):
        as_text = sorted(
            tuple('' if r[f] is None else str(r[f]) for f in TRACE_FIELDS)
            for r in records)
        assert as_text == golden.EXPECTED_CSV
        assert all(isinstance(r['start_sec'], int) for r in records)
    assert len(expected_records) == summary.trace_rows == 7


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
