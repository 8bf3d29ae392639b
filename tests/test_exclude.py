"""--exclude-users and --exclude-projects: the instances an operator wants
out of a published trace leave it, with their actions and events, and are
counted under excluded_user / excluded_project; nothing is left out without
them. Real MariaDB with Nova's schema, real pipelines, and a real dump of
the same databases.

What each run must give is worked out here, row by row, from the fixture
rows themselves (``expected``), not by the code under test.
"""
import gzip
import json
import logging
import shutil
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from helpers import insert, job_args, read_csv, run_job, write_key_file
from starcompactor.pipeline import instances
from starcompactor.pipeline.cli import DEMO_DUMP
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.hosts import HostsJob
from starcompactor.pipeline.instances import InstancesJob
from starcompactor.pipeline.times import parse_iso_utc, to_seconds

# Raw ids as Keystone makes them: distinctive enough that finding one in an
# output or a log line means it leaked.
ADMIN = 'ad5e1f00c0ffee00000000000000a001'
ADMIN_PROJECT = 'ad5e1f00c0ffee00000000000000b001'
CAROL = 'ca401000c0ffee00000000000000a003'
ALICE, BOB = 'alice', 'bob'
PHYSICS, BIO = 'proj-physics', 'proj-bio'

# (user_id, project_id, what happened to the instance)
#   full: a create (2 finished events), a reboot (1 finished, 1 running)
#         and a stop without events;
#   running: only an event still running; idle: no action at all.
OWNERS = [
    (ADMIN, ADMIN_PROJECT, 'full'),  # first: it holds the earliest event
    (ADMIN, PHYSICS, 'full'),
    (ALICE, ADMIN_PROJECT, 'full'),
    (ALICE, PHYSICS, 'full'),
    (BOB, BIO, 'full'),
    (CAROL, BIO, 'full'),
    (None, BIO, 'full'),             # a NULL user is never excluded
    (ADMIN, BIO, 'running'),
    (ADMIN, ADMIN_PROJECT, 'idle'),
]
MISSING_UUID = 'ffffffff-0000-4000-8000-0000000000ff'


def _time(cell, instance, minutes):
    return (f'2020-0{cell + 1}-{instance + 1:02d} '
            f'{minutes // 60:02d}:{minutes % 60:02d}:00')


def history(cell):
    """The rows of one cell database, ``{table: [row, ...]}``; odd
    instances (and their actions and events) archived to shadow_ tables.
    Ids repeat across cells, as in Nova."""
    rows = {}

    def add(table, instance, row):
        archived = instance is not None and instance % 2 == 1
        rows.setdefault(('shadow_' if archived else '') + table,
                        []).append(row)

    action_ids, event_ids = iter(range(1, 1000)), iter(range(1, 1000))

    def action(instance, uuid, name, events):
        action_id = next(action_ids)
        add('instance_actions', instance, dict(
            id=action_id, action=name, instance_uuid=uuid,
            start_time=_time(cell, instance or 0, 0)))
        for event, start, finish in events:
            add('instance_actions_events', instance, dict(
                id=next(event_ids), action_id=action_id, event=event,
                start_time=_time(cell, instance or 0, start),
                finish_time=(_time(cell, instance or 0, finish)
                             if finish is not None else None),
                result='Success' if finish is not None else None))

    for i, (user, project, story) in enumerate(OWNERS):
        uuid = f'{cell:08x}-0000-4000-8000-{i:012x}'
        add('instances', i, dict(
            id=i + 1, uuid=uuid, user_id=user, project_id=project,
            hostname=f'vm-{cell}-{i}', host=f'compute-{i % 3}',
            memory_mb=2048, root_gb=20, vcpus=2,
            created_at=_time(cell, i, 0), deleted=0))
        if story == 'full':
            action(i, uuid, 'create', [('schedule', 1, 2), ('build', 3, 9)])
            action(i, uuid, 'reboot', [('reboot', 20, 21),
                                       ('reboot_more', 22, None)])
            action(i, uuid, 'stop', [])
        elif story == 'running':
            action(i, uuid, 'create', [('build', 1, None)])
    # Orphans: an action whose instance is missing, an event without action.
    action(None, MISSING_UUID, 'create', [('build', 5, 6)])
    add('instance_actions_events', None, dict(
        id=next(event_ids), action_id=999, event='reboot',
        start_time=_time(cell, 0, 7), finish_time=_time(cell, 0, 8),
        result='Success'))
    return rows


def expected(cells, users=(), projects=()):
    """What the trace of ``cells`` (``[(name, history), ...]``) must be:
    its rows as ``(uuid, event, START_TIME)``, and per table the rows read,
    in the trace and left out by reason, each row under the first reason
    that applies in the order the README gives."""
    counts = {t: {'read': 0, 'in_trace': 0, 'left_out': {}}
              for t in ('instances', 'actions', 'events')}
    trace = set()

    def count(table, reason):
        if reason is None:
            counts[table]['in_trace'] += 1
        else:
            left_out = counts[table]['left_out']
            left_out[reason] = left_out.get(reason, 0) + 1

    def excluded(instance):
        if instance['user_id'] in users:
            return 'excluded_user'
        if instance['project_id'] in projects:
            return 'excluded_project'
        return None

    for db, rows in cells:
        def every(table):
            return rows.get(table, []) + rows.get('shadow_' + table, [])
        instance_rows = {i['uuid']: i for i in every('instances')}
        actions = {a['id']: a for a in every('instance_actions')}
        events = every('instance_actions_events')
        for table, source in (('instances', instance_rows),
                              ('actions', actions), ('events', events)):
            counts[table]['read'] += len(source)

        finished_by_action = {}
        for event in events:
            action = actions.get(event['action_id'])
            instance = action and instance_rows.get(action['instance_uuid'])
            if event['finish_time'] is None:
                reason = 'unfinished'
            elif action is None:
                reason = 'no_action'
            else:
                finished_by_action.setdefault(action['id'], True)
                reason = ('no_instance' if instance is None
                          else excluded(instance))
            count('events', reason)
            if reason is None:
                trace.add((instance['uuid'], event['event'],
                           event['start_time'].replace(' ', 'T') + 'Z'))

        joined = set()   # uuids of instances with events that found them
        for action in actions.values():
            instance = instance_rows.get(action['instance_uuid'])
            if action['id'] not in finished_by_action:
                reason = 'no_finished_events'
            elif instance is None:
                reason = 'no_instance'
            else:
                joined.add(instance['uuid'])
                reason = excluded(instance)
            count('actions', reason)
        for uuid, instance in instance_rows.items():
            count('instances', excluded(instance) if uuid in joined
                  else 'no_finished_events')
    return trace, counts


@pytest.fixture
def cells(mariadb, nova_db):
    """Two cell databases holding ``history``; ``[(name, history)]``."""
    made = []
    for cell in range(2):
        name, rows = nova_db(f'excl{cell}'), history(cell)
        with mariadb.admin() as admin:
            for table, table_rows in rows.items():
                insert(admin, name, table, table_rows)
        made.append((name, rows))
    return made


def _trace_rows(prefix):
    _, rows = read_csv(prefix)
    return {(row[0], row[1], row[2]) for row in rows}


def _earliest_start(trace):
    """The default epoch of a trace of these rows: the earliest start
    among the rows kept, not among the excluded ones (the first instance
    of each cell has the earliest)."""
    return min(to_seconds(parse_iso_utc(start, 'start'))
               for _, _, start in trace)


# case: (options, users excluded, projects excluded)
CASES = {
    'nothing': ([], set(), set()),
    'user': (['--exclude-users', ADMIN], {ADMIN}, set()),
    'project': (['--exclude-projects', ADMIN_PROJECT], set(),
                {ADMIN_PROJECT}),
    'users_and_project': (['--exclude-users', f'{ADMIN}, {CAROL}',
                           '--exclude-projects', ADMIN_PROJECT],
                          {ADMIN, CAROL}, {ADMIN_PROJECT}),
}


@pytest.mark.parametrize('case', CASES)
def test_excluded_instances_leave_the_trace_counted_by_reason(
        mariadb, password_file, cells, tmp_path, case):
    options, users, projects = CASES[case]
    out = tmp_path / 'trace'
    summary = run_job(job_args(mariadb, password_file,
                               [name for name, _ in cells], out,
                               '--formats', 'csv', *options))

    want_trace, want_counts = expected(cells, users, projects)
    assert _trace_rows(out) == want_trace
    assert summary.trace_rows == len(want_trace)
    for table, want in want_counts.items():
        count = summary.tables[table]
        assert (count.read, count.in_trace) == (want['read'],
                                                want['in_trace']), table
        assert summary.rejects(table) == want['left_out'], table
        assert count.balanced, table
    assert summary.epoch == _earliest_start(want_trace)

    everything, _ = expected(cells)
    owners = {f'{cell:08x}-0000-4000-8000-{i:012x}': (user, project)
              for cell in range(2) for i, (user, project, _) in
              enumerate(OWNERS)}
    kept = {row for row in everything
            if owners[row[0]][0] not in users
            and owners[row[0]][1] not in projects}
    assert want_trace == kept               # every other row is present
    if case == 'nothing':
        assert any(owners[uuid] == (ADMIN, ADMIN_PROJECT)
                   for uuid, _, _ in want_trace)   # admin rows present
        assert not any(reason.startswith('excluded')
                       for table in want_counts.values()
                       for reason in table['left_out'])
    else:
        assert len(kept) < len(everything)
        for table in ('instances', 'actions', 'events'):
            assert set(want_counts[table]['left_out']) & {
                'excluded_user', 'excluded_project'}, table


def test_a_dump_run_shows_the_exclusions_in_summary_and_manifest(
        mariadb, cells, tmp_path, capsys, caplog):
    """The whole command (balance and leak checks, manifest) on a real
    dump of the same databases; the raw ids given stay out of every
    output and log line."""
    caplog.set_level(logging.INFO, logger='starcompactor')
    dumper = shutil.which('mariadb-dump') or shutil.which('mysqldump')
    dumped = subprocess.run([dumper, f'--socket={mariadb.socket}',
                             '--user=root', '--databases',
                             *[name for name, _ in cells]],
                            stdout=subprocess.PIPE, check=True).stdout
    dump = tmp_path / 'nova.sql.gz'
    dump.write_bytes(gzip.compress(dumped))
    out = tmp_path / 'trace'
    key = write_key_file(tmp_path / 'key', b'exclude-test-key-0123456789abcd')

    instances.run([
        '--dump', str(dump), '--output', str(out),
        '--formats', 'csv,jsonl', '--mask-key-file', key,
        '--exclude-users', ADMIN, '--exclude-projects', ADMIN_PROJECT])

    want_trace, want_counts = expected(cells, {ADMIN}, {ADMIN_PROJECT})
    assert _trace_rows(out) == want_trace
    manifest_text = (tmp_path / 'trace.manifest.json').read_text()
    manifest = json.loads(manifest_text)
    assert manifest['trace_rows'] == len(want_trace)
    assert manifest['source_rows'] == want_counts
    assert manifest['epoch_sec'] == _earliest_start(want_trace)
    assert manifest['excluded'] == {'users': 1, 'projects': 1}

    printed = capsys.readouterr()
    for table, want in want_counts.items():
        line = next(line for line in printed.out.splitlines()
                    if line.strip().startswith(table))
        for reason in ('excluded_user', 'excluded_project'):
            assert f'{reason} {want["left_out"][reason]:,}' in line, line
    assert ('leaving out the instances of the ids given to --exclude-users '
            '(1) and --exclude-projects (1)') in caplog.text

    outputs = [manifest_text, printed.out, printed.err, caplog.text] + [
        path.read_text() for path in tmp_path.glob('trace-*')]
    for raw in (ADMIN, ADMIN_PROJECT):
        assert not any(raw in text for text in outputs)


def _job(*extra, job=InstancesJob, tmp_path):
    return job(PipelineOptions(['--dump', DEMO_DUMP, '--output',
                                str(tmp_path / 'trace'), *extra]))


@pytest.mark.parametrize('option', ['--exclude-users', '--exclude-projects'])
@pytest.mark.parametrize('value', ['', ' ', f'{ADMIN},,{CAROL}',
                                   f'{ADMIN},', f', {ADMIN}'])
def test_an_empty_entry_is_a_user_error_that_repeats_no_value(
        option, value, tmp_path):
    with pytest.raises(UserError) as error:
        _job(option, value, tmp_path=tmp_path)
    assert str(error.value) == (f'{option} takes comma-separated ids, none '
                                f'of them empty (e.g. {option} ID1,ID2)')


def test_the_values_are_parsed_trimmed_and_once(tmp_path):
    job = _job('--exclude-users', f' {ADMIN} ,{CAROL},{ADMIN}',
               tmp_path=tmp_path)
    assert job.spec.exclude.users == (ADMIN, CAROL)
    assert job.spec.exclude.projects == ()
    # Its repr (in a log or an error, should one show it) holds no value.
    assert ADMIN not in repr(job.spec)
    assert _job(tmp_path=tmp_path).spec.exclude.users == ()


def test_the_command_refuses_an_option_given_without_values(tmp_path):
    run = subprocess.run(
        [sys.executable, '-m', 'starcompactor', 'instances', '--dump',
         DEMO_DUMP, '--output', str(tmp_path / 'trace'),
         '--exclude-projects'],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        'starcompactor: error: --exclude-projects takes comma-separated '
        'ids, none of them empty (e.g. --exclude-projects ID1,ID2)']
    assert list(tmp_path.iterdir()) == []


def test_the_host_table_refuses_the_options(tmp_path):
    with pytest.raises(UserError, match='the host table has none'):
        _job('--exclude-users', ADMIN, job=HostsJob, tmp_path=tmp_path)
