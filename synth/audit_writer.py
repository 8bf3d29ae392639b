"""Writing a synthetic history as audit-table exports (``synth --audit-dir``).

The history is the one ``model.History`` makes for MariaDB and dumps, the
same rows for the same arguments; here it is written as a cloud that audits
Nova with MySQL triggers exports it (``transforms.audit`` has the format):
``DIR/<cell database>/openstack_audit.audit_nova_<table>.parquet``.

What the triggers and the back-fill record:

* The triggers come at ``start + triggers_at * days``, and with them a
  back-fill: every row then in the live and shadow_ tables, as it then is,
  gets an INSERT dated (``audit_event_time``) by its created_at, and a
  DELETE dated by its deleted_at if it was deleted; both are written
  (``audit_changed_at``) at the back-fill's time. What happened to those
  rows before is not recorded.
* From then on each change is recorded when it happens: an INSERT when a
  row is made; an UPDATE when a watched column (``WATCHED``) changes: an
  event's finish time and result, an action's message, an instance's task
  state, host and flavor sizes around each of its actions; a DELETE when an
  instance is soft-deleted (the trigger watches ``deleted``) and when
  ``nova-manage db archive_deleted_rows`` moves rows to the shadow_ tables,
  at ``start + archive_fraction * days`` (if the triggers were there then).
* A table's audit ids number its rows in the order they were written.

An instance's row holds only its last state; its earlier ones come from
the model as it makes the instance (its host and flavor before each of its
operations), so its latest INSERT or UPDATE is its row, in the columns the
trace reads.
"""
import heapq
import json
import os
import pickle
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from starcompactor.pipeline.errors import UserError
from starcompactor.synth.model import TASK_STATES, History
from starcompactor.synth.result import Result
from starcompactor.synth.tables import COLUMNS, SHADOW_PREFIX
from starcompactor.transforms import audit
from starcompactor.transforms.schema import (
    ACTIONS, EVENTS, INSTANCES, NOVA_TABLES, SOURCE_TABLES)

TRIGGERS_AT = 0.25
# The columns the triggers watch and snapshot (``data``), per table.
WATCHED = {
    INSTANCES: ('id', 'uuid', 'created_at', 'deleted_at', 'deleted',
                'user_id', 'project_id', 'hostname', 'host', 'node',
                'memory_mb', 'root_gb', 'vcpus', 'task_state'),
    ACTIONS: ('id', 'instance_uuid', 'action', 'request_id', 'user_id',
              'project_id', 'start_time', 'finish_time', 'message',
              'created_at', 'deleted_at', 'deleted'),
    EVENTS: ('id', 'action_id', 'event', 'start_time', 'finish_time',
             'result', 'host', 'created_at', 'deleted_at', 'deleted'),
}
_TIMES = frozenset({'created_at', 'deleted_at', 'start_time', 'finish_time'})
# Who wrote the audit rows (MySQL's USER() in the trigger or the job).
TRIGGER_USER = 'nova@192.0.2.10'
BACKFILL_USER = 'root@localhost'
ARCHIVE_USER = 'nova@192.0.2.11'

# Rows per row group: every table of every cell fills one at a time, in
# Python objects, so they stay small.
ROW_GROUP_ROWS = 20_000
AUDIT_SCHEMA = pa.schema([
    ('audit_id', pa.int64()),
    ('id', pa.string()),
    ('audit_event_type', pa.string()),
    ('audit_event_time', pa.timestamp('us')),
    ('audit_changed_by', pa.string()),
    ('audit_changed_at', pa.timestamp('us')),
    ('data', pa.string()),
])
assert tuple(AUDIT_SCHEMA.names) == audit.AUDIT_COLUMNS

# Synthetic table -> (logical table, archived)
_AUDITED = {prefix + NOVA_TABLES[table]: (table, bool(prefix))
            for table in SOURCE_TABLES for prefix in ('', SHADOW_PREFIX)}


class _AuditedHistory(History):
    """``History``, also keeping what an instance's audit rows show and its
    row does not: its actions, and its host and flavor before each
    operation. Rows come one at a time (``chunk_rows=1``), as they are
    made; ``clock`` is the time of the last create request handled: every
    row made from then on changes at that time or later."""

    def __init__(self, instances, **options):
        options.pop('chunk_rows', None)
        super().__init__(instances, chunk_rows=1, **options)
        self.clock = 0
        self.lives = {}    # (cell, instance id) -> (actions, before)

    def _lifecycle(self, t, index, cell0, request_id):
        self.clock = t
        cell, user, info, actions = super()._lifecycle(t, index, cell0,
                                                       request_id)
        info['actions'] = actions
        return cell, user, info, actions

    def _take_action(self, actions, info, kind, start, who, raw_events):
        info.setdefault('before', {})[len(actions)] = (info['host'],
                                                       info['flavor'])
        return super()._take_action(actions, info, kind, start, who,
                                    raw_events)

    def _instance_row(self, iid, uuid, t, index, reservation, cell, user,
                      info):
        self.lives[cell, iid] = (info['actions'], info.get('before', {}))
        return super()._instance_row(iid, uuid, t, index, reservation, cell,
                                     user, info)


# -- the changes of one row ---------------------------------------------------

def _sizes(flavor):
    _, _, vcpus, memory_mb, root_gb, _, _ = flavor
    return {'memory_mb': memory_mb, 'root_gb': root_gb, 'vcpus': vcpus}


def _finished(action):
    return all(finish is not None for _, _, finish, *_ in action[6])


def _end(action):
    """When an action's last event finished (its start, if it has none)."""
    return max([finish or start for _, start, finish, *_ in action[6]]
               + [action[0]])


def _instance_changes(row, actions, before, ts):
    """(time, type, watched values) of an instance from its creation to its
    row: host, flavor and task state around each action. ``before``: host
    and flavor before each operation, by the operation's index in
    ``actions`` (the first is its create, the last may be its delete)."""
    final = {name: row[name] for name in WATCHED[INSTANCES]}
    live = dict(final, deleted=0, deleted_at=None)

    def state(host, flavor, task_state):
        sizes = _sizes(flavor) if flavor else {}
        return dict(live, host=host, task_state=task_state, **sizes)

    operations = sorted(before)
    # host and flavor after each action (None: as in the row)
    after = [before[i] for i in operations] + [(final['host'], None)]
    changes = [(final['created_at'], audit.INSERT,
                state(None, after[0][1], 'scheduling'))]
    if _finished(actions[0]):
        changes.append((ts(_end(actions[0])), audit.UPDATE,
                        state(*after[0], None)))
    for n, index in enumerate(operations):
        action = actions[index]
        changes.append((ts(action[0]), audit.UPDATE,
                        state(*before[index], TASK_STATES[action[1]])))
        if _finished(action):
            changes.append((ts(_end(action)), audit.UPDATE,
                            state(*after[n + 1], None)))
    if len(actions) > 1 and actions[-1][1] == 'delete':
        changes.append((ts(actions[-1][0]), audit.UPDATE,
                        dict(live, task_state=TASK_STATES['delete'])))
    if final['deleted']:
        changes.append((final['deleted_at'], audit.DELETE, final))
    else:
        when, kind, _ = changes[-1]
        changes[-1] = (when, kind, final)
    # An UPDATE only when a watched column changed.
    return [change for change, previous in zip(changes, [None] + changes)
            if previous is None or change[1] != audit.UPDATE
            or change[2] != previous[2]]


def _changes(table, values, life, ts):
    """(time, type, watched values) of one row of ``table``, in order."""
    if table == INSTANCES:
        return _instance_changes(values, *life, ts)
    final = {name: values[name] for name in WATCHED[table]}
    if table == EVENTS:
        changes = [(final['created_at'], audit.INSERT,
                    dict(final, finish_time=None, result=None))]
        if final['finish_time'] is not None:
            changes.append((final['finish_time'], audit.UPDATE, final))
        return changes
    changes = [(final['created_at'], audit.INSERT, dict(final, message=None))]
    if final['message'] is not None:
        changes.append((values['updated_at'], audit.UPDATE, final))
    return changes


def _data(values):
    """The JSON snapshot, as MySQL's JSON_OBJECT renders it (DATETIME with
    microseconds)."""
    return json.dumps({name: (value + '.000000' if name in _TIMES
                              and value is not None else value)
                       for name, value in values.items()},
                      ensure_ascii=False)


# -- writing ------------------------------------------------------------------

class _AuditFile:
    """One audit table's export, written in row groups as rows come; audit
    ids number them in that order. It appears whole or not at all."""

    def __init__(self, path):
        self.path = path
        self.writer = pq.ParquetWriter(path + '.partial', AUDIT_SCHEMA)
        self.rows = []
        self.written = 0

    def add(self, row):
        """``row``: (id, type, event time, changed by, changed at, data),
        times as Nova's text."""
        self.rows.append(row)
        if len(self.rows) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self):
        if not self.rows:
            return
        ids, kinds, times, users, changed, data = zip(*self.rows)
        first = self.written + 1
        self.writer.write_table(pa.Table.from_arrays([
            pa.array(range(first, first + len(ids)), pa.int64()),
            pa.array(ids, pa.string()),
            pa.array(kinds, pa.string()),
            _timestamps(times),
            pa.array(users, pa.string()),
            _timestamps(changed),
            pa.array(data, pa.string()),
        ], schema=AUDIT_SCHEMA))
        self.written += len(ids)
        self.rows = []

    def close(self):
        self._flush()
        self.writer.close()
        os.replace(self.path + '.partial', self.path)

    def abort(self):
        self.writer.close()
        if os.path.exists(self.path + '.partial'):
            os.remove(self.path + '.partial')


def _timestamps(texts):
    return pc.strptime(pa.array(texts, pa.string()),
                       format=audit.NOVA_TIME_FORMAT, unit='us')


class _Spill:
    """Items put aside in a temporary file, read back in the order they
    came (once)."""
    CHUNK = 10_000

    def __init__(self, folder):
        self.file = tempfile.TemporaryFile(dir=folder)
        self.chunk = []

    def add(self, item):
        self.chunk.append(item)
        if len(self.chunk) >= self.CHUNK:
            pickle.dump(self.chunk, self.file)
            self.chunk = []

    def drain(self):
        pickle.dump(self.chunk, self.file)
        self.file.seek(0)
        while True:
            try:
                yield from pickle.load(self.file)
            except EOFError:
                break
        self.file.close()


class _Trail:
    """The audit rows of a history, in the order the back-fill and the
    triggers wrote them. Rows come in the order the history makes them;
    each row's changes are recorded at once, and written once the history's
    clock has passed them (no row made later can change earlier). The
    back-fill's come before any trigger's: a row that existed before the
    triggers is made before the clock passes them. The archiving's DELETEs
    wait in a file (it is long after most deletes)."""

    def __init__(self, files, since, archived_at, folder):
        self.files = files            # (db, table) -> _AuditFile
        self.since = since            # when the triggers and back-fill came
        self.archived_at = archived_at  # None: archived before the triggers
        self.pending = []             # heap of (changed at, seq, file, row)
        self.seq = 0
        self.archive = _Spill(folder)
        self.archive_written = archived_at is None

    def record(self, db, table, archived, values, life, ts):
        out = self.files[db, table]
        row_id = str(values['id'])
        changes = _changes(table, values, life, ts)
        backfilled = [c for c in changes if c[0] < self.since]
        if backfilled:
            data = _data(backfilled[-1][2])
            out.add((row_id, audit.INSERT, backfilled[0][0], BACKFILL_USER,
                     self.since, data))
            for when, kind, _ in backfilled:
                if kind == audit.DELETE:
                    out.add((row_id, kind, when, BACKFILL_USER, self.since,
                             data))
        for when, kind, snapshot in changes[len(backfilled):]:
            self.seq += 1
            heapq.heappush(self.pending, (
                when, self.seq, out,
                (row_id, kind, when, TRIGGER_USER, when, _data(snapshot))))
        if archived and self.archived_at is not None:
            assert not self.archive_written, 'archived after the archiving'
            self.archive.add((db, table, (
                row_id, audit.DELETE, self.archived_at, ARCHIVE_USER,
                self.archived_at, _data(changes[-1][2]))))

    def release(self, until=None):
        """Write the rows changed before ``until`` (None: all), in time
        order, the archiving's at its time."""
        pending = self.pending
        while pending and (until is None or pending[0][0] < until):
            if not self.archive_written and pending[0][0] > self.archived_at:
                self._write_archive()
            _, _, out, row = heapq.heappop(pending)
            out.add(row)
        if not self.archive_written and (until is None
                                         or until > self.archived_at):
            self._write_archive()

    def _write_archive(self):
        for db, table, row in self.archive.drain():
            self.files[db, table].add(row)
        self.archive_written = True


def write_audit(folder, instances, triggers_at=TRIGGERS_AT, **options):
    """Write ``generate(instances, **options)`` as audit exports in
    ``folder`` (made if missing), one sub-folder per cell database, the
    triggers and the back-fill coming at ``triggers_at`` of the span.
    Returns a ``Result`` (the source rows written, per table)."""
    began = time.monotonic()
    if not 0 <= triggers_at <= 1:
        raise UserError('the audit triggers\' time must be within 0..1 of '
                        'the span')
    folder = os.fspath(folder)
    if not os.path.isdir(os.path.dirname(os.path.abspath(folder))):
        raise UserError(f'cannot write {folder}: no such directory')
    history = _AuditedHistory(instances, **options)
    ts = history.time_text
    since = ts(history.s0 + int(triggers_at * history.days * 86400))
    archived_at = ts(history.archive_before)
    files = {}
    try:
        for db in history.cells:
            os.makedirs(os.path.join(folder, db), exist_ok=True)
            for table in SOURCE_TABLES:
                files[db, table] = _AuditFile(
                    os.path.join(folder, db, audit.file_name(table)))
        trail = _Trail(files, since,
                       archived_at if archived_at >= since else None, folder)
        for db, nova_table, rows in history.rows():
            if nova_table not in _AUDITED:
                continue
            table, archived = _AUDITED[nova_table]
            for row in rows:
                values = dict(zip(COLUMNS[nova_table], row))
                life = (history.lives.pop((db, values['id']))
                        if table == INSTANCES else None)
                trail.record(db, table, archived, values, life, ts)
            trail.release(ts(history.clock))
        trail.release()
        for out in files.values():
            out.close()
    except OSError as e:
        for out in files.values():
            out.abort()
        raise UserError(f'cannot write {folder}: {e.strerror}') from None
    except BaseException:
        for out in files.values():
            out.abort()
        raise
    return Result(history.counts, time.monotonic() - began)
