"""The one join of the trace: events to actions to instances.

Two bucketed co-groupings (see ``buckets``): events meet their action by
``(db, action_id)``, then events, now carrying the action's instance uuid,
meet their instance by ``(db, uuid)``. Inside a bucket ``pyarrow.Table.join``
does the work. Rows that find no parent, and parents that get no events, are
counted by reason here, the only place that knows; so are the joined rows of
instances the operator excluded (``transforms.exclude``).

Each co-grouping is a ``GroupByKey`` of ``(bucket, (table, piece))`` pairs
that all come from ONE PCollection: instances, bucketed by uuid from the
start, ride along the first grouping to meet their events in the second.
That is what ``beam.CoGroupByKey`` expands to, minus its ``Flatten`` of one
PCollection per table, which the DirectRunner materialises in full (every
row pickled once more) before grouping.
"""
from typing import Any, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c
from starcompactor.transforms.derive import min_or_none
from starcompactor.transforms.exclude import Exclusions
from starcompactor.transforms.buckets import (
    concat, drop_duplicates, split_into_buckets)
from starcompactor.transforms.schema import ACTIONS, DB, EVENTS, INSTANCES
from starcompactor.transforms.validate import (
    REPEATED_TEXT, VALID_EVENTS_SCHEMA, VALID_SCHEMAS)

_FOUND = '_found'   # a never-null marker column: null after a left join = no match

# Events that found their action carry its instance uuid to the second
# grouping; their own id is not needed past the first, where rows read twice
# are dropped by it.
EVENTS_WITH_INSTANCE_SCHEMA = VALID_EVENTS_SCHEMA.remove(
    VALID_EVENTS_SCHEMA.get_field_index('id')).append(
    pa.field('instance_uuid', pa.string()))

_INSTANCE_COLUMNS = ('hostname', 'user_id', 'project_id', 'host',
                     'memory_mb', 'root_gb', 'vcpus', 'node')
JOINED_SCHEMA = pa.schema(
    list(EVENTS_WITH_INSTANCE_SCHEMA) +
    [VALID_SCHEMAS[INSTANCES].field(name) for name in _INSTANCE_COLUMNS])


def _with_marker(table):
    return table.append_column(
        _FOUND, pa.array([True] * table.num_rows, pa.bool_()))


def _left_join(left, right, keys):
    """Left outer join; returns (matched rows, unmatched rows) of ``left``."""
    joined = left.join(_with_marker(right), keys=keys, join_type='left outer')
    found = pc.is_valid(joined.column(_FOUND))
    joined = joined.drop_columns([_FOUND])
    return joined.filter(found), joined.filter(pc.invert(found))


def _unmatched_count(left, right, keys):
    return left.join(right.select(keys), keys=keys,
                     join_type='left anti').num_rows


def _distinct_count(table, keys):
    return table.group_by(keys).aggregate([]).num_rows


def _once(table, name):
    """A row read twice (from the live table, then from its shadow_ copy,
    archived meanwhile) counts once; each copy of a key is in one bucket."""
    table, dropped = drop_duplicates(table, [DB, 'id'])
    c.count_rejected(name, c.READ_TWICE, dropped)
    return table


# The key each table is bucketed by for its first grouping.
FIRST_KEYS = {
    EVENTS: [DB, 'action_id'],
    ACTIONS: [DB, 'id'],
    INSTANCES: [DB, 'uuid'],      # already for the second grouping
}
INSTANCE_KEY = [DB, 'instance_uuid']
ACTION_KEY = [DB, 'action_id']

# Outputs of the join.
JOINED = 'joined'
EARLIEST_START = 'earliest_start'

_INSTANCE_KEY_SCHEMA = pa.schema([(DB, REPEATED_TEXT),
                                  ('instance_uuid', pa.string())])
_EARLIEST_STARTS_SCHEMA = _INSTANCE_KEY_SCHEMA.append(
    pa.field('start_min', pa.int64()))


def bucket_for_join(tagged, num_buckets):
    """``(table, batch)`` -> ``(bucket, (table, piece))`` for each bucket
    of the batch's first join key."""
    table, batch = tagged
    for bucket, piece in split_into_buckets(batch, FIRST_KEYS[table],
                                            num_buckets):
        yield bucket, (table, piece)


def _by_table(pieces):
    """The tables a grouping delivered, as ``{table: [piece, ...]}``."""
    grouped = {EVENTS: [], ACTIONS: [], INSTANCES: []}
    for table, piece in pieces:
        grouped[table].append(piece)
    return grouped


def join_events_to_actions(element, num_buckets, earliest_start=False,
                           exclude=Exclusions()):
    """One bucket of events, actions (and passing instances) -> events with
    their instance uuid, already cut into the buckets of the next join.

    With ``earliest_start``, also (tagged ``EARLIEST_START``) what finds the
    trace's earliest start without the whole second join: each instance's
    key (not of the instances ``exclude`` names: theirs are no trace rows),
    and each instance uuid's earliest event start.
    """
    bucket, pieces = element
    grouped = _by_table(pieces)
    for piece in grouped[INSTANCES]:       # bucketed by uuid already
        yield bucket, (INSTANCES, piece)
        if earliest_start:
            kept, _ = exclude.split(piece)
            yield beam.pvalue.TaggedOutput(EARLIEST_START, (bucket, (
                INSTANCES, kept.select([DB, 'uuid']).rename_columns(
                    INSTANCE_KEY))))
    events = _once(concat(grouped[EVENTS], VALID_EVENTS_SCHEMA), EVENTS)
    actions = (_once(concat(grouped[ACTIONS], VALID_SCHEMAS[ACTIONS]), ACTIONS)
               .select([DB, 'id', 'instance_uuid'])
               .rename_columns([DB, 'action_id', 'instance_uuid']))
    keys = ACTION_KEY

    matched, orphans = _left_join(events, actions, keys)
    c.count_rejected(EVENTS, c.EVENT_NO_ACTION, orphans.num_rows)
    c.count_rejected(ACTIONS, c.ACTION_NO_EVENTS,
                     _unmatched_count(actions, events, keys))

    matched = matched.select(EVENTS_WITH_INSTANCE_SCHEMA.names).cast(
        EVENTS_WITH_INSTANCE_SCHEMA)
    for next_bucket, piece in split_into_buckets(matched, INSTANCE_KEY,
                                                 num_buckets):
        yield next_bucket, (EVENTS, piece)
        if earliest_start:
            yield beam.pvalue.TaggedOutput(EARLIEST_START, (next_bucket, (
                EVENTS, piece.group_by(INSTANCE_KEY).aggregate(
                    [('start', 'min')]))))


def earliest_start_in_bucket(element):
    """The earliest start of the events of one bucket that will find their
    instance (the rows of the trace), if any."""
    _, pieces = element
    grouped = _by_table(pieces)
    starts = concat(grouped[EVENTS], _EARLIEST_STARTS_SCHEMA)
    instances = concat(grouped[INSTANCES], _INSTANCE_KEY_SCHEMA)
    in_trace = starts.join(instances, keys=INSTANCE_KEY,
                           join_type='left semi')
    earliest = pc.min(in_trace.column('start_min')).as_py()
    if earliest is not None:
        yield earliest


def join_events_to_instances(element, exclude=Exclusions()):
    """One bucket of events (with uuid) and instances -> joined trace rows,
    but those of instances ``exclude`` names."""
    _, pieces = element
    grouped = _by_table(pieces)
    events = concat(grouped[EVENTS], EVENTS_WITH_INSTANCE_SCHEMA)
    instances = (_once(concat(grouped[INSTANCES], VALID_SCHEMAS[INSTANCES]),
                       INSTANCES)
                 .select([DB, 'uuid'] + list(_INSTANCE_COLUMNS))
                 .rename_columns(INSTANCE_KEY + list(_INSTANCE_COLUMNS)))
    keys = INSTANCE_KEY

    matched, orphans = _left_join(events, instances, keys)
    c.count_rejected(EVENTS, c.EVENT_NO_INSTANCE, orphans.num_rows)
    c.count_rejected(ACTIONS, c.ACTION_NO_INSTANCE,
                     _distinct_count(orphans, ACTION_KEY))
    unused_instances = _unmatched_count(instances, events, keys)
    c.count_rejected(INSTANCES, c.INSTANCE_NO_EVENTS, unused_instances)

    # What is left holds every row of the trace, and of its instances and
    # actions: those of excluded instances go, each table counted alike.
    trace, excluded = exclude.split(matched)
    excluded_instances = 0
    for reason, rows in excluded:
        c.count_rejected(EVENTS, reason, rows.num_rows)
        c.count_rejected(ACTIONS, reason, _distinct_count(rows, ACTION_KEY))
        n = _distinct_count(rows, INSTANCE_KEY)
        c.count_rejected(INSTANCES, reason, n)
        excluded_instances += n
    c.count_in_trace(EVENTS, trace.num_rows)
    c.count_in_trace(ACTIONS, _distinct_count(trace, ACTION_KEY))
    # Each instance of the bucket once (``_once``): no grouping of the
    # trace rows needed.
    c.count_in_trace(INSTANCES, instances.num_rows - unused_instances
                     - excluded_instances)
    if trace.num_rows:
        yield trace.select(JOINED_SCHEMA.names).cast(JOINED_SCHEMA)


class JoinEventsToInstances(beam.PTransform):
    """``(table, Arrow batch)`` pairs of the three tables (events validated)
    -> ``{JOINED: Arrow tables of joined rows (JOINED_SCHEMA)}``, and with
    ``earliest_start``, ``EARLIEST_START``: one element, the earliest start
    among the joined rows (None if there are none).

    The earliest start comes from a third, small grouping of per-instance
    earliest starts and instance keys, ready before the second join runs: a
    trace's epoch is known without holding every joined row back first.

    The instances ``exclude`` names (``transforms.exclude``) give no rows.
    """

    def __init__(self, num_buckets, earliest_start=False,
                 exclude=Exclusions()):
        super().__init__()
        self.num_buckets = num_buckets
        self.earliest_start = earliest_start
        self.exclude = exclude

    def expand(self, batches):
        n = self.num_buckets
        events_by_instance = (
            batches
            | 'BucketByFirstKey' >> beam.FlatMap(bucket_for_join, n)
            | 'GroupByAction' >> beam.GroupByKey()
            | 'JoinEventsToActions' >> c.Counted(
                join_events_to_actions, n, self.earliest_start, self.exclude,
                tags=[EARLIEST_START], main=JOINED,
                main_type=Tuple[int, Tuple[str, Any]]))
        joined = (
            events_by_instance[JOINED]
            | 'GroupByInstance' >> beam.GroupByKey()
            | 'JoinEventsToInstances' >> c.Counted(join_events_to_instances,
                                                   self.exclude))
        if not self.earliest_start:
            return {JOINED: joined}
        earliest = (
            events_by_instance[EARLIEST_START]
            | 'GroupStartsByInstance' >> beam.GroupByKey()
            | 'EarliestStartPerBucket' >> beam.FlatMap(
                earliest_start_in_bucket)
            | 'EarliestStart' >> beam.CombineGlobally(min_or_none))
        return {JOINED: joined, EARLIEST_START: earliest}
