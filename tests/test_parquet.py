"""The Parquet output (``--formats parquet``): real runs of both trace jobs
(``instances`` and ``hosts``) on the bundled demo dump, writing CSV and
Parquet; the Parquet shards read back with pyarrow and with DuckDB and
compared with the documented schema and with the CSV shards of the same
run, row for row."""
import collections
import datetime as dt
import hashlib
import json
import os
import shutil

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from helpers import write_key_file
from starcompactor.pipeline import cli, leaks, shards
from starcompactor.pipeline.sinks.parquet import ParquetFile
from starcompactor.report.aggregate import compute_stats
from starcompactor.transforms.schema import HOST_TRACE, INSTANCE_TRACE

KEY = b'parquet-test-key-0123456789abcdef'
TIME = pa.timestamp('us', tz='UTC')
STRING, INT = pa.string(), pa.int64()

# The schemas the README documents: (column, Arrow type, nullable).
EXPECTED_COLUMNS = {
    'instances': [
        ('instance_uuid', STRING, False),
        ('event', STRING, True),
        ('start_time', TIME, False),
        ('start_sec', INT, False),
        ('finish_time', TIME, False),
        ('finish_sec', INT, False),
        ('event_duration', INT, False),
        ('result', STRING, True),
        ('memory_mb', INT, True),
        ('disk_gb', INT, True),
        ('vcpus', INT, True),
        ('instance_name', STRING, True),
        ('user_id', STRING, True),
        ('project_id', STRING, True),
        ('host_name_physical', STRING, True),
    ],
    'hosts': [
        ('event_time', TIME, False),
        ('event_time_sec', INT, False),
        ('host_name_physical', STRING, False),
        ('rack', INT, True),
        ('event', STRING, False),
        ('vcpu_capacity', INT, True),
        ('memory_capacity_mb', INT, True),
        ('disk_capacity_gb', INT, True),
    ],
}
TABLES = {'instances': INSTANCE_TRACE, 'hosts': HOST_TRACE}
SHARDS = {'instances': 2, 'hosts': 1}
# The racks of the demo's first three hosts only: RACK is a nullable int
# column holding both.
RACKS = ['--rack-regex', '^compute-000([1-3])$']
DUCKDB_TYPES = {STRING: 'VARCHAR', INT: 'BIGINT',
                TIME: 'TIMESTAMP WITH TIME ZONE'}


@pytest.fixture(scope='module')
def traces(tmp_path_factory):
    """{command: prefix} of one run of each job, and the key file."""
    folder = tmp_path_factory.mktemp('parquet')
    key_file = write_key_file(folder, KEY)
    prefixes = {}
    for command, shard_count in SHARDS.items():
        prefix = str(folder / command)
        assert cli.main([command, '--dump', cli.DEMO_DUMP, '--output', prefix,
                         '--formats', 'csv,parquet', '--num-shards',
                         str(shard_count), '--mask-key-file', key_file,
                         *(RACKS if command == 'hosts' else [])]) == 0
        prefixes[command] = prefix
    prefixes['key_file'] = key_file
    return prefixes


def parquet_paths(prefix):
    return shards.find(prefix, ('parquet',))


def csv_rows(prefix, table):
    """The CSV shards' rows as text; an empty field is None (CSV strings are
    quoted, so "" stays an empty string)."""
    options = pa_csv.ConvertOptions(
        column_types={header: pa.string() for header in table.csv_header},
        strings_can_be_null=True, quoted_strings_can_be_null=False)
    rows = []
    for path in shards.find(prefix, ('csv',)):
        read = pa_csv.read_csv(path, convert_options=options)
        assert read.column_names == table.csv_header
        rows += [tuple(row.values()) for row in read.to_pylist()]
    return rows


def as_csv_text(value):
    """A value read from Parquet, written the way the CSV shards write it."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        assert value.utcoffset() == dt.timedelta(0)
        assert value.microsecond == 0
        return value.strftime('%Y-%m-%dT%H:%M:%SZ')
    return str(value)


@pytest.mark.parametrize('command', ['instances', 'hosts'])
def test_parquet_schema_is_the_documented_one(traces, command):
    expected = EXPECTED_COLUMNS[command]
    paths = parquet_paths(traces[command])
    assert len(paths) == SHARDS[command]
    connection = duckdb.connect()
    for path in paths:
        schema = pq.read_schema(path)
        assert [(f.name, f.type, f.nullable) for f in schema] == expected
        # DuckDB sees the same columns and types, and Parquet's
        # REQUIRED/OPTIONAL says which may be null.
        relation = duckdb.read_parquet([path], connection=connection)
        assert relation.columns == [name for name, _, _ in expected]
        assert [str(t) for t in relation.types] == [
            DUCKDB_TYPES[typ] for _, typ, _ in expected]
        repetition = connection.execute(
            'SELECT name, repetition_type FROM parquet_schema(?) '
            "WHERE name != 'schema'", [path]).fetchall()
        assert repetition == [
            (name, 'OPTIONAL' if nullable else 'REQUIRED')
            for name, _, nullable in expected]
        # zstd everywhere; each shard (under 10,000 rows, written from
        # several of the pipeline's batches) is one row group.
        metadata = pq.read_metadata(path)
        assert metadata.num_row_groups == 1
        assert {metadata.row_group(0).column(i).compression
                for i in range(metadata.num_columns)} == {'ZSTD'}


@pytest.mark.parametrize('command', ['instances', 'hosts'])
def test_parquet_rows_equal_the_csv_rows(traces, command):
    prefix, table = traces[command], TABLES[command]
    expected = collections.Counter(csv_rows(prefix, table))
    paths = parquet_paths(prefix)

    by_pyarrow = [tuple(as_csv_text(v) for v in row.values())
                  for path in paths
                  for row in pq.read_table(path).to_pylist()]
    assert collections.Counter(by_pyarrow) == expected

    relation = duckdb.read_parquet(paths, connection=duckdb.connect())
    by_duckdb = [tuple(as_csv_text(v.astimezone(dt.timezone.utc)
                                   if isinstance(v, dt.datetime) else v)
                       for v in row)
                 for row in relation.fetchall()]
    assert collections.Counter(by_duckdb) == expected

    # The comparison covers nulls: hosts of no rack, instances never
    # placed on a host (the demo's scheduling failures).
    nullable = {'instances': 'HOST_NAME (PHYSICAL)', 'hosts': 'RACK'}
    column = table.csv_header.index(nullable[command])
    assert any(row[column] is None for row in expected)
    assert any(row[column] is not None for row in expected)


@pytest.mark.parametrize('command', ['instances', 'hosts'])
def test_manifest_lists_the_parquet_shards(traces, command):
    prefix = traces[command]
    with open(shards.manifest_path(prefix), encoding='utf-8') as f:
        manifest = json.load(f)
    assert manifest['formats'] == ['csv', 'parquet']
    listed = [s for s in manifest['shards'] if s['format'] == 'parquet']
    count = SHARDS[command]
    assert [s['file'] for s in listed] == [
        f'{command}-{n:05d}-of-{count:05d}.parquet' for n in range(count)]
    for shard in listed:
        path = os.path.join(os.path.dirname(prefix), shard['file'])
        assert shard['rows'] == pq.read_table(path).num_rows
        with open(path, 'rb') as f:
            assert shard['sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert sum(s['rows'] for s in listed) == manifest['trace_rows'] == len(
        csv_rows(prefix, TABLES[command]))


def test_rows_reach_the_file_in_whole_row_groups(tmp_path):
    """Ten batches of 7 rows, row groups of 20: three full row groups and
    the last 10 rows, in the order written."""
    schema = INSTANCE_TRACE.parquet_schema
    batches = [pa.table({
        field.name: [f'2024-01-01T00:00:{n:02d}Z' if field.type == TIME
                     else (n if field.type == INT else f'v{n}')] * 7
        for field in schema}, schema=INSTANCE_TRACE.schema)
        for n in range(10)]
    path = tmp_path / 'grouped.parquet'
    with open(path, 'wb') as handle:
        parquet_file = ParquetFile(handle, schema, row_group_rows=20)
        for batch in batches:
            parquet_file.add(batch)
        parquet_file.close()
    metadata = pq.read_metadata(path)
    assert [metadata.row_group(i).num_rows
            for i in range(metadata.num_row_groups)] == [20, 20, 20, 10]
    assert pq.read_table(path)['start_sec'].to_pylist() == [
        n for n in range(10) for _ in range(7)]


def test_the_report_reads_a_parquet_trace(traces, tmp_path):
    """The report of the CSV+Parquet trace reads its Parquet shards and
    says the same as the report of its CSV shards alone."""
    prefix = traces['instances']
    json_path = tmp_path / 'report.json'
    assert cli.main(['report', prefix, '--html', str(tmp_path / 'r.html'),
                     '--json', str(json_path)]) == 0
    from_parquet = json.loads(json_path.read_text())
    assert from_parquet['trace'] == {'prefix': prefix, 'format': 'parquet',
                                     'shards': 2}

    csv_only = str(tmp_path / 'csv-only')
    for n, path in enumerate(shards.find(prefix, ('csv',))):
        shutil.copy(path, f'{csv_only}-{n:05d}-of-00002.csv')
    from_csv, _ = compute_stats(csv_only)
    assert from_csv['trace']['format'] == 'csv'
    assert from_csv['counts']['rows'] == len(
        csv_rows(prefix, INSTANCE_TRACE))
    from_parquet.pop('trace'), from_csv.pop('trace')
    assert from_parquet == json.loads(json.dumps(from_csv))


@pytest.mark.parametrize('command', ['instances', 'hosts'])
def test_leak_checks_and_verify_read_parquet(traces, command):
    prefix = traces[command]
    paths = parquet_paths(prefix)
    assert shards.trace_table(paths, [INSTANCE_TRACE, HOST_TRACE]) is \
        TABLES[command]
    # A value of the last row of the last shard, taken for a raw identity:
    # the full check reads every row of every Parquet shard.
    last_rows = pq.read_table(paths[-1]).to_pylist()
    planted = last_rows[-1]['host_name_physical']
    found = leaks.find_leaks(paths, {planted}, KEY)
    assert [(leak.file, leak.what) for leak in found
            if leak.row == len(last_rows)] == [
        (paths[-1], 'a raw identity in a field')]
    assert all(leak.what != 'the masking key' for leak in found)
    # verify checks the Parquet shards with the others against the dump.
    assert cli.main(['verify', prefix, '--dump', cli.DEMO_DUMP,
                     '--mask-key-file', traces['key_file']]) == 0


def test_a_file_that_is_no_parquet_gets_one_line(tmp_path, capsys):
    prefix = str(tmp_path / 'broken')
    with open(f'{prefix}-00000-of-00001.parquet', 'wb') as f:
        f.write(b'PAR1 this is not a Parquet file')
    assert cli.main(['report', prefix]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f'starcompactor: error: {prefix}-00000-of-00001.parquet: '
        f'not a readable trace Parquet file: ')
