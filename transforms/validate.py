"""Checking source rows before they are joined: times parsed, bad rows
rejected, the rest made compact.

Whatever the source, event times arrive as Nova's text (``YYYY-MM-DD
HH:MM:SS``, naive UTC). They are parsed here, vectorised, into integer seconds
since 1970; each row that cannot be a trace row is dropped under one reason.

Valid rows travel through two shuffles, so they travel light: the text times
are dropped (the seconds say the same) and repetitive text (cell names, event
names, results, users, projects, hosts) is dictionary-encoded.
"""
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c
from starcompactor.transforms.schema import (
    ACTIONS, DB, EVENTS, INSTANCES, source_schema)

NOVA_TIME_FORMAT = '%Y-%m-%d %H:%M:%S'
REPEATED_TEXT = pa.dictionary(pa.int32(), pa.string())

# Columns dictionary-encoded after validation, per table.
_DICTIONARY_COLUMNS = {
    EVENTS: (DB, 'event', 'result'),
    ACTIONS: (DB,),
    INSTANCES: (DB, 'user_id', 'project_id', 'host', 'node'),
}

# Events after validation: times as seconds since 1970, never null.
VALID_EVENTS_SCHEMA = pa.schema([
    (DB, REPEATED_TEXT),
    ('id', pa.int64()),
    ('action_id', pa.int64()),
    ('event', REPEATED_TEXT),
    ('start', pa.int64()),
    ('finish', pa.int64()),
    ('result', REPEATED_TEXT),
])


def _compact_schema(schema, columns):
    return pa.schema([
        field.with_type(REPEATED_TEXT) if field.name in columns else field
        for field in schema])


VALID_SCHEMAS = {
    EVENTS: VALID_EVENTS_SCHEMA,
    ACTIONS: _compact_schema(source_schema(ACTIONS),
                             _DICTIONARY_COLUMNS[ACTIONS]),
    INSTANCES: _compact_schema(source_schema(INSTANCES),
                               _DICTIONARY_COLUMNS[INSTANCES]),
}


def compact(table, name):
    """``table`` of source table ``name``, repetitive text
    dictionary-encoded (``VALID_SCHEMAS[name]``)."""
    for column in _DICTIONARY_COLUMNS[name]:
        index = table.schema.get_field_index(column)
        values = table.column(index)
        if not pa.types.is_dictionary(values.type):
            table = table.set_column(index, column,
                                     pc.dictionary_encode(values))
    return table


def parse_nova_times(column):
    """Seconds since 1970 of Nova time strings; also which values were bad.

    A value is bad when it is present but is not a real time, such as MySQL's
    zero date ``0000-00-00 00:00:00``.
    """
    parsed = pc.strptime(column, format=NOVA_TIME_FORMAT, unit='s',
                         error_is_null=True)
    bad = pc.and_kleene(pc.is_valid(column), pc.is_null(parsed))
    return parsed.cast(pa.int64()), bad


def validate_events(events, cut=None):
    """Split raw event rows into valid ones and counts of rejects by reason.

    ``cut`` (seconds since 1970), when given, is the moment the trace
    describes: an event finished after it was still running at the cut.
    """
    start, start_bad = parse_nova_times(events.column('start_time'))
    finish, finish_bad = parse_nova_times(events.column('finish_time'))
    unfinished = pc.is_null(finish)
    if cut is not None:
        unfinished = pc.or_kleene(unfinished, pc.greater(finish, cut))

    # Each row gets the first reason that applies, in this order.
    reasons = (
        (c.EVENT_BAD_TIME, pc.or_kleene(start_bad, finish_bad)),
        (c.EVENT_NO_START, pc.is_null(start)),
        (c.EVENT_UNFINISHED, unfinished),
        (c.EVENT_FINISH_BEFORE_START, pc.less(finish, start)),
    )
    rejected = pa.array([False] * events.num_rows, pa.bool_())
    rejects = {}
    for reason, applies in reasons:
        newly = pc.and_kleene(pc.fill_null(applies, False), pc.invert(rejected))
        rejects[reason] = pc.sum(newly).as_py() or 0
        rejected = pc.or_kleene(rejected, newly)

    valid = pa.table({
        DB: events.column(DB),
        'id': events.column('id'),
        'action_id': events.column('action_id'),
        'event': events.column('event'),
        'start': start,
        'finish': finish,
        'result': events.column('result'),
    }).filter(pc.invert(rejected))
    return compact(valid, EVENTS), rejects


UUID_PATTERN = ('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                '[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')


def validate_instances(instances):
    """Instances whose uuid is a uuid, and counts of the others by reason.

    Nova's uuid column is free text; a damaged row must not join, nor carry
    a non-uuid into the trace, where uuids are published unmasked.
    """
    good = pc.fill_null(
        pc.match_substring_regex(instances.column('uuid'), UUID_PATTERN),
        False)
    bad = instances.num_rows - (pc.sum(good).as_py() or 0)
    return compact(instances.filter(good), INSTANCES), \
        {c.INSTANCE_BAD_UUID: bad}


def validate_actions(actions):
    """Every action row can join; it only gets compact."""
    return compact(actions, ACTIONS), {}


def validate(name, batch, cut=None):
    """A batch of source table ``name`` -> its valid rows, compact, and
    counts of the others by reason (``cut``: see ``validate_events``)."""
    if name == EVENTS:
        return validate_events(batch, cut)
    if name == INSTANCES:
        return validate_instances(batch)
    return validate_actions(batch)
