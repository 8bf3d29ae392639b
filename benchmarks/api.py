#!/usr/bin/env python3
"""Benchmark of ``starcompactor instances --api`` against a loopback cloud.

    python benchmarks/api.py [--instances 2000] [--latency-ms 20]
                             [--repeat 3] [--seed 0]
                             [--concurrency 8 ...] [--workers 1 ...]

Loads a synthetic two-cell Nova history of ``--instances`` instances
(``synth.load_mysql``) into a private, throwaway MariaDB
(``tests/mariadb_server.py``) and serves its live tables through the
loopback Keystone v3 + Nova compute API of ``tests/nova_api``, which adds
``--latency-ms`` to every request. Then, ``--repeat`` times each (medians
reported):

* the **sequential baseline**, as the original Star Compactor read the API
  (implemented here): a keystoneauth session, servers listed 25 at a time
  (live, then deleted), then one request at a time, each server's actions
  and each action's events; it only collects the finished events, it writes
  nothing;
* the whole ``starcompactor instances --api`` command (``--formats csv``,
  credentials in the OS_* environment), at each ``--concurrency`` (default
  8, the command's default) and, with ``--workers 2``, also on the
  DirectRunner's multi_processing mode with that many worker processes.

Each with its wall time and the HTTP requests the cloud answered (Keystone
included). The trace rows of every run must equal the finished events the
baseline found. Results go to stdout and ``benchmarks/results-api.md``.
"""
import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

import mariadb_server  # noqa: E402  (tests/mariadb_server.py)
from keystoneauth1 import adapter, loading, session  # noqa: E402
from nova_api import NovaApiServer  # noqa: E402  (tests/nova_api)

from starcompactor import synth  # noqa: E402

CELLS = ('nova_cell0', 'nova_cell1')
EPOCH = '2015-09-01T00:00:00Z'
BASELINE_PAGE = 25


def sequential_baseline(env):
    """The finished events of every server, one request at a time."""
    auth = loading.get_plugin_loader('password').load_from_options(
        auth_url=env['OS_AUTH_URL'], username=env['OS_USERNAME'],
        password=env['OS_PASSWORD'], project_name=env['OS_PROJECT_NAME'],
        user_domain_name=env['OS_USER_DOMAIN_NAME'],
        project_domain_name=env['OS_PROJECT_DOMAIN_NAME'])
    compute = adapter.Adapter(session.Session(auth=auth),
                              service_type='compute',
                              region_name=env['OS_REGION_NAME'],
                              default_microversion='2.21')
    finished = 0
    for deleted in (False, True):
        marker = None
        while True:
            params = {'all_tenants': 'True', 'limit': BASELINE_PAGE}
            if deleted:
                params['deleted'] = 'True'
            if marker:
                params['marker'] = marker
            servers = compute.get('servers/detail',
                                  params=params).json()['servers']
            for server in servers:
                actions = compute.get(
                    f'servers/{server["id"]}/os-instance-actions').json()
                for action in actions['instanceActions']:
                    detail = compute.get(
                        f'servers/{server["id"]}/os-instance-actions/'
                        f'{action["request_id"]}').json()['instanceAction']
                    finished += sum(1 for e in detail.get('events', ())
                                    if e['finish_time'])
            if len(servers) < BASELINE_PAGE:
                break
            marker = servers[-1]['id']
    return finished


def trace_rows(stdout):
    match = re.search(r'([\d,]+) trace rows written', stdout)
    return int(match.group(1).replace(',', '')) if match else None


def run_command(env, output, key_file, concurrency, workers):
    argv = [sys.executable, '-m', 'starcompactor', 'instances', '--api',
            '--output', output, '--overwrite', '--formats', 'csv',
            '--mask-key-file', key_file, '--epoch', EPOCH,
            '--api-concurrency', str(concurrency)]
    if workers > 1:
        argv += ['--direct_running_mode', 'multi_processing',
                 '--direct_num_workers', str(workers)]
    run = subprocess.run(argv, env=env, capture_output=True, text=True)
    if run.returncode:
        sys.exit(f'--api run failed:\n{run.stderr}')
    return trace_rows(run.stdout)


def measured(server, what, repeat):
    """``what()`` run ``repeat`` times: [(seconds, requests, result)]."""
    runs = []
    for _ in range(repeat):
        before = sum(server.requests.values())
        began = time.monotonic()
        result = what()
        runs.append((time.monotonic() - began,
                     sum(server.requests.values()) - before, result))
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--instances', type=int, default=2000)
    parser.add_argument('--latency-ms', type=float, default=20.0)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--concurrency', type=int, action='append')
    parser.add_argument('--workers', type=int, action='append')
    args = parser.parse_args(argv)
    concurrencies = args.concurrency or [8]
    workers = sorted(set([1] + (args.workers or [])))

    database = mariadb_server.start_server()
    tmp = tempfile.mkdtemp(prefix='starcompactor-bench-api-')
    try:
        with database.admin() as admin:
            loaded = synth.load_mysql(admin, args.instances, seed=args.seed,
                                      cells=CELLS)
        with database.admin() as admin:
            cloud = NovaApiServer.from_mysql(
                admin, list(CELLS), latency_s=args.latency_ms / 1000)
        cloud.start()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        env.update(cloud.admin_env())
        key_file = os.path.join(tmp, 'key')
        with open(key_file, 'wb') as f:
            f.write(b'benchmark-key-0123456789abcdef!!')

        results = [('sequential baseline (25 servers a page, one request '
                    'at a time)', measured(
                        cloud, lambda: sequential_baseline(env),
                        args.repeat))]
        for concurrency in concurrencies:
            for n in workers:
                mode = 'in_memory' if n == 1 else f'multi_processing x{n}'
                results.append((
                    f'`--api`, --api-concurrency {concurrency}, DirectRunner '
                    f'{mode}', measured(cloud, lambda: run_command(
                        env, os.path.join(tmp, 'trace'), key_file,
                        concurrency, n), args.repeat)))
        cloud.stop()
    finally:
        database.stop()

    finished = {result for _, runs in results for _, _, result in runs}
    baseline = statistics.median(s for s, _, _ in results[0][1])
    lines = [
        f'# `--api` benchmark ({datetime.date.today()})', '',
        f'{args.instances:,} instances (seed {args.seed}; live tables: '
        f'{loaded.total("instances", False):,} instances, '
        f'{loaded.total("instance_actions", False):,} actions, '
        f'{loaded.total("instance_actions_events", False):,} events), served '
        f'by the loopback Keystone + Nova of tests/nova_api with '
        f'{args.latency_ms:g} ms added to every request; '
        f'{platform.processor() or platform.machine()}, {os.cpu_count()} '
        f'cores. Medians of {args.repeat}.', '',
        '| reader | wall s | requests | x baseline | every run (s) |',
        '|---|---:|---:|---:|---|']
    for name, runs in results:
        seconds = statistics.median(s for s, _, _ in runs)
        requests = statistics.median(r for _, r, _ in runs)
        lines.append(f'| {name} | {seconds:.1f} | {requests:,.0f} | '
                     f'{baseline / seconds:.1f} | '
                     f'{", ".join(f"{s:.1f}" for s, _, _ in runs)} |')
    lines += ['', f'Finished events (baseline) = trace rows (`--api`): '
                  f'{"OK" if len(finished) == 1 else "DIFFER"} '
                  f'({", ".join(map(str, sorted(finished)))})']
    text = '\n'.join(lines) + '\n'
    print(text)
    with open(os.path.join(HERE, 'results-api.md'), 'w') as f:
        f.write(text)
    return 0 if len(finished) == 1 else 1


if __name__ == '__main__':
    sys.exit(main())
