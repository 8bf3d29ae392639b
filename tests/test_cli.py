"""The ``starcompactor`` command as users run it: a real process."""
import os
import shutil
import subprocess
import sys

import golden
from conftest import READER, READER_PASSWORD
from helpers import read_csv


def starcompactor(*args, env=None):
    environ = dict(os.environ, **(env or {}))
    environ.pop('MYSQL_PWD', None) if env is None else None
    return subprocess.run(
        [sys.executable, '-m', 'starcompactor', *args], env=environ,
        capture_output=True, text=True, timeout=300)


def mysql_args(server, database, password_file, user=READER):
    args = ['--mysql-host', server.host, '--mysql-port', str(server.port),
            '--mysql-user', user, '--databases', database]
    return args + (['--mysql-password-file', password_file]
                   if password_file else [])


def test_instances_command_writes_trace_and_summary(mariadb, golden_db,
                                                    password_file, tmp_path):
    out = tmp_path / 'out' / 'trace'
    run = starcompactor('instances', *mysql_args(mariadb, golden_db,
                                                 password_file),
                        '--output', str(out), '--num-shards', '2')
    assert run.returncode == 0, run.stderr
    assert '7 trace rows written' in run.stdout
    assert 'unfinished 1' in run.stdout
    for shard in ('00000', '00001'):
        for ext in ('csv', 'avro'):
            path = f'{out}-{shard}-of-00002.{ext}'
            assert os.path.exists(path)
            assert path in run.stdout
    assert len(read_csv(out)[1]) == 7
    assert 'Traceback' not in run.stderr


def test_password_from_environment(mariadb, golden_db, tmp_path):
    run = starcompactor('instances', *mysql_args(mariadb, golden_db, None),
                        '--output', str(tmp_path / 't'), '--formats', 'csv',
                        env={'MYSQL_PWD': READER_PASSWORD})
    assert run.returncode == 0, run.stderr
    assert READER_PASSWORD not in run.stdout + run.stderr


def _fails_with(run, *phrases):
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert 'Traceback' not in run.stderr
    assert lines[-1].startswith('starcompactor: error: '), run.stderr
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]
    return lines[-1]


def test_bad_inputs_get_one_line_errors(mariadb, golden_db, nova_db,
                                        password_file, tmp_path):
    out = ['--output', str(tmp_path / 'trace')]
    wrong = tmp_path / 'wrong-password'
    wrong.write_text('not-the-password\n')
    line = _fails_with(starcompactor(
        'instances', *mysql_args(mariadb, golden_db, str(wrong)), *out),
        'refused user', 'wrong password')
    assert 'not-the-password' not in line

    _fails_with(starcompactor(
        'instances', *mysql_args(mariadb, 'no_such_db', password_file), *out),
        "'no_such_db'")

    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute('CREATE DATABASE IF NOT EXISTS not_nova')
        cursor.execute(f"GRANT SELECT ON not_nova.* TO '{READER}'@'%'")
    _fails_with(starcompactor(
        'instances', *mysql_args(mariadb, 'not_nova', password_file), *out),
        'instances', 'missing')

    _fails_with(starcompactor(
        'instances', '--mysql-host', '127.0.0.1', '--mysql-port', '9',
        '--databases', 'nova', *out), 'cannot reach MySQL at 127.0.0.1:9')

    args = mysql_args(mariadb, golden_db, password_file) + out
    _fails_with(starcompactor('instances', *args, '--start', 'yesterday'),
                '--start', 'yesterday')
    _fails_with(starcompactor('instances', *args, '--formats', 'orc'),
                '--formats')
    _fails_with(starcompactor('instances', *args, '--mask-key-file',
                              str(tmp_path / 'nokey')), 'cannot read')
    short = tmp_path / 'short.key'
    short.write_text('tiny')
    _fails_with(starcompactor('instances', *args, '--mask-key-file',
                              str(short)), '4 bytes long')
    _fails_with(starcompactor('instances',
                              *mysql_args(mariadb, golden_db, password_file)),
                '--output')


def test_an_older_schema_missing_a_column(mariadb, nova_db, password_file,
                                          tmp_path):
    database = nova_db()
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f'ALTER TABLE `{database}`.instance_actions_events '
                       f'DROP COLUMN result')
    _fails_with(starcompactor(
        'instances', *mysql_args(mariadb, database, password_file),
        '--output', str(tmp_path / 'trace')),
        'instance_actions_events', 'lacks a column', 'result')


def test_world_readable_key_file_warns(mariadb, golden_db, password_file,
                                       tmp_path):
    key = tmp_path / 'open.key'
    key.write_bytes(golden.GOLDEN_KEY)
    key.chmod(0o644)
    run = starcompactor('instances', *mysql_args(mariadb, golden_db,
                                                 password_file),
                        '--output', str(tmp_path / 't'), '--formats', 'csv',
                        '--mask-key-file', str(key))
    assert run.returncode == 0, run.stderr
    assert 'readable by other users' in run.stderr
    assert golden.GOLDEN_KEY.decode() not in run.stdout + run.stderr


def test_no_masking_warns(mariadb, golden_db, password_file, tmp_path):
    run = starcompactor('instances', *mysql_args(mariadb, golden_db,
                                                 password_file),
                        '--output', str(tmp_path / 't'), '--formats', 'csv',
                        '--mask-method', 'none')
    assert run.returncode == 0, run.stderr
    assert 'unmasked' in run.stderr


def test_existing_trace_is_refused_unless_overwrite(mariadb, golden_db,
                                                    password_file, tmp_path):
    out = tmp_path / 'trace'
    args = ['instances', *mysql_args(mariadb, golden_db, password_file),
            '--output', str(out), '--formats', 'csv']
    assert starcompactor(*args, '--num-shards', '3').returncode == 0
    _fails_with(starcompactor(*args), 'already exists', '--overwrite')
    run = starcompactor(*args, '--overwrite', '--num-shards', '1')
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'trace-00000-of-00001.csv', 'trace.manifest.json']


def test_a_failing_run_leaves_no_files_and_one_line(mariadb, golden_db,
                                                    tmp_path):
    """A dump whose instances are corrupt: the read fails inside the
    pipeline, after the rows of the tables before them went through. The
    user gets one line, and nothing stays: no shard, final or temporary, no
    manifest, and nothing in the temporary folder."""
    dumper = shutil.which('mariadb-dump') or shutil.which('mysqldump')
    dumped = subprocess.run([dumper, f'--socket={mariadb.socket}',
                             '--user=root', '--databases', golden_db],
                            stdout=subprocess.PIPE, check=True).stdout
    insert = b'INSERT INTO `instances` VALUES'
    assert dumped.index(b'INSERT INTO `instance_actions` VALUES') < \
        dumped.index(insert)
    dump = tmp_path / 'nova.sql'
    dump.write_bytes(dumped.replace(insert, insert + b' (bogus),'))
    out, tmp = tmp_path / 'out', tmp_path / 'tmp'
    tmp.mkdir()
    run = starcompactor('instances', '--dump', str(dump),
                        '--output', str(out / 'trace'),
                        '--formats', 'csv,avro,jsonl',
                        env={'TMPDIR': str(tmp)})
    line = _fails_with(run, 'nova.sql line', 'bad value near "bogus',
                       'INSERT into instances')
    assert [text for text in run.stderr.splitlines()
            if text.startswith('starcompactor:')] == [line]
    assert sorted(out.rglob('*')) == []
    assert sorted(tmp.rglob('*')) == []


def test_manifest_lists_shards_counts_and_key_fingerprint(
        mariadb, golden_db, password_file, tmp_path):
    import hashlib
    import json
    key = tmp_path / 'key'
    key.write_bytes(golden.GOLDEN_KEY)
    key.chmod(0o600)
    out = tmp_path / 'trace'
    run = starcompactor('instances', *mysql_args(mariadb, golden_db,
                                                 password_file),
                        '--output', str(out), '--num-shards', '2',
                        '--formats', 'csv,avro,jsonl',
                        '--mask-key-file', str(key))
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / 'trace.manifest.json').read_text())
    assert manifest['epoch'] == '2016-03-01T12:00:01Z'
    assert manifest['epoch_sec'] == 1456833601
    assert manifest['trace_rows'] == 7
    # HMAC-SHA256(key, 'starcompactor key fingerprint v1')[:16]
    assert manifest['masking']['key_fingerprint'] == '15c00066e6d55940'
    assert manifest['source_rows']['events'] == {
        'read': 10, 'in_trace': 7,
        'left_out': {'no_action': 1, 'no_instance': 1, 'unfinished': 1}}
    shards = manifest['shards']
    assert len(shards) == 6
    for fmt in ('csv', 'avro', 'jsonl'):
        assert sum(s['rows'] for s in shards if s['format'] == fmt) == 7
    for shard in shards:
        data = (tmp_path / shard['file']).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard['sha256']
    assert READER_PASSWORD not in json.dumps(manifest)


def test_verify_finds_raw_identities_and_the_key(mariadb, golden_db,
                                                 password_file, tmp_path):
    key = tmp_path / 'key'
    key.write_bytes(golden.GOLDEN_KEY)
    key.chmod(0o600)
    source = mysql_args(mariadb, golden_db, password_file)
    masked, raw = tmp_path / 'masked', tmp_path / 'raw'
    for out, extra in ((masked, ['--mask-key-file', str(key)]),
                       (raw, ['--mask-method', 'none'])):
        run = starcompactor('instances', *source, '--output', str(out),
                            '--formats', 'csv,avro,jsonl', *extra)
        assert run.returncode == 0, run.stderr

    ok = starcompactor('verify', str(masked), *source,
                       '--mask-key-file', str(key))
    assert ok.returncode == 0, ok.stderr
    assert 'no raw identity and no key found' in ok.stdout

    leaky = starcompactor('verify', str(raw), *source)
    # Each of the 7 rows holds 4 raw identities (user, project, instance
    # name, host), in each of the 3 files.
    assert _fails_with(leaky) == 'starcompactor: error: 84 leaks in 3 files'
    assert 'a raw identity' in leaky.stdout
    for identity in golden.RAW_IDENTITIES:     # never echoed
        assert identity not in leaky.stdout + leaky.stderr

    # The key itself inside a shard.
    shard = next(tmp_path.glob('masked-*.jsonl'))
    shard.write_bytes(shard.read_bytes() + golden.GOLDEN_KEY + b'\n')
    leaky = starcompactor('verify', str(masked), *source,
                          '--mask-key-file', str(key))
    _fails_with(leaky, 'leaks')
    assert 'the masking key' in leaky.stdout
    assert golden.GOLDEN_KEY.decode() not in leaky.stdout + leaky.stderr


def test_the_sampled_leak_check_asks_the_source_about_its_sample_only(
        mariadb, golden_db, password_file, tmp_path):
    """Each run's check reads the first rows of each shard and asks the
    source which of their values are raw identities: the MySQL source in
    one query per table, the answer only ever a subset of the candidates."""
    from starcompactor.pipeline import leaks, shards
    from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
    from starcompactor.pipeline.sources.mysql import NovaMySQLSource
    source = NovaMySQLSource(
        MySQLConnection(mariadb.host, mariadb.port, READER,
                        str(password_file)), [golden_db])
    everything = source.raw_identities()
    assert set(golden.RAW_IDENTITIES) <= everything
    assert source.raw_identities({'alice', 'vm-alpha', 'nobody', '42'}) == {
        'alice', 'vm-alpha'}
    assert source.raw_identities(set()) == set()

    raw = tmp_path / 'raw'
    run = starcompactor('instances',
                        *mysql_args(mariadb, golden_db, password_file),
                        '--output', str(raw), '--formats', 'csv,avro',
                        '--mask-method', 'none')
    assert run.returncode == 0, run.stderr
    paths = shards.find(str(raw))
    found = leaks.check(paths, source, None, rows_per_file=2)
    assert found and {leak.file for leak in found} == set(paths)
    assert all(leak.row <= 2 for leak in found)
