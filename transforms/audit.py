"""Audit-table exports: their format, and Nova's rows as of a moment.

Some clouds keep Nova's history outside Nova's tables: MySQL triggers copy
every insert, update and delete of the watched tables into an
``openstack_audit`` database, and a nightly job exports each audit table to
a Parquet file, ``openstack_audit.audit_nova_<table>.parquet``, flat in one
folder per Nova database. Every audit table has the same columns
(``AUDIT_COLUMNS``): ``id`` is the source row's id (as text), ``data`` a
JSON snapshot of the watched columns of the source row. One source row has
several snapshots: an INSERT, an UPDATE whenever a watched column changed,
a DELETE when the row was (soft-)deleted or archived. Rows that existed
before the triggers are back-filled: an INSERT dated (``audit_event_time``)
by the row's own ``created_at``, written (``audit_changed_at``) when the
back-fill ran.

**The as-of rule.** A source row as of a moment (the run's cut) is its
latest snapshot by ``(audit_event_time, audit_id)`` among those at or before
that moment. A DELETE snapshot ends a row's changes but never removes it
from the history: the row stays as its latest INSERT or UPDATE says (an
archived action is still history); a row known from DELETE snapshots alone
is as the latest of them says. ``audit_changed_at`` is never used: for
back-filled rows it says when the back-fill ran, not when anything happened.

Everything here is column-wise Arrow work, without Beam: the source
(``pipeline.sources.audit``) runs it, and ``synth`` shares the format.
"""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from starcompactor.transforms.schema import (
    ACTIONS, EVENTS, INSTANCES, SOURCE_COLUMNS, source_schema)

AUDIT_DATABASE = 'openstack_audit'
AUDIT_TABLES = {
    INSTANCES: 'audit_nova_instances',
    ACTIONS: 'audit_nova_instance_actions',
    EVENTS: 'audit_nova_instance_actions_events',
}
AUDIT_COLUMNS = ('audit_id', 'id', 'audit_event_type', 'audit_event_time',
                 'audit_changed_by', 'audit_changed_at', 'data')
# What the as-of rule needs of them.
READ_COLUMNS = ('audit_id', 'id', 'audit_event_type', 'audit_event_time',
                'data')
INSERT, UPDATE, DELETE = 'INSERT', 'UPDATE', 'DELETE'
EVENT_TYPES = (INSERT, UPDATE, DELETE)

# Why an audit row gives no snapshot (counted rejects of its table).
BAD_TIME = 'bad_time'                # audit_event_time missing or unreadable
BAD_EVENT_TYPE = 'bad_event_type'    # not INSERT, UPDATE or DELETE
BAD_JSON = 'bad_json'                # data is no JSON object of the columns
ID_MISMATCH = 'id_mismatch'          # id is not the id in data

NOVA_TIME_FORMAT = '%Y-%m-%d %H:%M:%S'
# MySQL renders a DATETIME in JSON as '2024-01-01 10:00:00.000000'; other
# exporters write ISO 8601. Either becomes Nova's text; anything else stays
# as it is, for validation to reject.
_TIME_TEXT = (r'^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?'
              r'(?:Z|[+-]00:?00)?$')
_TIME_COLUMNS = ('start_time', 'finish_time')

# Columns a snapshot carries besides the source columns: what orders the
# snapshots of one row (the latest is the greatest), and, in the source,
# the site (Nova database) it came from.
_RANK = '_rank'          # 0 for DELETE, 1 for INSERT and UPDATE
_TIME = '_time'          # audit_event_time, seconds since 1970
_AUDIT_ID = '_audit_id'
SITE = '_site'
_ORDER = (_RANK, _TIME, _AUDIT_ID)
_JSON_BLOCK_BYTES = 1 << 23

_TIME_UNITS = {'s': 1, 'ms': 1_000, 'us': 1_000_000, 'ns': 1_000_000_000}


def file_name(table):
    """The export of a source table's audit table."""
    return f'{AUDIT_DATABASE}.{AUDIT_TABLES[table]}.parquet'


def _plain(column):
    """A column as one plain array (Parquet may give chunks, dictionaries
    or large strings)."""
    if isinstance(column, pa.ChunkedArray):
        column = (column.combine_chunks() if column.num_chunks
                  else pa.array([], column.type))
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    return column


def nova_times(column):
    """Time text as Nova stores it (``YYYY-MM-DD HH:MM:SS``)."""
    return pc.replace_substring_regex(_plain(column), _TIME_TEXT, r'\1 \2')


def event_seconds(column):
    """``audit_event_time`` as seconds since 1970 (Parquet timestamps, naive
    ones UTC, or text), and which values are missing or unreadable."""
    column = _plain(column)
    if pa.types.is_timestamp(column.type):
        ticks = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(
            zero_copy_only=False)
        seconds = np.floor_divide(ticks, _TIME_UNITS[column.type.unit])
        return seconds, column.is_null().to_numpy(zero_copy_only=False)
    parsed = pc.strptime(nova_times(column.cast(pa.string())),
                         format=NOVA_TIME_FORMAT, unit='s',
                         error_is_null=True)
    seconds = pc.fill_null(parsed.cast(pa.int64()), 0)
    return (seconds.to_numpy(zero_copy_only=False),
            parsed.is_null().to_numpy(zero_copy_only=False))


# -- data: JSON snapshots -----------------------------------------------------

def _json_lines(data, schema):
    """All of ``data`` parsed at once by Arrow's JSON reader (one object a
    line), or None when some value is not one line of one object of the
    schema's types: then each is parsed alone."""
    if data.null_count or not len(data):
        return None
    lines = pc.binary_join_element_wise(data, '', '\n')
    offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1,
                            lines.offset * 4)
    text = lines.buffers()[2].slice(int(offsets[0]),
                                    int(offsets[-1] - offsets[0]))
    try:
        parsed = pa_json.read_json(
            pa.BufferReader(text),
            read_options=pa_json.ReadOptions(use_threads=False,
                                             block_size=_JSON_BLOCK_BYTES),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior='ignore',
                newlines_in_values=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if parsed.num_rows != len(data):   # a blank line, or two objects on one
        return None
    return parsed.select(schema.names).cast(schema)


def _fits(value, typ):
    if value is None:
        return True
    if pa.types.is_integer(typ):
        return (isinstance(value, int) and not isinstance(value, bool)
                and -2 ** 63 <= value < 2 ** 63)
    return isinstance(value, str)


def _json_object(text, schema):
    """The values of one snapshot, or None if it is no JSON object whose
    values have the schema's types."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or not all(
            _fits(value.get(field.name), field.type) for field in schema):
        return None
    return value


def _json_each(data, schema):
    rows = [_json_object(text, schema) for text in data.to_pylist()]
    broken = np.array([row is None for row in rows], bool)
    rows = [row or {} for row in rows]
    return pa.table({field.name: pa.array([row.get(field.name)
                                           for row in rows], field.type)
                     for field in schema}, schema), broken


def parse_data(data, table):
    """The source columns (``SOURCE_COLUMNS[table]``) of JSON snapshots,
    times as Nova's text, and which snapshots are broken (their values
    null): not a JSON object, or a value of the wrong type."""
    schema = pa.schema(SOURCE_COLUMNS[table])
    data = _plain(data).cast(pa.string())
    parsed = _json_lines(data, schema)
    if parsed is not None:
        broken = np.zeros(len(data), bool)
    else:
        parsed, broken = _json_each(data, schema)
    for name in _TIME_COLUMNS:
        if name in schema.names:
            index = schema.get_field_index(name)
            parsed = parsed.set_column(index, name,
                                       nova_times(parsed.column(name)))
    return parsed, broken


# -- snapshots and the as-of rule ---------------------------------------------

def snapshots(batch, table, cut=None):
    """Audit rows of a source table (``READ_COLUMNS``) -> its snapshots (the
    source columns and what orders them), and counts of the rows that hold
    none, by reason. Rows dated after ``cut`` (seconds since 1970) are left
    out uncounted: they tell of a later state."""
    seconds, bad_time = event_seconds(batch.column('audit_event_time'))
    keep = ~bad_time
    if cut is not None:
        keep &= seconds <= cut
    kinds = _plain(batch.column('audit_event_type')).cast(pa.string())
    known = pc.fill_null(pc.is_in(kinds, value_set=pa.array(EVENT_TYPES)),
                         False).to_numpy(zero_copy_only=False)
    rejects = {BAD_TIME: int(bad_time.sum()),
               BAD_EVENT_TYPE: int((keep & ~known).sum())}
    keep &= known
    batch, seconds = batch.filter(pa.array(keep)), seconds[keep]
    kinds = kinds.filter(pa.array(keep))

    values, broken = parse_data(batch.column('data'), table)
    audit_ids = _plain(batch.column('id')).cast(pa.string())
    same_id = pc.fill_null(pc.equal(values.column('id').cast(pa.string()),
                                    audit_ids),
                           False).to_numpy(zero_copy_only=False)
    rejects[BAD_JSON] = int(broken.sum())
    rejects[ID_MISMATCH] = int((~broken & ~same_id).sum())
    good = ~broken & same_id

    rank = pc.not_equal(kinds, DELETE).cast(pa.int8())
    order = pa.table({
        _RANK: rank,
        _TIME: pa.array(seconds, pa.int64()),
        _AUDIT_ID: pc.fill_null(_plain(batch.column('audit_id')).cast(
            pa.int64()), 0),
    })
    snaps = pa.Table.from_arrays(values.columns + order.columns,
                                 values.schema.names + order.schema.names)
    return snaps.filter(pa.array(good)), rejects


def latest(snaps, keys=(SITE, 'id')):
    """One snapshot per ``keys``: the greatest by (INSERT or UPDATE before
    DELETE, audit_event_time, audit_id); see the as-of rule."""
    if snaps.num_rows < 2:
        return snaps
    order = pc.sort_indices(snaps, sort_keys=[
        (name, 'ascending') for name in (*keys, *_ORDER)])
    snaps = snaps.take(order)
    same = np.ones(snaps.num_rows - 1, bool)
    for name in keys:
        values = snaps.column(name).to_numpy()
        same &= values[1:] == values[:-1]
    return snaps.filter(pa.array(np.append(~same, True)))


def source_rows(snaps, table, sites):
    """Snapshots (with their ``SITE`` index) as rows of a source table
    (``schema.source_schema``), ``db`` naming the site: ``sites[index]``."""
    db = pa.array(sites, pa.string()).take(snaps.column(SITE))
    columns = [name for name, _ in SOURCE_COLUMNS[table]]
    return pa.Table.from_arrays(
        [db] + [snaps.column(name) for name in columns],
        schema=source_schema(table))
