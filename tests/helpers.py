"""Writing Nova rows and reading traces back, for tests."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import fastavro
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from conftest import READER
from starcompactor.pipeline import shards
from starcompactor.pipeline.instances import InstancesJob


def insert(connection, database, table, rows):
    """Insert dict rows into ``database.table`` (foreign keys unchecked, as a
    restored dump would: orphans are part of what tests need)."""
    if not rows:
        return
    columns = sorted({c for row in rows for c in row})
    sql = (f'INSERT INTO `{database}`.`{table}` '
           f'({", ".join(f"`{c}`" for c in columns)}) '
           f'VALUES ({", ".join(["%s"] * len(columns))})')
    with connection.cursor() as cursor:
        cursor.execute('SET FOREIGN_KEY_CHECKS=0')
        cursor.executemany(sql, [[row.get(c) for c in columns] for row in rows])
        cursor.execute('SET FOREIGN_KEY_CHECKS=1')


def node_row(id_, host, created, capacity, updated=None, deleted_at=None):
    """A ``compute_nodes`` row; ``capacity``: (vcpus, memory_mb, local_gb)."""
    vcpus, memory_mb, local_gb = capacity
    return {'id': id_, 'host': host, 'hypervisor_hostname': f'{host}.example',
            'created_at': created, 'updated_at': updated,
            'deleted_at': deleted_at, 'deleted': id_ if deleted_at else 0,
            'vcpus': vcpus, 'memory_mb': memory_mb, 'local_gb': local_gb,
            'vcpus_used': 0, 'memory_mb_used': 0, 'local_gb_used': 0,
            'hypervisor_type': 'QEMU', 'hypervisor_version': 8002000,
            'cpu_info': '{}'}


def service_row(id_, host, updated, disabled=0, binary='nova-compute',
                deleted_at=None, reason=None):
    """A ``services`` row."""
    return {'id': id_, 'host': host, 'binary': binary,
            'topic': binary.split('-')[1], 'report_count': 7,
            'created_at': '2023-11-01 00:00:00', 'updated_at': updated,
            'disabled': disabled, 'disabled_reason': reason,
            'deleted_at': deleted_at, 'deleted': id_ if deleted_at else 0}


def job_args(server, password_file, databases, output, *extra):
    return ['--mysql-host', server.host, '--mysql-port', str(server.port),
            '--mysql-user', READER, '--mysql-password-file', password_file,
            '--databases', ','.join(databases), '--output', str(output),
            *extra]


def ran_job(args, job_class=InstancesJob, now=None):
    """A job (``job_class``: instances, hosts, trace) run through Beam's
    TestPipeline, its cut at ``now``; the job, to summarize."""
    options = PipelineOptions(args)
    job = job_class(options, now=now)
    pipeline = TestPipeline(options=options)
    job.build(pipeline)
    pipeline.run().wait_until_finish()
    return job


def run_job(args, now=None):
    """Run the instances job through Beam's TestPipeline; its summary."""
    return ran_job(args, now=now).summarize(0.0)


def api_command(*args, env):
    """``starcompactor ARGS`` in a child process with only the OS_*
    variables of ``env`` (and no MYSQL_PWD)."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_') and k != 'MYSQL_PWD'}
    return subprocess.run([sys.executable, '-m', 'starcompactor', *args],
                          env=dict(environ, **env), capture_output=True,
                          text=True, timeout=300)


def read_csv(prefix):
    rows, headers = [], set()
    for path in shards.find(str(prefix), ('csv',)):
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.reader(f)
            headers.add(tuple(next(reader)))
            rows += [tuple(row) for row in reader]
    return headers, sorted(rows)


def read_avro(prefix):
    records = []
    for path in shards.find(str(prefix), ('avro',)):
        with open(path, 'rb') as f:
            records += list(fastavro.reader(f))
    return records


def read_jsonl(prefix):
    records = []
    for path in shards.find(str(prefix), ('jsonl',)):
        with open(path, encoding='utf-8') as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def sort_records(records):
    return sorted(records, key=lambda r: tuple(str(v) for v in r.values()))


def dump_state(server, databases, path, completed):
    """A real mariadb-dump of ``databases``, its trailer set to
    ``completed`` (the time of the state it holds)."""
    dumper = shutil.which('mariadb-dump') or shutil.which('mysqldump')
    text = subprocess.run([dumper, f'--socket={server.socket}',
                           '--user=root', '--databases', *databases],
                          stdout=subprocess.PIPE, check=True).stdout
    text, found = re.subn(rb'-- Dump completed on [0-9: -]+',
                          f'-- Dump completed on {completed}'.encode(), text)
    assert found == 1
    path.write_bytes(text)


def write_key_file(folder, key):
    """A mask key file as an operator keeps one: the key, mode 600."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / 'mask.key'
    path.write_bytes(key)
    path.chmod(0o600)
    return str(path)
