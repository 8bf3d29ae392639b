"""The trace of a busy Nova equals the trace of a quiet one at the same cut.

A real MariaDB holds a synthetic two-cell history. While the trace job reads
it, two threads change it the way a running cloud does:

- a *writer* (Nova's API and computes) creates instances, starts actions on
  live instances, finishes running events and soft-deletes instances, all
  with times after the cut;
- an *archiver* (``nova-manage db archive_deleted_rows``) moves deleted
  instances with their actions and events from the live tables to the
  ``shadow_`` ones, in transactions, events first, then actions, then
  instances, a few instances at a time.

Nothing either does may change the trace at the cut: the rows must equal,
exactly, those of the same job on an untouched copy of the history; every
table's counts must balance; and the runs must really have raced (rows read
live and again from ``shadow_``, counted ``read_twice``).

The reader is made fine-grained and a little slow (small chunks and
batches, a short sleep per chunk) so that the archiver moves rows while the
read is going on.
"""
import datetime as dt
import random
import threading
import time
import uuid

import pymysql
import pytest

from conftest import drop_databases, grant_reader
from helpers import job_args, read_csv, run_job, write_key_file
from starcompactor import synth
from starcompactor.pipeline.sources import mysql as mysql_source
from starcompactor.pipeline.times import UTC

INSTANCES = 300
SYNTH = dict(seed=11, start='2015-09-01', days=365, archive_fraction=0.5)
# After every synthetic time (the span ends 2016-08-30): the cut includes
# every finished synthetic event; whatever the writer does comes later.
T0 = dt.datetime(2016, 9, 15, tzinfo=UTC)
EPOCH = '2015-09-01T00:00:00Z'
MASK_KEY = b'consistency-test-key-0123456789abcdef'

SMALL_SPLITS = 64     # ids per split: many splits per table
WHOLE_TABLES = 10 ** 9  # one split per table
CHUNK_ROWS = 16       # rows (or ids) per query and per batch
CHUNK_SLEEP = 0.003   # seconds after each chunk read
# (run, ids per split, Beam options): the default in-memory DirectRunner
# reads all splits of a stage on one connection; with worker threads several
# connections read at once, each from its own moment. A split reads its ids
# live, then from shadow_: a row archived in between is read twice (counted
# read_twice); the trace must be the same whatever the split size.
RUNS = ((1, SMALL_SPLITS, ()), (2, WHOLE_TABLES, ()),
        (3, SMALL_SPLITS, ('--direct_running_mode', 'multi_threading',
                           '--direct_num_workers', '2')),
        (4, WHOLE_TABLES, ('--direct_running_mode', 'multi_threading',
                           '--direct_num_workers', '3')))

LIVE = ('instance_actions_events', 'instance_actions', 'instances')
RETRY = {1205, 1213}   # lock wait timeout, deadlock: retried as Nova does


@pytest.fixture(scope='module')
def key_file(tmp_path_factory):
    return write_key_file(tmp_path_factory.mktemp('key'), MASK_KEY)


def _load(mariadb, cells):
    """The synthetic history into ``cells``, readable by the trace reader."""
    with mariadb.admin() as admin:
        synth.load_mysql(admin, INSTANCES, cells=cells, **SYNTH)
        with admin.cursor() as cursor:
            for cell in cells:
                for table in LIVE:
                    # As in a real Nova, where archived rows were first
                    # inserted live: new ids come after every archived one
                    # (synth leaves a live table that is all archived, such
                    # as cell0's, at AUTO_INCREMENT 1).
                    cursor.execute(
                        f'SELECT GREATEST(COALESCE((SELECT MAX(id) FROM '
                        f'`{cell}`.`{table}`), 0), COALESCE((SELECT MAX(id) '
                        f'FROM `{cell}`.`shadow_{table}`), 0))')
                    top = cursor.fetchone()[0]
                    cursor.execute(f'ALTER TABLE `{cell}`.`{table}` '
                                   f'AUTO_INCREMENT = {top + 1}')
                grant_reader(cursor, cell)


def _args(mariadb, password_file, cells, out, key_file, *extra):
    return job_args(mariadb, password_file, cells, out, '--formats', 'csv',
                    '--mask-key-file', key_file, '--epoch', EPOCH,
                    '--num-shards', '2', *extra)


@pytest.fixture
def fine_grained_reader(monkeypatch, request):
    """Small chunks and batches, a sleep per chunk; records when each chunk
    was read (in this process: the DirectRunner runs in it). The test's
    parameter ``split_ids`` sets the ids per split."""
    log = []
    original_init = mysql_source.NovaMySQLSource.__init__
    original_chunks = mysql_source.ReadTableSplits._chunks

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.split_ids = request.getfixturevalue('split_ids')
        self.batch_rows = CHUNK_ROWS

    def chunks(self, slot, split, nova_table):
        for chunk in original_chunks(self, slot, split, nova_table):
            log.append((time.monotonic(), nova_table))
            yield chunk
            time.sleep(CHUNK_SLEEP)

    monkeypatch.setattr(mysql_source.NovaMySQLSource, '__init__', init)
    monkeypatch.setattr(mysql_source.ReadTableSplits, '_chunks', chunks)
    monkeypatch.setattr(mysql_source, 'CHUNK_IDS', CHUNK_ROWS)
    return log


@pytest.fixture(scope='module')
def quiet_trace(mariadb, password_file, tmp_path_factory, key_file):
    """The trace of the untouched history at cut T0 (same key, same epoch),
    read the ordinary way."""
    cells = ('quiet_c0', 'quiet_c1')
    _load(mariadb, cells)
    out = tmp_path_factory.mktemp('quiet') / 'trace'
    try:
        summary = run_job(_args(mariadb, password_file, cells, out, key_file),
                          now=T0)
    finally:
        drop_databases(mariadb, cells)
    for table, count in summary.tables.items():
        assert count.balanced, (table, count)
    headers, rows = read_csv(out)
    assert len(rows) == summary.trace_rows > 500
    return headers, rows, summary


class _Worker(threading.Thread):
    """A thread with its own admin connection and a seeded schedule; keeps
    its first error for the test to raise."""

    def __init__(self, mariadb, cells, seed, stop):
        super().__init__(daemon=True)
        self.mariadb, self.cells, self.stop = mariadb, cells, stop
        self.rng = random.Random(seed)
        self.error = None
        self.done = {}

    def count(self, what, n=1):
        self.done[what] = self.done.get(what, 0) + n

    def run(self):
        try:
            with self.mariadb.admin() as db:
                while not self.stop.is_set():
                    try:
                        self.step(db, self.rng.choice(self.cells))
                    except pymysql.err.OperationalError as e:
                        if e.args[0] not in RETRY:
                            raise
                        db.rollback()
                        self.count('retried')
                    time.sleep(self.rng.uniform(0, 0.02))
        except Exception as e:   # raised again in the test
            self.error = e


class Writer(_Worker):
    """Nova at work after the cut: every time it writes is after T0."""

    def __init__(self, *args):
        super().__init__(*args)
        self.clock = 0

    def uuid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def later(self):
        self.clock += self.rng.randint(1, 30)
        return (T0 + dt.timedelta(seconds=self.clock)).strftime(
            '%Y-%m-%d %H:%M:%S')

    def _live_instance(self, cursor, cell):
        cursor.execute(f'SELECT uuid, id, user_id, project_id FROM `{cell}`.'
                       f'instances WHERE deleted = 0 ORDER BY id DESC '
                       f'LIMIT 50')
        rows = cursor.fetchall()
        return self.rng.choice(rows) if rows else None

    def _action(self, cursor, cell, instance_uuid, kind, user, project,
                events):
        start = self.later()
        cursor.execute(
            f'INSERT INTO `{cell}`.instance_actions (created_at, action, '
            f'instance_uuid, request_id, user_id, project_id, start_time, '
            f'deleted) VALUES (%s, %s, %s, %s, %s, %s, %s, 0)',
            (start, kind, instance_uuid, f'req-{self.uuid()}', user, project,
             start))
        action_id = cursor.lastrowid
        for i, event in enumerate(events):
            begin = self.later()
            running = i == len(events) - 1 and self.rng.random() < 0.5
            finish = None if running else self.later()
            cursor.execute(
                f'INSERT INTO `{cell}`.instance_actions_events (created_at, '
                f'event, action_id, start_time, finish_time, result, host, '
                f'deleted) VALUES (%s, %s, %s, %s, %s, %s, %s, 0)',
                (begin, event, action_id, begin, finish,
                 None if running else 'Success', 'compute-9999'))
            self.count('events')
        self.count('actions')

    def step(self, db, cell):
        op = self.rng.choices(('create', 'act', 'finish', 'delete'),
                              (3, 3, 2, 2))[0]
        with db.cursor() as cursor:
            if op == 'create':
                new = self.uuid()
                created = self.later()
                user = f'user-new-{self.rng.randint(1, 20)}'
                project = f'project-new-{self.rng.randint(1, 5)}'
                cursor.execute(
                    f'INSERT INTO `{cell}`.instances (created_at, uuid, '
                    f'user_id, project_id, hostname, host, memory_mb, vcpus, '
                    f'root_gb, vm_state, deleted) VALUES (%s, %s, %s, %s, %s,'
                    f' %s, 2048, 1, 20, %s, 0)',
                    (created, new, user, project, f'new-vm-{self.clock}',
                     'compute-9999', 'building'))
                self.count('instances')
                self._action(cursor, cell, new, 'create', user, project,
                             ('conductor_schedule_and_build_instances',
                              'compute__do_build_and_run_instance'))
            elif op == 'act':
                row = self._live_instance(cursor, cell)
                if row:
                    self._action(cursor, cell, row[0], 'reboot', row[2],
                                 row[3], ('compute_reboot_instance',))
            elif op == 'finish':
                cursor.execute(f'SELECT id FROM `{cell}`.instance_actions_'
                               f'events WHERE finish_time IS NULL')
                running = [i for i, in cursor.fetchall()]
                if running:
                    cursor.execute(
                        f'UPDATE `{cell}`.instance_actions_events SET '
                        f'finish_time = %s, updated_at = %s, result = %s '
                        f'WHERE id = %s AND finish_time IS NULL',
                        (self.later(), self.later(),
                         self.rng.choice(('Success', 'Error')),
                         self.rng.choice(running)))
                    self.count('finished', cursor.rowcount)
            else:
                row = self._live_instance(cursor, cell)
                if row:
                    self._action(cursor, cell, row[0], 'delete', row[2],
                                 row[3], ('compute_terminate_instance',))
                    cursor.execute(
                        f'UPDATE `{cell}`.instances SET deleted = id, '
                        f'deleted_at = %s, vm_state = %s WHERE id = %s',
                        (self.later(), 'deleted', row[1]))
                    self.count('deleted')


class Archiver(_Worker):
    """``nova-manage db archive_deleted_rows``: deleted instances, with
    their actions and events, moved to the shadow_ tables a few at a time;
    events, then actions, then instances, each table in its own transaction
    or all in one."""

    def __init__(self, *args):
        super().__init__(*args)
        self.moves = []     # (monotonic time of the commit, rows moved)
        self.columns = {}

    def _columns(self, cursor, cell, table):
        if table not in self.columns:
            cursor.execute(
                'SELECT column_name FROM information_schema.columns WHERE '
                'table_schema = %s AND table_name = %s ORDER BY '
                'ordinal_position', (cell, table))
            self.columns[table] = ', '.join(
                f'`{c}`' for c, in cursor.fetchall())
        return self.columns[table]

    def _move(self, cursor, cell, table, where, args):
        columns = self._columns(cursor, cell, table)
        cursor.execute(
            f'INSERT INTO `{cell}`.`shadow_{table}` ({columns}) SELECT '
            f'{columns} FROM `{cell}`.`{table}` WHERE {where}', args)
        moved = cursor.rowcount
        cursor.execute(f'DELETE FROM `{cell}`.`{table}` WHERE {where}', args)
        assert cursor.rowcount == moved, (table, moved, cursor.rowcount)
        return moved

    def step(self, db, cell):
        with db.cursor() as cursor:
            cursor.execute(f'SELECT uuid FROM `{cell}`.instances WHERE '
                           f'deleted != 0 ORDER BY id LIMIT 40')
            deleted = [u for u, in cursor.fetchall()]
            if not deleted:
                return
            uuids = self.rng.sample(deleted,
                                    min(len(deleted), self.rng.randint(1, 4)))
            marks = ', '.join(['%s'] * len(uuids))
            one_transaction = self.rng.random() < 0.5
            db.begin()
            moved = self._move(
                cursor, cell, 'instance_actions_events',
                f'action_id IN (SELECT id FROM `{cell}`.instance_actions '
                f'WHERE instance_uuid IN ({marks}))', uuids)
            steps = (('instance_actions', f'instance_uuid IN ({marks})'),
                     ('instances', f'uuid IN ({marks})'))
            for table, where in steps:
                if not one_transaction:
                    db.commit()
                    self.moves.append((time.monotonic(), moved))
                    moved = 0
                    time.sleep(self.rng.uniform(0, 0.005))
                    db.begin()
                moved += self._move(cursor, cell, table, where, uuids)
            db.commit()
            self.moves.append((time.monotonic(), moved))
            self.count('instances', len(uuids))


def _rows_per_table(mariadb, cells):
    counts = {}
    with mariadb.admin() as admin, admin.cursor() as cursor:
        for cell in cells:
            for table in LIVE:
                for t in (table, 'shadow_' + table):
                    cursor.execute(f'SELECT COUNT(*) FROM `{cell}`.`{t}`')
                    counts[cell, t] = cursor.fetchone()[0]
    return counts


@pytest.mark.parametrize('run, split_ids, beam_options', RUNS,
                         ids=[f'run{run}' for run, _, _ in RUNS])
def test_trace_of_a_busy_database_equals_the_quiet_trace(
        mariadb, password_file, key_file, quiet_trace, fine_grained_reader,
        tmp_path, run, split_ids, beam_options):
    quiet_headers, quiet_rows, quiet_summary = quiet_trace
    began = time.monotonic()
    cells = (f'busy{run}_c0', f'busy{run}_c1')
    _load(mariadb, cells)
    before = _rows_per_table(mariadb, cells)
    stop = threading.Event()
    writer = Writer(mariadb, cells, 1000 + run, stop)
    archiver = Archiver(mariadb, cells, 2000 + run, stop)
    out = tmp_path / 'trace'
    try:
        writer.start()
        archiver.start()
        time.sleep(random.Random(run).uniform(0, 0.3))
        summary = run_job(_args(mariadb, password_file, cells, out, key_file,
                                *beam_options), now=T0)
    finally:
        stop.set()
        writer.join(30)
        archiver.join(30)
    try:
        after = _rows_per_table(mariadb, cells)
    finally:
        drop_databases(mariadb, cells)
    for worker in (writer, archiver):
        assert not worker.is_alive()
        if worker.error:
            raise worker.error

    # The same trace, row for row, as the quiet history's at the same cut.
    headers, rows = read_csv(out)
    assert headers == quiet_headers
    assert len(rows) == len(quiet_rows), summary
    assert rows == quiet_rows
    assert summary.trace_rows == quiet_summary.trace_rows
    # Every row read is in the trace or counted under one reason.
    for table, count in summary.tables.items():
        assert count.balanced, (table, count)
        assert count.in_trace == quiet_summary.tables[table].in_trace, table

    # The activity really happened, and during the read: rows were moved
    # to shadow_ between the first and the last batch read. (Whether some
    # were then read twice depends on timing; the next test makes sure.)
    assert writer.done.get('events', 0) > 0, writer.done
    assert writer.done.get('finished', 0) > 0, writer.done
    assert archiver.done.get('instances', 0) > 0, archiver.done
    assert sum(after[cell, 'shadow_instances'] for cell in cells) > \
        sum(before[cell, 'shadow_instances'] for cell in cells)
    first_read = min(t for t, _ in fine_grained_reader)
    last_read = max(t for t, _ in fine_grained_reader)
    moved_while_reading = sum(n for t, n in archiver.moves
                              if first_read <= t <= last_read)
    assert moved_while_reading > 0, (archiver.moves, first_read, last_read)
    assert time.monotonic() - began < 120   # bounded, even on a busy CI


def test_rows_archived_between_live_and_shadow_reads_count_once(
        mariadb, password_file, key_file, quiet_trace, monkeypatch,
        tmp_path):
    """The archiver strikes at the worst moment, every time: each split has
    read its live rows, and deleted instances are moved to ``shadow_`` just
    before it reads the shadow rows, in a fresh snapshot. (One connection
    reads in one snapshot, where nothing moves; but splits read by different
    workers see different moments.) Rows the split had read live are read
    again: the trace must not change, and they must be counted
    ``read_twice``."""
    quiet_headers, quiet_rows, _ = quiet_trace
    cells = ('between_c0', 'between_c1')
    _load(mariadb, cells)
    archiver = Archiver(mariadb, cells, 7, threading.Event())
    original_chunks = mysql_source.ReadTableSplits._chunks

    def chunks(self, slot, split, nova_table):
        if nova_table.startswith('shadow_'):
            with mariadb.admin() as db:
                for _ in range(3):
                    archiver.step(db, split.database)
            # Ends the read snapshot: the next is new.
            self._connections[slot].commit()
        yield from original_chunks(self, slot, split, nova_table)

    monkeypatch.setattr(mysql_source.ReadTableSplits, '_chunks', chunks)
    out = tmp_path / 'trace'
    try:
        summary = run_job(_args(mariadb, password_file, cells, out,
                                key_file), now=T0)
    finally:
        drop_databases(mariadb, cells)
    headers, rows = read_csv(out)
    assert (headers, rows) == (quiet_headers, quiet_rows)
    assert archiver.done.get('instances', 0) > 0
    for table, count in summary.tables.items():
        assert count.balanced, (table, count)
        assert count.left_out.get('read_twice', 0) > 0, (table, count)
