"""``starcompactor instances --follow`` against a real MariaDB with Nova's
schema: the command in a child process, as users run it (it runs on Prism,
to which Beam's DirectRunner hands streaming pipelines; a DirectRunner
pipeline of the test process never shares a process with it), while Nova
writes in a thread of the test: instances built, events inserted when they
start and updated when they finish, instances deleted and archived to the
``shadow_`` tables, inserts committed after later ones.

What a followed trace must be: the union of its window files equals the
batch trace of the final database (``helpers.run_job``, same key, same
epoch) row for row, with no row twice, each row in the window of its finish
time; a restart from ``--state`` changes nothing; a batch trace and a
follow from its cut together are the batch trace of the whole span.
"""
import csv
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import golden
from conftest import READER
from datasets import cells_with_archive
from helpers import insert, job_args, read_csv, run_job, write_key_file
from starcompactor.pipeline import shards
from starcompactor.pipeline.follow import note_stop
from starcompactor.pipeline.sources.poll import (
    joined_up, missing, settled, without)
from starcompactor.transforms import mask
from starcompactor.transforms.schema import CSV_HEADER, TRACE_FIELDS

GOLDEN_EPOCH = '2016-03-01T12:00:01Z'   # golden.EXPECTED_CSV counts from it
RUN_TIMEOUT_S = 180
FINISH_TIME = CSV_HEADER.index('FINISH_TIME')
NUMBERS = {'start_sec', 'finish_sec', 'event_duration', 'memory_mb',
           'disk_gb', 'vcpus'}


@pytest.fixture
def key_file(tmp_path):
    return write_key_file(tmp_path / 'key', golden.GOLDEN_KEY + b'\n')


# --------------------------------------------------------------------------
# Running the command

def _environment():
    """This process's environment, without secrets: the child gets the
    password and the key from files only."""
    return {k: v for k, v in os.environ.items()
            if k not in ('MYSQL_PWD', mask.KEY_ENV)}


def follow_args(server, password_file, databases, out, state, key_file,
                *extra, epoch=GOLDEN_EPOCH):
    return ['instances', '--follow',
            '--mysql-host', server.host, '--mysql-port', str(server.port),
            '--mysql-user', READER, '--mysql-password-file', password_file,
            '--databases', ','.join(databases), '--output', str(out),
            '--state', str(state), '--mask-key-file', key_file,
            '--epoch', epoch, '--formats', 'csv,avro,jsonl', *extra]


def start(args):
    """The command, started as a shell starts a command in the foreground.
    A test run started in the background (a shell's ``&`` without job
    control) has Ctrl-C ignored, which its children inherit, and Python
    then leaves it ignored: the command would never see the Ctrl-C a test
    sends (issue 18's Ctrl-C "hang" was that). A handler set here is reset
    to the default in the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, '-m', 'starcompactor', *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_environment(), start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def finished(proc, timeout=RUN_TIMEOUT_S):
    """The run's CompletedProcess; fails the test if it did not end well
    or left a process of its session behind."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail(f'starcompactor ran over {timeout} s', pytrace=False)
    assert proc.returncode == 0, stderr[-3000:]
    assert 'Traceback' not in stderr
    _no_process_left(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                       stderr)


def _no_process_left(proc):
    """Prism and the rest of the run's session end with it (Beam stops
    Prism when the command exits)."""
    deadline = time.monotonic() + 10
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _session_processes(proc.pid)


def follow(args, timeout=RUN_TIMEOUT_S):
    return finished(start(args), timeout)


def fails(args):
    """A run that must stop at once with one line: (exit status, line)."""
    proc = subprocess.run([sys.executable, '-m', 'starcompactor', *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=_environment(), timeout=120)
    lines = [line for line in proc.stderr.splitlines()
             if 'apitools' not in line]
    assert len(lines) == 1, proc.stderr
    return proc.returncode, lines[0]


def _session_processes(sid):
    out = subprocess.run(['ps', '-eo', 'pid=,sid='], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.split()[1] == str(sid) and line.split()[0] != str(sid)]


# --------------------------------------------------------------------------
# Reading what it wrote

def _window_of(path, window):
    name = os.path.basename(path).split('-')[0]
    begins = dt.datetime.strptime(name, '%Y%m%dT%H%M%SZ').replace(
        tzinfo=dt.timezone.utc)
    return begins.timestamp(), begins.timestamp() + window


def _seconds(iso):
    return dt.datetime.strptime(iso, '%Y-%m-%dT%H:%M:%SZ').replace(
        tzinfo=dt.timezone.utc).timestamp()


def _record(row):
    """A CSV row as its Avro / JSON-lines record (no dataset here has an
    empty string: an empty field is a null)."""
    return {field: None if value == '' else
            int(value) if field in NUMBERS else value
            for field, value in zip(TRACE_FIELDS, row)}


def read_csv_file(path):
    with open(path, newline='', encoding='utf-8') as f:
        header, *rows = csv.reader(f)
    return header, [tuple(row) for row in rows]


def window_rows(out, window):
    """Every CSV row of the window files, sorted; checks on the way that
    each file has the header, each row lies in its file's window, and the
    Avro and JSON-lines files hold the same rows."""
    rows, records = [], {'avro': [], 'jsonl': []}
    for _, path in shards.window_files(str(out)):
        fmt = shards.file_format(path)
        if fmt != 'csv':
            records[fmt] += list(shards.records(path))
            continue
        header, found = read_csv_file(path)
        assert header == CSV_HEADER, path
        first, end = _window_of(path, window)
        for row in found:
            assert first <= _seconds(row[FINISH_TIME]) < end, (path, row)
        rows += found
    rows.sort()
    expected = sorted(map(_record, rows), key=repr)
    for fmt, found in records.items():
        assert sorted(found, key=repr) == expected, fmt
    return rows


def batch_rows(server, password_file, databases, tmp_path, key_file,
               epoch=GOLDEN_EPOCH, now=None):
    out = tmp_path / f'batch-{uuid.uuid4().hex[:6]}'
    run_job(job_args(server, password_file, databases, out, '--formats',
                     'csv', '--mask-key-file', key_file, '--epoch', epoch),
            now=now)
    _, rows = read_csv(out)
    return rows


def window_manifests(out, window, rows, key=golden.GOLDEN_KEY,
                     epoch=GOLDEN_EPOCH):
    """Each window's manifest, ``{window start: manifest}``, checked against
    the window's files, read here: one manifest per window with files,
    listing them with their rows and sha256; the rows of every format are
    the window's rows, ``rows`` in all; the key by its fingerprint."""
    files = {}
    for begins, path in shards.window_files(str(out)):
        files.setdefault(begins, []).append(path)
    manifests = {}
    for begins, path in shards.window_manifests(str(out)):
        with open(path, encoding='utf-8') as f:
            manifests[begins] = json.load(f)
    assert sorted(manifests) == sorted(files)
    fingerprint = hmac.new(key, b'starcompactor key fingerprint v1',
                           hashlib.sha256).hexdigest()[:16]
    for begins, paths in files.items():
        manifest = manifests[begins]
        assert manifest['window'] == {
            'start': iso_of(begins), 'end': iso_of(begins + window),
            'start_sec': begins, 'seconds': window}
        assert sorted(shard['file'] for shard in manifest['shards']) == \
            sorted(os.path.basename(path) for path in paths)
        for path in paths:
            shard, = [shard for shard in manifest['shards']
                      if shard['file'] == os.path.basename(path)]
            with open(path, 'rb') as f:
                assert shard['sha256'] == hashlib.sha256(f.read()).hexdigest()
            assert shard['rows'] == len(list(shards.records(path))) == \
                manifest['trace_rows']
        assert (manifest['epoch'], manifest['trace_format'],
                manifest['formats'], manifest['masking']['key_fingerprint'],
                manifest['leak_check']) == (
            epoch, 'v0.2', ['csv', 'avro', 'jsonl'], fingerprint, 'sampled')
    assert sum(m['trace_rows'] for m in manifests.values()) == rows
    return manifests


def saved_state(state):
    with open(state / 'state.json', encoding='utf-8') as f:
        return json.load(f)


def wait_for_state(proc, state):
    """Until the running command has saved a state with a final window."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (os.path.exists(state / 'state.json') and
               saved_state(state)['final_until']):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    return saved_state(state)


def now_text():
    return time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())


def iso_of(seconds):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(seconds))


# --------------------------------------------------------------------------
# Nova at work

ARCHIVED_TABLES = ('instance_actions_events', 'instance_actions',
                   'instances')


def archive(connection, database, uuids):
    """``nova-manage db archive_deleted_rows`` for these instances: their
    events, actions and the instances moved to the shadow_ tables with
    their ids, one table per transaction, as Nova does."""
    marks = ', '.join(['%s'] * len(uuids))
    where = {
        'instance_actions_events': (
            f'action_id IN (SELECT id FROM `{database}`.instance_actions '
            f'WHERE instance_uuid IN ({marks}))'),
        'instance_actions': f'instance_uuid IN ({marks})',
        'instances': f'uuid IN ({marks})',
    }
    with connection.cursor() as cursor:
        for table in ARCHIVED_TABLES:
            cursor.execute(
                'SELECT column_name FROM information_schema.columns WHERE '
                'table_schema = %s AND table_name = %s', (database, table))
            columns = ', '.join(f'`{name}`' for name, in cursor.fetchall())
            connection.begin()
            cursor.execute(
                f'INSERT INTO `{database}`.`shadow_{table}` ({columns}) '
                f'SELECT {columns} FROM `{database}`.`{table}` WHERE '
                f'{where[table]}', uuids)
            cursor.execute(f'DELETE FROM `{database}`.`{table}` WHERE '
                           f'{where[table]}', uuids)
            connection.commit()


class NovaAtWork(threading.Thread):
    """One cell's Nova for ``seconds``: instances built (a create action;
    its event inserted when it starts, updated when it finishes, as Nova's
    action_event_start and action_event_finish do), rebooted, deleted and
    archived; now and then an event whose insert commits after a later
    one's (a late commit). Times are now, to the second."""

    def __init__(self, server, database, seconds, seed):
        super().__init__(daemon=True)
        self.server, self.database = server, database
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.running = {}        # event id -> instance uuid
        self.live = []           # uuids of live instances
        self.archived = []
        self.late_commits = 0
        self.error = None

    def run(self):
        try:
            with self.server.admin(self.database) as db, \
                    self.server.admin(self.database) as late:
                deadline = time.monotonic() + self.seconds
                while time.monotonic() < deadline:
                    self.step(db, late)
                    time.sleep(self.rng.uniform(0.01, 0.06))
        except Exception as e:   # reported by the test
            self.error = e

    def _event(self, cursor, instance, action, event, finished=False):
        cursor.execute(
            'INSERT INTO instance_actions_events (event, action_id, '
            'start_time, finish_time, result, host, created_at) VALUES '
            '(%s, %s, %s, %s, %s, %s, %s)',
            (event, action, now_text(), now_text() if finished else None,
             'Success' if finished else None, 'cmp-1', now_text()))
        if not finished:
            self.running[cursor.lastrowid] = instance

    def _action(self, cursor, instance, name):
        cursor.execute(
            'INSERT INTO instance_actions (action, instance_uuid, '
            'request_id, start_time, created_at) VALUES (%s, %s, %s, %s, '
            '%s)', (name, instance, f'req-{uuid.uuid4()}', now_text(),
                    now_text()))
        return cursor.lastrowid

    def step(self, db, late):
        rng = self.rng
        choice = rng.random()
        with db.cursor() as cursor:
            if choice < 0.3 or not self.live:
                instance = str(uuid.UUID(int=rng.getrandbits(128)))
                cursor.execute(
                    'INSERT INTO instances (uuid, user_id, project_id, '
                    'hostname, host, memory_mb, root_gb, vcpus, deleted, '
                    'created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, '
                    '%s)',
                    (instance, f'user-{rng.randint(1, 5)}',
                     f'project-{rng.randint(1, 3)}', f'vm-{instance[:8]}',
                     f'cmp-{rng.randint(1, 4)}', 2048, 20, 2, now_text()))
                self.live.append(instance)
                self._event(cursor, instance, self._action(
                    cursor, instance, 'create'),
                    'compute__do_build_and_run_instance')
            elif choice < 0.6 and self.running:
                event = rng.choice(sorted(self.running))
                cursor.execute(
                    'UPDATE instance_actions_events SET finish_time = %s, '
                    'result = %s, updated_at = %s WHERE id = %s',
                    (now_text(), rng.choice(['Success', 'Success', 'Error']),
                     now_text(), event))
                del self.running[event]
            elif choice < 0.75:
                instance = rng.choice(self.live)
                self._event(cursor, instance, self._action(
                    cursor, instance, 'reboot'), 'compute_reboot_instance')
            elif choice < 0.85:
                self._late_commit(db, late)
            else:
                idle = [u for u in self.live
                        if u not in self.running.values()]
                if idle:
                    instance = rng.choice(idle)
                    cursor.execute('UPDATE instances SET deleted = id, '
                                   'deleted_at = %s WHERE uuid = %s',
                                   (now_text(), instance))
                    archive(db, self.database, [instance])
                    self.live.remove(instance)
                    self.archived.append(instance)

    def _late_commit(self, db, late):
        """An event of one transaction committed after an event inserted
        after it: its id is missing for a while."""
        instance = self.rng.choice(self.live)
        late.begin()
        with late.cursor() as cursor:
            self._event(cursor, instance, self._action(
                cursor, instance, 'pause'), 'compute_pause_instance',
                finished=True)
        with db.cursor() as cursor:
            self._event(cursor, instance, self._action(
                cursor, instance, 'unpause'), 'compute_unpause_instance',
                finished=True)
        time.sleep(self.rng.uniform(0.2, 0.5))
        late.commit()
        self.late_commits += 1


# --------------------------------------------------------------------------
# Tests

def test_id_ranges():
    assert missing(0, 10, [0, 3, 4, 9]) == [[1, 3], [5, 9]]
    assert missing(5, 8, []) == [[5, 8]]
    assert missing(5, 8, [5, 6, 7]) == []
    assert without([[1, 3], [5, 9]], [2, 5, 7]) == [[1, 2], [6, 7], [8, 9]]
    assert without([[1, 3]], [1, 2]) == []
    assert settled([[1, 3], [5, 9]], 6) == [[7, 9]]
    assert settled([[1, 3]], 0) == [[1, 3]]
    assert joined_up([[1, 3], [3, 5], [7, 8]]) == [[1, 5], [7, 8]]


def test_history_is_read_then_followed_as_the_batch_trace(
        mariadb, password_file, nova_db, key_file, tmp_path):
    """The backlog: the golden history and two cells with archived rows;
    every row in the window of its finish day, in every format."""
    golden_db = nova_db('golden')
    with mariadb.admin() as admin:
        golden.load(admin, golden_db)
    cells, *_ = cells_with_archive(mariadb, nova_db)
    databases = [golden_db, *cells]
    out, state = tmp_path / 'out', tmp_path / 'state'
    run = follow(follow_args(mariadb, password_file, databases, out, state,
                             key_file, '--window', '1d', '--poll-interval',
                             '0.2s', '--stop-after', '11-events'))
    rows = window_rows(out, 86400)
    assert rows == batch_rows(mariadb, password_file, databases, tmp_path,
                              key_file)
    assert [r for r in rows if r[0] in (golden.U1, golden.U2)] == \
        golden.EXPECTED_CSV
    assert len(rows) == 11
    assert sorted({os.path.basename(os.path.dirname(p)) for _, p in
                   shards.window_files(str(out))}) == [
        '2016-03-01', '2016-03-02', '2016-03-04', '2016-03-05',
        '2020-01-01', '2020-01-02']
    assert run.stdout.startswith('starcompactor instances --follow: '
                                 'windows before ')
    assert '11 trace rows written' in run.stdout
    assert not os.path.exists(out / shards.WINDOW_TEMPORARY)
    assert saved_state(state)['final_until_sec'] <= time.time()
    manifests = window_manifests(out, 86400, rows=11)
    assert {m['run']['state'] for m in manifests.values()} == {str(state)}
    assert {m['source']['databases'] == databases
            for m in manifests.values()} == {True}


def test_verify_reads_the_window_files_of_a_follow_folder(
        mariadb, password_file, golden_db, key_file, tmp_path):
    """``starcompactor verify FOLDER`` checks every window file below it;
    the same rows unmasked are leaks, in every file."""
    source = ['--mysql-host', mariadb.host, '--mysql-port',
              str(mariadb.port), '--mysql-user', READER,
              '--mysql-password-file', password_file,
              '--databases', golden_db]
    runs = {}
    for masking in ('hmac-sha256', 'none'):
        out = tmp_path / masking
        follow(follow_args(mariadb, password_file, [golden_db], out,
                           tmp_path / f'state-{masking}', key_file,
                           '--window', '1d', '--poll-interval', '0.2s',
                           '--stop-after', '7-events', '--mask-method',
                           masking))
        runs[masking] = subprocess.run(
            [sys.executable, '-m', 'starcompactor', 'verify', str(out),
             *source], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=_environment(), timeout=120)
    files = len(shards.window_files(str(tmp_path / 'none')))
    assert files == 12       # 4 day windows, 3 formats
    masked, raw = runs['hmac-sha256'], runs['none']
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout == (f'verify: {files} files checked, no raw '
                             f'identity and no key found\n')
    assert raw.returncode == 1
    assert raw.stderr.splitlines()[-1].startswith('starcompactor: error: ')
    assert raw.stderr.splitlines()[-1].endswith(f'leaks in {files} files')
    leaky = {line.split(' row ')[0] for line in raw.stdout.splitlines()}
    assert leaky and leaky <= {f'LEAK {path}' for _, path in
                               shards.window_files(str(tmp_path / 'none'))}


def test_stop_after_a_duration_ends_the_run_cleanly(
        mariadb, password_file, nova_db, key_file, tmp_path):
    """On Prism by name, as on the DirectRunner (which hands it to
    Prism)."""
    database = nova_db()
    out, state = tmp_path / 'out', tmp_path / 'state'
    began = time.monotonic()
    run = follow(follow_args(mariadb, password_file, [database], out, state,
                             key_file, '--window', '1s', '--poll-interval',
                             '0.2s', '--overlap', '0.2s', '--stop-after',
                             '3s', '--runner', 'PrismRunner'))
    took = time.monotonic() - began
    assert 3 < took < 60
    assert '0 trace rows written' in run.stdout
    assert shards.window_files(str(out)) == []
    # The watermark passed window boundaries: the state was saved, at most
    # the overlap behind the end of the run.
    final = saved_state(state)['final_until_sec']
    assert time.time() - took - 1 < final <= time.time()


def test_nova_at_work_and_a_restart_give_the_batch_trace(
        mariadb, password_file, nova_db, key_file, tmp_path):
    """The golden history as the backlog, then Nova at work (archiving
    and late commits included) across two runs of the command: the union
    of the window files is the batch trace of the final database."""
    database = nova_db('busy')
    with mariadb.admin(database) as admin, admin.cursor() as cursor:
        golden.load(admin, database)
        # Nova's ids grow past the history's (whose orphan event names an
        # action id not used yet).
        for table in ARCHIVED_TABLES:
            cursor.execute(f'ALTER TABLE {table} AUTO_INCREMENT = 1000')
    out, state = tmp_path / 'out', tmp_path / 'state'
    args = follow_args(mariadb, password_file, [database], out, state,
                       key_file, '--window', '2s', '--poll-interval',
                       '0.3s', '--overlap', '2s')
    nova = NovaAtWork(mariadb, database, seconds=14, seed=7)
    first = start(args + ['--stop-after', '6s'])
    nova.start()
    first = finished(first)
    after_first = shards.window_files(str(out))
    boundary = saved_state(state)['final_until_sec']
    second = finished(start(args + ['--stop-after', '12s']))
    nova.join()
    assert nova.error is None
    print(first.stdout, second.stdout, sep='\n')
    rows = window_rows(out, 2)
    assert rows == batch_rows(mariadb, password_file, [database], tmp_path,
                              key_file)
    # Both runs wrote windows of Nova at work; the second resumed at the
    # state the first saved; Nova archived and committed late meanwhile.
    today = time.time() - 600
    assert any(begins > today for begins, _ in after_first)
    assert any(begins >= boundary for begins, _ in
               shards.window_files(str(out)))
    assert (f'from the saved state (windows before {iso_of(boundary)} are '
            f'final)') in second.stderr
    assert len([r for r in rows if r[0] not in (golden.U1, golden.U2)]) > 20
    assert nova.late_commits
    assert [r for r in rows if r[0] in nova.archived]


def _instance(uuid_, name):
    return dict(uuid=uuid_, user_id=f'user-{name}', project_id='project',
                hostname=f'vm-{name}', host='cmp-1', memory_mb=1024,
                root_gb=10, vcpus=1, deleted=0)


def test_rows_archived_between_polls_and_runs_are_not_lost(
        mariadb, password_file, nova_db, key_file, tmp_path):
    """A first run stops in the middle of the history, saving an event
    still running; then that event finishes and both instances are
    archived: the second run finds everything in the shadow_ tables (the
    event it saw running, the ids it had not read)."""
    database = nova_db()
    a, b = golden.U1, golden.U2
    with mariadb.admin() as admin:
        insert(admin, database, 'instances', [dict(id=1, **_instance(a, 'a')),
                                              dict(id=2, **_instance(b, 'b'))])
        insert(admin, database, 'instance_actions', [
            dict(id=1, action='create', instance_uuid=b),
            dict(id=2, action='create', instance_uuid=a)])
        insert(admin, database, 'instance_actions_events', [
            dict(id=1, action_id=1, event='compute__do_build_and_run_instance',
                 start_time='2024-01-01 00:01:00')] + [
            dict(id=i, action_id=2, event=f'step_{i}',
                 start_time=f'2024-01-01 00:0{i}:00',
                 finish_time=f'2024-01-01 00:0{i}:30', result='Success')
            for i in (2, 3, 4, 5)])
    out, state = tmp_path / 'out', tmp_path / 'state'
    args = follow_args(mariadb, password_file, [database], out, state,
                       key_file, '--window', '1h', '--poll-interval', '0.2s',
                       '--poll-batch', '2', epoch='2024-01-01T00:00:00Z')
    # Two ids a poll: id 1 (running), then 2 and 3, and it stops. The state
    # is the one saved after the first poll.
    follow(args + ['--stop-after', '2-events'])
    position = saved_state(state)['positions'][database]
    assert (position['next_id'], position['recheck']) == (2, [1])
    assert len(window_rows(out, 3600)) == 2

    with mariadb.admin(database) as admin, admin.cursor() as cursor:
        cursor.execute("UPDATE instance_actions_events SET finish_time = "
                       "'2024-01-01 00:06:00', result = 'Error' WHERE id = 1")
        cursor.execute('UPDATE instances SET deleted = id')
        archive(admin, database, [a, b])
        cursor.execute('SELECT COUNT(*) FROM instance_actions_events')
        assert cursor.fetchone() == (0,)

    follow(args + ['--stop-after', '2s'])
    rows = window_rows(out, 3600)
    assert len(rows) == 5
    assert rows == batch_rows(mariadb, password_file, [database], tmp_path,
                              key_file, epoch='2024-01-01T00:00:00Z')
    assert [r[1] for r in rows if r[0] == b] == [
        'compute__do_build_and_run_instance']


def test_batch_trace_then_follow_from_its_cut_is_the_whole_trace(
        mariadb, password_file, nova_db, key_file, tmp_path):
    database = nova_db()
    with mariadb.admin() as admin:
        golden.load(admin, database)
    cut = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    before_cut = batch_rows(mariadb, password_file, [database], tmp_path,
                            key_file, now=cut)
    assert before_cut == golden.EXPECTED_CSV
    time.sleep(1.1)    # after the cut's second
    new = 'bbbbbbbb-0000-4000-8000-000000000001'
    with mariadb.admin() as admin:
        with admin.cursor() as cursor:
            cursor.execute(   # the resize that was running at the cut
                f'UPDATE `{database}`.instance_actions_events SET '
                f'finish_time = %s, result = %s WHERE id = 107',
                (now_text(), 'Success'))
        insert(admin, database, 'instances', [dict(id=4, **_instance(
            new, 'new'))])
        insert(admin, database, 'instance_actions', [dict(
            id=17, action='create', instance_uuid=new)])
        insert(admin, database, 'instance_actions_events', [
            dict(id=110 + i, action_id=17, event=f'step_{i}',
                 start_time=now_text(), finish_time=now_text(),
                 result='Success') for i in range(2)])
    out = tmp_path / 'out'
    follow(follow_args(mariadb, password_file, [database], out,
                       tmp_path / 'state', key_file, '--since', iso_of(
                           cut.timestamp()), '--window', '1m',
                       '--poll-interval', '0.2s', '--stop-after', '3-events'))
    followed = window_rows(out, 60)
    assert len(followed) == 3
    whole = batch_rows(mariadb, password_file, [database], tmp_path, key_file)
    assert sorted(before_cut + followed) == whole
    assert not set(before_cut) & set(followed)


def test_what_follow_needs_and_what_a_state_keeps(
        mariadb, password_file, nova_db, key_file, tmp_path):
    database = nova_db()
    out, state = tmp_path / 'out', tmp_path / 'state'
    args = follow_args(mariadb, password_file, [database], out, state,
                       key_file, '--window', '10s', '--poll-interval', '0.2s')

    def without(option, values=1):
        at = args.index(option)
        return args[:at] + args[at + 1 + values:]

    assert fails(without('--epoch')) == (
        1, 'starcompactor: error: --follow needs --epoch ISO: the earliest '
           'event of a stream is never known, and *_SEC must count from '
           'the same time in every window')
    assert fails(without('--mask-key-file')) == (
        1, 'starcompactor: error: --follow needs a masking key that '
           'outlives the run: --mask-key-file FILE or $STARCOMPACTOR_MASK_KEY'
           ' (a random key would mask each run differently)')
    assert fails(without('--state')) == (
        1, 'starcompactor: error: --follow needs --state DIR: where the '
           'poll position is kept between windows and runs')
    assert fails(without('--follow', 0)) == (
        1, 'starcompactor: error: --state is an option of --follow')
    assert fails(args + ['--runner', 'BundleBasedDirectRunner']) == (
        1, 'starcompactor: error: --follow cannot run on the '
           'BundleBasedDirectRunner (Beam 2.77 runs no splittable DoFn in '
           'its streaming mode): use the DirectRunner or PrismRunner')
    assert fails(args + ['--poll-interval', '0s'])[0] == 2
    status, line = fails(args + ['--databases', 'nova_nowhere'])
    assert status == 1 and line.startswith(
        "starcompactor: error: unknown or inaccessible database "
        "'nova_nowhere'")
    assert not os.path.exists(state / 'state.json')

    follow(args + ['--stop-after', '0.1s'])
    assert saved_state(state)['settings']['key_fingerprint'] == \
        mask.key_fingerprint(golden.GOLDEN_KEY)
    other_key = write_key_file(tmp_path / 'other',
                               b'another-key-of-32-bytes-length!!')
    status, line = fails(args + ['--mask-key-file', other_key])
    assert status == 1 and line.startswith(
        f"starcompactor: error: --state {state} was made with another "
        f"key_fingerprint ('{mask.key_fingerprint(golden.GOLDEN_KEY)}', now "
        f"'{mask.key_fingerprint(b'another-key-of-32-bytes-length!!')}')")
    status, line = fails(args + ['--epoch', '2020-01-01'])
    assert status == 1 and 'was made with another epoch' in line
    status, line = fails(args + ['--window', '1h'])
    assert status == 1 and 'was made with another window_sec' in line


def test_ctrl_c_keeps_what_is_final_and_the_next_run_resumes(
        mariadb, password_file, golden_db, key_file, tmp_path):
    out, state = tmp_path / 'out', tmp_path / 'state'
    args = follow_args(mariadb, password_file, [golden_db], out, state,
                       key_file, '--window', '1d', '--poll-interval', '0.2s')
    proc = start(args)
    wait_for_state(proc, state)
    os.killpg(proc.pid, signal.SIGINT)      # Ctrl-C: the process group
    interrupted = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    # The cancel and the job's end are given 10 s each.
    assert time.monotonic() - interrupted < 25
    assert proc.returncode == 130
    assert 'Traceback' not in stderr
    final = saved_state(state)['final_until']
    assert [line for line in stderr.splitlines()
            if line.startswith('starcompactor')] == [
        f'starcompactor: error: interrupted; windows before {final} are '
        f'final, and the next run with --state {state} resumes there']
    _no_process_left(proc)
    assert window_rows(out, 86400) == golden.EXPECTED_CSV
    window_manifests(out, 86400, rows=len(golden.EXPECTED_CSV))

    follow(args + ['--stop-after', '1s'])
    assert window_rows(out, 86400) == golden.EXPECTED_CSV
    window_manifests(out, 86400, rows=len(golden.EXPECTED_CSV))


# Once all is written, Prism has 20 s to end the job; a cancel and the
# job's end after it, 10 s each; the counters, 10 s.
GRACE_S, CANCEL_S = 20, 10


def test_a_job_prism_does_not_end_is_cancelled_once_all_is_written(
        mariadb, password_file, golden_db, key_file, tmp_path):
    """The poll notes that it stopped and what it emitted last (here: the
    saved boundary, no window after it), as it does after --stop-after;
    the job goes on (as Prism's did, issue 18): once that is all written,
    the command waits GRACE_S, cancels the job and ends with its summary
    and one warning."""
    out, state = tmp_path / 'out', tmp_path / 'state'
    args = follow_args(mariadb, password_file, [golden_db], out, state,
                       key_file, '--window', '1d', '--poll-interval', '0.2s')
    proc = start(args)
    saved = wait_for_state(proc, state)
    note_stop(str(state), saved['final_until_sec'], [])
    noted = time.monotonic()
    run = finished(proc)
    took = time.monotonic() - noted
    assert GRACE_S <= took < GRACE_S + 2 * CANCEL_S
    assert run.stdout.startswith(
        f'starcompactor instances --follow: windows before '
        f'{saved_state(state)["final_until"]} are final')
    assert f'{len(golden.EXPECTED_CSV)} trace rows written' in run.stdout
    warning, = [line for line in run.stderr.splitlines()
                if line.startswith('WARNING starcompactor')]
    assert warning.startswith(f'WARNING starcompactor: Prism did not end '
                              f'the job {GRACE_S} s after the poll stopped')
    assert window_rows(out, 86400) == golden.EXPECTED_CSV
    window_manifests(out, 86400, rows=len(golden.EXPECTED_CSV))
    assert not os.path.exists(state / 'stopped.json')


def test_a_prism_that_answers_nothing_is_stopped_and_the_run_ends(
        mariadb, password_file, golden_db, key_file, tmp_path):
    """As above, with Prism's process stopped (SIGSTOP) once the poll has
    noted its stop: the counters, the cancel and the job's end are waited
    for in vain, then Prism is killed, and the run ends with what it
    knows."""
    out, state = tmp_path / 'out', tmp_path / 'state'
    args = follow_args(mariadb, password_file, [golden_db], out, state,
                       key_file, '--window', '1d', '--poll-interval', '0.2s')
    proc = start(args)
    saved = wait_for_state(proc, state)
    prism, = [int(line.split()[0]) for line in _session_processes(proc.pid)]
    note_stop(str(state), saved['final_until_sec'], [])
    os.kill(prism, signal.SIGSTOP)
    noted = time.monotonic()
    run = finished(proc)
    took = time.monotonic() - noted
    assert GRACE_S + 3 * CANCEL_S <= took < GRACE_S + 4 * CANCEL_S + 10
    assert run.stdout.splitlines()[1:] == [
        '  counts unknown: Prism did not report them',
        f'  12 window files in {out}, 4 window manifests']
    assert window_rows(out, 86400) == golden.EXPECTED_CSV
    follow(args + ['--stop-after', '1s'])
    assert window_rows(out, 86400) == golden.EXPECTED_CSV


def test_a_leak_in_a_window_fails_the_run_before_its_state_is_saved(
        mariadb, password_file, nova_db, key_file, tmp_path):
    """Instance a's raw project is the mask of instance b's: the files of
    their window hold a raw identity of a row that went into it."""
    database = nova_db()
    a, b = golden.U1, golden.U2
    b_masked = hmac.new(golden.GOLDEN_KEY, b'project-b',
                        hashlib.sha256).hexdigest()[:32]
    with mariadb.admin() as admin:
        insert(admin, database, 'instances', [
            dict(id=1, **{**_instance(a, 'a'), 'project_id': b_masked}),
            dict(id=2, **{**_instance(b, 'b'), 'project_id': 'project-b'})])
        insert(admin, database, 'instance_actions', [
            dict(id=1, action='create', instance_uuid=a),
            dict(id=2, action='create', instance_uuid=b)])
        insert(admin, database, 'instance_actions_events', [
            dict(id=i, action_id=i, event='compute__do_build_and_run_instance',
                 start_time=f'2024-01-01 00:0{i}:00',
                 finish_time=f'2024-01-01 00:0{i}:30', result='Success')
            for i in (1, 2)])
    out, state = tmp_path / 'out', tmp_path / 'state'
    proc = start(follow_args(
        mariadb, password_file, [database], out, state, key_file, '--window',
        '1d', '--poll-interval', '0.2s', '--stop-after', '2-events',
        epoch='2024-01-01T00:00:00Z'))
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 1
    # Beam's worker prints the failed step's traceback too (on Prism, to
    # stderr); no identity is in it.
    assert b_masked not in stderr and 'project-b' not in stderr
    line, = [line for line in stderr.splitlines()
             if line.startswith('starcompactor')]
    assert line.startswith('starcompactor: error: leak check failed: window '
                           '2024-01-01T00:00:00Z: ')
    assert 'a raw identity in a field' in line
    assert line.endswith(f'the state is not saved past it: do not publish '
                         f'{out}')
    _no_process_left(proc)
    assert saved_state(state)['final_until'] is None
    assert shards.window_manifests(str(out)) == []
