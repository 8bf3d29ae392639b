"""The mysqldump source against the MySQL source: the generator fills
MariaDB, the real mariadb-dump dumps it, and both traces, with the same key,
are identical row for row."""
import gzip
import shutil
import subprocess

from helpers import job_args, read_csv, run_job
from starcompactor import synth


def test_trace_from_a_real_dump_equals_the_trace_from_the_database(
        mariadb, nova_db, password_file, tmp_path):
    cells = [nova_db('cell0'), nova_db('cell1')]   # schema + SELECT grants
    with mariadb.admin() as admin:
        synth.load_mysql(admin, 600, seed=3, cells=cells, days=60)
    dump = tmp_path / 'nova.sql.gz'
    dumper = shutil.which('mariadb-dump') or shutil.which('mysqldump')
    dumped = subprocess.run([dumper, f'--socket={mariadb.socket}',
                             '--user=root', '--databases', *cells],
                            stdout=subprocess.PIPE, check=True).stdout
    dump.write_bytes(gzip.compress(dumped))
    key = tmp_path / 'key'
    key.write_bytes(b'round-trip-key-0123456789abcdef!')
    key.chmod(0o600)
    common = ['--formats', 'csv', '--mask-key-file', str(key),
              '--epoch', '2015-09-01T00:00:00Z']

    live = run_job(job_args(mariadb, password_file, cells,
                            tmp_path / 'live', *common))
    from_dump = run_job(['--dump', str(dump), '--output',
                         str(tmp_path / 'dump'), *common])

    _, live_rows = read_csv(tmp_path / 'live')
    _, dump_rows = read_csv(tmp_path / 'dump')
    assert len(live_rows) > 2000
    assert dump_rows == live_rows
    for table in ('instances', 'actions', 'events'):
        assert from_dump.tables[table] == live.tables[table], table
