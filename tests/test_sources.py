"""What every source offers beyond reading: ``about()``, the start-up log's
line on what is read."""
import gzip
import os

from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.pipeline.sources.mysql import NovaMySQLSource
from starcompactor.pipeline.sources.mysql_connection import MySQLConnection


def test_mysql_about():
    server = MySQLConnection('db.example', 3307, 'trace_reader')
    assert NovaMySQLSource(server, ['nova_cell0', 'nova_cell1'],
                           window=('2024-01-01 00:00:00', None)).about() == (
        'MySQL trace_reader@db.example:3307, databases nova_cell0, nova_cell1'
        ' (live and shadow_ tables), events from 2024-01-01 00:00:00')
    assert NovaMySQLSource(server, ['nova'], archived=False,
                           window=(None, '2024-02-01 00:00:00')).about() == (
        'MySQL trace_reader@db.example:3307, database nova (live tables '
        'only), events before 2024-02-01 00:00:00')


def test_dump_about(tmp_path):
    plain = tmp_path / 'nova.sql'
    plain.write_bytes(b'-- x\n' * 2400)            # 12,000 bytes
    packed = tmp_path / 'nova.sql.gz'
    packed.write_bytes(gzip.compress(b'') + b'\0' * (1_234_567 - 20))
    assert os.path.getsize(packed) == 1_234_567
    assert NovaDumpSource(str(packed)).about() == (
        'dump nova.sql.gz (1.2 MB, gzip), every database in it '
        '(live and shadow_ tables)')
    assert NovaDumpSource(
        [str(plain), str(packed)], databases=['nova_cell1'], archived=False,
        window=('2024-01-01 00:00:00', None)).about() == (
        'dumps nova.sql (12 kB), nova.sql.gz (1.2 MB, gzip), database '
        'nova_cell1 (live tables only), events from 2024-01-01 00:00:00')
    assert NovaDumpSource(
        str(plain), databases=['c0', 'c1'],
        window=('2024-01-01 00:00:00', '2024-02-01 00:00:00')).about() == (
        'dump nova.sql (12 kB), databases c0, c1 (live and shadow_ tables), '
        'events from 2024-01-01 00:00:00, before 2024-02-01 00:00:00')
