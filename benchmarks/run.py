#!/usr/bin/env python3
"""Benchmark of ``starcompactor instances`` against a throwaway MariaDB.

    python benchmarks/run.py --events 500000 [--events 2000000] [--repeat 3]
                             [--seed 0] [--keep-server DIR] [--only TEXT]

For each ``--events N``: starts a private ``mariadbd`` (tests/mariadb_server.py)
whose data directory is kept in ``DIR/bench-mariadb-<N>-<seed>`` (default DIR:
``~/.cache/starcompactor``) and loads a synthetic two-cell Nova history
(``synth.load_mysql``) into it, unless a dataset of that size and seed is
already there (``dataset.json`` in that directory). Then, each ``--repeat``
times (medians reported):

* the read limit: MariaDB's own client scans every source table
  (``mariadb --quick -B -e 'SELECT * FROM db.t' > /dev/null``, 6 tables x 2
  cells, one after the other; total wall time);
* the whole ``starcompactor instances`` command, ``--formats csv`` and the
  default formats, on the DirectRunner in_memory (default) and
  multi_processing with 2 workers, and on the DaskRunner with the local
  cluster the command starts (a scheduler in the command, 2 worker
  processes); and, if the CLI has ``--dump``, the same on a dump file
  written once by ``synth.write_dump`` (cached next to the data directory),
  and, if it has ``--audit-dir``, on the same history as audit-table
  exports written once by ``synth.write_audit`` (cached there too).
  ``--only TEXT`` (repeatable) runs only the configurations whose name
  (``MySQL, dask x2, csv``) contains one of the texts.

Every run's wall time, trace rows/s (from the summary line) and peak RSS of
the whole process tree (sampled from /proc every 50 ms) are recorded. The
traces of all runs must be equal (sorted CSV lines; same key and epoch), and
equal to a plain SQL join computed here. Results go to stdout and to
``benchmarks/results-<N>.md`` (``results-<N>-<texts>.md`` with ``--only``).
"""
import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

import mariadb_server  # noqa: E402  (tests/mariadb_server.py)
import pymysql  # noqa: E402
import pymysql.cursors  # noqa: E402

from starcompactor import synth  # noqa: E402
from starcompactor.pipeline import shards  # noqa: E402
from starcompactor.transforms import audit  # noqa: E402
from starcompactor.transforms.schema import SOURCE_TABLES  # noqa: E402

CELLS = ('nova_cell0', 'nova_cell1')
TABLES = ('instances', 'instance_actions', 'instance_actions_events')
EPOCH = '2015-09-01T00:00:00Z'
ORIGINAL = ('original Star Compactor (quoted from the issue): 473k events, '
            '23.1 s, ~20,400 rows/s, 1.33 GB')
MODES = {
    'in_memory': [],
    'multi_processing x2': ['--direct_running_mode=multi_processing',
                            '--direct_num_workers=2'],
    'dask x2': ['--runner', 'DaskRunner', '--dask_workers', '2'],
}
FORMATS = {'csv': ['--formats', 'csv'], 'csv,avro (default)': [],
           'csv,parquet': ['--formats', 'csv,parquet']}


# -- the server ---------------------------------------------------------------

def table_counts(server):
    conn = server.admin()
    try:
        with conn.cursor() as cur:
            out = {}
            for db in CELLS:
                for t in TABLES:
                    for name in (t, 'shadow_' + t):
                        cur.execute(f'SELECT COUNT(*) FROM `{db}`.`{name}`')
                        out[f'{db}.{name}'] = cur.fetchone()[0]
            return out
    finally:
        conn.close()


def ensure_dataset(server, events, seed):
    marker = os.path.join(server.dir, 'dataset.json')
    if os.path.exists(marker):
        with open(marker) as f:
            meta = json.load(f)
        if meta.get('events') == events and meta.get('seed') == seed:
            try:
                if table_counts(server) == meta['counts']:
                    print(f'  reusing the loaded dataset ({meta["summary"]})')
                    return meta
            except pymysql.MySQLError:
                pass
        print('  the cached dataset does not match: reloading')
        os.remove(marker)
    instances = synth.instances_for_events(events, seed=seed)
    print(f'  loading {instances:,} instances (~{events:,} events, '
          f'seed {seed}) ...', flush=True)
    conn = server.admin()
    try:
        result = synth.load_mysql(conn, instances, seed=seed)
    finally:
        conn.close()
    meta = {'events': events, 'seed': seed, 'instances': instances,
            'summary': result.summary('the benchmark server'),
            'load_seconds': round(result.seconds, 1),
            'counts': table_counts(server)}
    with open(marker + '.partial', 'w') as f:
        json.dump(meta, f, indent=1)
    os.replace(marker + '.partial', marker)
    print(f'  {meta["summary"]}')
    return meta


def ensure_dump(path, instances, seed):
    if os.path.exists(path):
        print(f'  reusing the dump {path}')
        return
    print(f'  writing the dump {path} ...', flush=True)
    result = synth.write_dump(path, instances, seed=seed)
    print(f'  {result.summary(path)}')


def ensure_audit(folder, instances, seed):
    """The same history as audit exports, one folder per cell; their
    paths."""
    folders = [os.path.join(folder, cell) for cell in CELLS]
    if all(os.path.exists(os.path.join(f, audit.file_name(table)))
           for f in folders for table in SOURCE_TABLES):
        print(f'  reusing the audit exports {folder}')
        return folders
    print(f'  writing the audit exports {folder} ...', flush=True)
    result = synth.write_audit(folder, instances, seed=seed)
    print(f'  {result.summary(folder)}')
    return folders


# -- measuring ----------------------------------------------------------------

PAGE = os.sysconf('SC_PAGE_SIZE')


def _tree_rss(root):
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', 'rb') as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b')') + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f'/proc/{pid}/statm', 'rb') as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def timed(argv, env=None, stdout=None, interval=0.05):
    """Run argv; return (seconds, peak RSS bytes of its process tree,
    stdout+stderr text or None, exit status)."""
    began = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                            stdout=stdout or subprocess.PIPE,
                            stderr=subprocess.STDOUT if stdout is None
                            else None)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.communicate()[0]
    seconds = time.monotonic() - began
    done.set()
    sampler.join()
    text = out.decode('utf-8', 'replace') if out is not None else None
    return seconds, peak[0], text, proc.returncode


def read_limit(server):
    client = mariadb_server._find('mariadb', 'mysql')
    began = time.monotonic()
    with open(os.devnull, 'wb') as null:
        for db in CELLS:
            for t in TABLES:
                for name in (t, 'shadow_' + t):
                    subprocess.run(
                        [client, '--no-defaults', '--quick', '-B', '-u', 'root',
                         f'--socket={server.socket}',
                         '-e', f'SELECT * FROM `{db}`.`{name}`'],
                        stdout=null, check=True, env=_env())
    return time.monotonic() - began


def _env():
    env = dict(os.environ, MYSQL_PWD='')
    env.pop('STARCOMPACTOR_MASK_KEY', None)
    return env


ROWS = re.compile(r'^([\d,]+) trace rows written', re.M)


def starcompactor():
    exe = os.path.join(os.path.dirname(sys.executable), 'starcompactor')
    return exe if os.path.exists(exe) else shutil.which('starcompactor')


def has_option(option):
    out = subprocess.run([starcompactor(), 'instances', '--help'],
                         capture_output=True, text=True).stdout
    return option in out


# -- correctness --------------------------------------------------------------

def csv_files(prefix):
    return shards.find(prefix, ('csv',))


def trace_digest(prefix):
    """sha256 of the sorted data lines of all CSV shards, and their count."""
    lines = []
    for path in csv_files(prefix):
        with open(path, encoding='utf-8', newline='') as f:
            data = f.read().split('\n')
        lines.extend(line for line in data[1:] if line)
    lines.sort()
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b'\n')
    return h.hexdigest(), len(lines)


def _iso_to_sql(value):
    return value.replace('T', ' ').rstrip('Z') if value else value


def trace_projection(prefix):
    out = Counter()
    for path in csv_files(prefix):
        with open(path, encoding='utf-8', newline='') as f:
            reader = csv.reader(f)
            header = next(reader)
            ix = [header.index(c) for c in (
                'INSTANCE_UUID', 'EVENT', 'START_TIME', 'FINISH_TIME',
                'RESULT', 'MEMORY_MB', 'DISK_GB', 'VCPUS')]
            for row in reader:
                v = [row[i] for i in ix]
                v[2], v[3] = _iso_to_sql(v[2]), _iso_to_sql(v[3])
                out['\x1f'.join(v)] += 1
    return out


REFERENCE = """
SELECT i.uuid, e.event, e.start_time, e.finish_time, e.result,
       i.memory_mb, i.root_gb, i.vcpus
FROM (SELECT action_id, event, start_time, finish_time, result
        FROM instance_actions_events
      UNION ALL
      SELECT action_id, event, start_time, finish_time, result
        FROM shadow_instance_actions_events) e
JOIN (SELECT id, instance_uuid FROM instance_actions
      UNION ALL
      SELECT id, instance_uuid FROM shadow_instance_actions) a
  ON e.action_id = a.id
JOIN (SELECT uuid, memory_mb, root_gb, vcpus FROM instances
      UNION ALL
      SELECT uuid, memory_mb, root_gb, vcpus FROM shadow_instances) i
  ON a.instance_uuid = i.uuid
WHERE e.finish_time IS NOT NULL AND e.start_time IS NOT NULL
"""


def _sql_text(v):
    if v is None:
        return ''
    if isinstance(v, datetime.datetime):
        return v.strftime('%Y-%m-%d %H:%M:%S')
    return str(v)


def reference(server):
    out = Counter()
    for db in CELLS:
        conn = server.admin(db, cursorclass=pymysql.cursors.SSCursor)
        try:
            with conn.cursor() as cur:
                cur.execute(REFERENCE)
                for row in cur:
                    out['\x1f'.join(_sql_text(v) for v in row)] += 1
        finally:
            conn.close()
    return out


# -- the benchmark ------------------------------------------------------------

def machine():
    model = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    with open('/proc/loadavg') as f:
        load = ' '.join(f.read().split()[:3])
    mem = '?'
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemTotal'):
                mem = f'{int(line.split()[1]) / 1024 ** 2:.1f} GB'
    return {'nproc': os.cpu_count(), 'cpu': model, 'load': load, 'mem': mem,
            'python': platform.python_version()}


def versions(server):
    conn = server.admin()
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT VERSION()')
            mariadb = cur.fetchone()[0]
    finally:
        conn.close()
    try:
        import apache_beam
        beam = apache_beam.__version__
    except Exception:  # pragma: no cover
        beam = '?'
    return mariadb, beam


def bench(events, args):
    cache = os.path.expanduser(args.keep_server)
    directory = os.path.join(cache, f'bench-mariadb-{events}-{args.seed}')
    mach = machine()
    print(f'\n== {events:,} events, seed {args.seed}: server in {directory}')
    server = mariadb_server.MariaDBServer(directory=directory).start()
    work = tempfile.mkdtemp(prefix=f'starcompactor-bench-{events}-')
    try:
        meta = ensure_dataset(server, events, args.seed)
        source_rows = sum(meta['counts'].values())
        event_rows = sum(n for k, n in meta['counts'].items()
                         if k.endswith('instance_actions_events'))
        mariadb_version, beam_version = versions(server)
        key = os.path.join(work, 'mask.key')
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as f:
            f.write(b'benchmark-mask-key-0123456789abcdef\n')

        print('  read limit (mariadb client scan of 12 tables) ...',
              flush=True)
        read_limit(server)  # warm the buffer pool; not counted
        limits = [read_limit(server) for _ in range(args.repeat)]
        limit = statistics.median(limits)
        print(f'    {", ".join(f"{s:.2f}" for s in limits)} s -> '
              f'median {limit:.2f} s')

        cells = ['--databases', ','.join(CELLS)]
        sources = [('MySQL', ['--mysql-host', '127.0.0.1',
                              '--mysql-port', str(server.port),
                              '--mysql-user', 'root', *cells])]
        if has_option('--dump'):
            dump = os.path.join(cache, f'bench-dump-{events}-{args.seed}.sql')
            ensure_dump(dump, meta['instances'], args.seed)
            sources.append(('dump', ['--dump', dump, *cells]))
        else:
            print('  (starcompactor instances has no --dump: dump source '
                  'not measured)')
        if has_option('--audit-dir'):
            folders = ensure_audit(
                os.path.join(cache, f'bench-audit-{events}-{args.seed}'),
                meta['instances'], args.seed)
            sources.append(('audit exports', [
                a for folder in folders for a in ('--audit-dir', folder)]))

        rows, digests = [], {}
        for source, source_args in sources:
            for mode, mode_args in MODES.items():
                for formats, format_args in FORMATS.items():
                    name = f'{source}, {mode}, {formats}'
                    if args.only and not any(text.lower() in name.lower()
                                             for text in args.only):
                        continue
                    out = os.path.join(
                        work, re.sub(r'[^a-z0-9]+', '-', name.lower()),
                        'trace')
                    os.makedirs(os.path.dirname(out))
                    argv = [starcompactor(), 'instances', *source_args,
                            '--output', out, '--overwrite',
                            '--mask-key-file', key, '--epoch', EPOCH,
                            *format_args, *mode_args]
                    runs = []
                    for _ in range(args.repeat):
                        seconds, peak, text, status = timed(argv, env=_env())
                        if status != 0:
                            print(f'  {name}: FAILED (exit {status})\n{text}')
                            runs = None
                            break
                        m = ROWS.search(text)
                        runs.append((seconds, peak,
                                     int(m.group(1).replace(',', ''))
                                     if m else None))
                        print(f'  {name}: {seconds:.1f} s, '
                              f'{peak / 2 ** 20:,.0f} MB', flush=True)
                    if runs is None:
                        rows.append((source, mode, formats, None))
                        continue
                    wall = statistics.median(r[0] for r in runs)
                    peak = max(r[1] for r in runs)
                    trace_rows = runs[-1][2]
                    rows.append((source, mode, formats,
                                 (wall, trace_rows, peak, runs)))
                    digests[name] = (trace_digest(out), out)

        # correctness
        print('  checking the traces ...', flush=True)
        distinct = {d for d, _ in digests.values()}
        same = len(distinct) == 1
        ref = reference(server)
        first_out = next(iter(digests.values()))[1] if digests else None
        got = trace_projection(first_out) if first_out else Counter()
        ref_ok = got == ref
        if not ref_ok:
            missing, extra = ref - got, got - ref
            print(f'  reference: {sum(ref.values()):,} rows, trace '
                  f'{sum(got.values()):,}; missing {sum(missing.values()):,}'
                  f' e.g. {list(missing)[:3]}; extra '
                  f'{sum(extra.values()):,} e.g. {list(extra)[:3]}')
        failed = [r for r in rows if r[3] is None]
        verdict = ('OK' if same and ref_ok and not failed else 'MISMATCH')
        check = (f'{verdict}: {len(digests)} traces '
                 f'{"identical" if same else "DIFFER"} '
                 f'({next(iter(distinct))[1]:,} rows, sorted-CSV sha256 '
                 f'{next(iter(distinct))[0][:12]}); '
                 f'SQL reference join ({sum(ref.values()):,} rows) '
                 f'{"equal" if ref_ok else "NOT equal"}'
                 + (f'; {len(failed)} configurations FAILED' if failed
                    else '')) if digests else 'MISMATCH: no trace'
        print(f'  correctness: {check}')

        report = render(events, args, meta, mach, limit, limits, source_rows,
                        event_rows, rows, check, mariadb_version,
                        beam_version)
        print()
        print(report)
        only = ''.join(f'-{re.sub(r"[^a-z0-9]+", "-", text.lower())}'
                       for text in args.only or ())
        path = os.path.join(HERE, f'results-{events}{only}.md')
        with open(path, 'w') as f:
            f.write(report)
        print(f'written to {path}')
        return verdict == 'OK'
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def render(events, args, meta, mach, limit, limits, source_rows, event_rows,
           rows, check, mariadb_version, beam_version):
    lines = [
        f'# starcompactor benchmark: {events:,} events',
        '',
        f'Command: `python benchmarks/run.py --events {events} '
        f'--repeat {args.repeat} --seed {args.seed}'
        + ''.join(f' --only "{text}"' for text in args.only or ()) + '`  ',
        f'Dataset: {meta["summary"].split(" at ")[0]} '
        f'(seed {args.seed}; {source_rows:,} source rows in 12 tables, '
        f'{event_rows:,} events)  ',
        f'Machine: {mach["nproc"]} CPUs ({mach["cpu"]}), {mach["mem"]} RAM, '
        f'load average at start {mach["load"]}; MariaDB {mariadb_version} '
        f'(throwaway, 512 MB buffer pool, socket/loopback), Python '
        f'{mach["python"]}, Apache Beam {beam_version}  ',
        f'Median of {args.repeat} runs; peak RSS is the whole process tree '
        f'(sum over the command and all its descendants, sampled every '
        f'50 ms), max over the runs. Rows/s = trace rows / wall time.',
        '',
        '| events | source | runner mode | formats | wall s (median) '
        '| trace rows/s | peak RSS MB | x read limit |',
        '|---:|---|---|---|---:|---:|---:|---:|',
        f'| {events:,} | read limit: `mariadb --quick -B` scan of 12 tables '
        f'({source_rows:,} rows) | - | - | {limit:.2f} '
        f'| ({source_rows / limit:,.0f} source rows/s) | - | 1.00 |',
    ]
    for source, mode, formats, res in rows:
        if res is None:
            lines.append(f'| {events:,} | {source} | {mode} | {formats} '
                         f'| FAILED | | | |')
            continue
        wall, trace_rows, peak, _ = res
        rate = f'{trace_rows / wall:,.0f}' if trace_rows else '?'
        lines.append(f'| {events:,} | {source} | {mode} | {formats} '
                     f'| {wall:.1f} | {rate} | {peak / 2 ** 20:,.0f} '
                     f'| {wall / limit:.1f} |')
    lines += [
        '| 473k | original Star Compactor (quoted from the issue) | | '
        '| 23.1 | ~20,400 | 1,330 (1.33 GB) | |',
        '',
        f'> {ORIGINAL}',
        '',
        f'Correctness: {check}',
        '',
        'Per-run wall times (s): read limit '
        + ', '.join(f'{s:.2f}' for s in limits) + '; '
        + '; '.join(f'{s}/{m}/{f} '
                    + ', '.join(f'{r[0]:.1f}' for r in res[3])
                    for s, m, f, res in rows if res is not None),
        '',
    ]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark starcompactor instances on a throwaway '
                    'MariaDB loaded with a synthetic Nova history.')
    parser.add_argument('--events', type=int, action='append',
                        help='about this many events (live + shadow); '
                             'repeatable (default: 500000)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per measurement; medians are reported')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--keep-server', metavar='DIR',
                        default='~/.cache/starcompactor',
                        help='where the loaded servers are kept, as '
                             'DIR/bench-mariadb-<events>-<seed> (default: '
                             '%(default)s)')
    parser.add_argument('--only', metavar='TEXT', action='append',
                        help='only the configurations whose name contains '
                             'TEXT, e.g. "dask" or "MySQL, in_memory"; '
                             'repeatable')
    args = parser.parse_args(argv)
    ok = True
    for events in args.events or [500000]:
        ok = bench(events, args) and ok
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
