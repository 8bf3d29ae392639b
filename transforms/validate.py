"""Checking event rows before they are joined: times parsed, bad rows rejected.

Whatever the source, event times arrive as Nova's text (``YYYY-MM-DD
HH:MM:SS``, naive UTC). They are parsed here, vectorised, into integer seconds
since 1970; each row that cannot be a trace row is dropped under one reason.
"""
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c
from starcompactor.transforms.schema import DB

NOVA_TIME_FORMAT = '%Y-%m-%d %H:%M:%S'

# Events after validation: times, never null, both as seconds since 1970
# (to compute with) and as Nova's text (to print: far cheaper than
# formatting the seconds again).
VALID_EVENTS_SCHEMA = pa.schema([
    (DB, pa.string()),
    ('id', pa.int64()),
    ('action_id', pa.int64()),
    ('event', pa.string()),
    ('start', pa.int64()),
    ('finish', pa.int64()),
    ('start_time', pa.string()),
    ('finish_time', pa.string()),
    ('result', pa.string()),
])


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
        'start_time': events.column('start_time'),
        'finish_time': events.column('finish_time'),
        'result': events.column('result'),
    }, schema=VALID_EVENTS_SCHEMA).filter(pc.invert(rejected))
    return valid, rejects


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
    return instances.filter(good), {c.INSTANCE_BAD_UUID: bad}
