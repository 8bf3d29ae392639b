"""BuildTrace and each step of the join, on small in-memory Arrow batches in
Beam's TestPipeline: no database, no files.

Expected rows are written out by hand. Times: 2020-01-01 00:00:00 UTC is
1577836800 seconds since 1970; the earliest start in the trace below
(event 100, 00:00:10) is the epoch unless one is given.
"""
import hashlib
import hmac
import os
import tempfile

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from starcompactor.pipeline.counts import WriteCounts, read_counts
from starcompactor.transforms.counters import EPOCH, NAMESPACE, all_counts
from starcompactor.transforms.join import (
    EARLIEST_START, EVENTS_WITH_INSTANCE_SCHEMA, JOINED, JoinEventsToInstances,
    bucket_for_join, earliest_start_in_bucket, join_events_to_actions,
    join_events_to_instances)
from starcompactor.transforms.mask import HMAC_SHA256, NO_MASKING, KeySource
from starcompactor.transforms.schema import (
    ACTIONS, EVENTS, INSTANCES, source_schema)
from starcompactor.transforms.trace import BuildTrace, TraceSpec
from starcompactor.transforms.validate import REPEATED_TEXT, validate

U1 = 'aaaaaaaa-0000-4000-8000-000000000001'
U2 = 'aaaaaaaa-0000-4000-8000-000000000002'
U3 = 'aaaaaaaa-0000-4000-8000-000000000003'
U_MISSING = 'aaaaaaaa-0000-4000-8000-000000000099'


def batch(table, db, rows):
    """``(table, Arrow batch)`` of source rows given as tuples in the order
    of ``SOURCE_COLUMNS[table]`` (``db`` left out)."""
    schema = source_schema(table)
    return table, pa.Table.from_pylist(
        [dict(zip(schema.names, (db,) + row)) for row in rows], schema)


# A small history of one cell, 'nova'. Instance rows: id, uuid, user,
# project, instance name, host, memory MB, root GB, vcpus.
I1 = (1, U1, 'alice', 'physics', 'vm-1', 'compute-1', 2048, 20, 1)
I2 = (2, U2, 'bob', 'bio', 'vm-2', 'compute-2', 4096, 40, 2)
I3 = (3, U3, 'carol', 'bio', 'vm-3', 'compute-2', 1024, 10, 1)  # no events
A10, A11, A12 = (10, U1), (11, U1), (12, U2)    # U1 has two actions
A13 = (13, U_MISSING)                           # its instance does not exist
A14 = (14, U1)                                  # no events
E100 = (100, 10, 'create', '2020-01-01 00:00:10', '2020-01-01 00:00:15',
        'Success')
E101 = (101, 10, 'build', '2020-01-01 00:00:20', '2020-01-01 00:00:50',
        'Success')
E102 = (102, 11, 'reboot', '2020-01-02 00:00:00', '2020-01-02 00:00:30',
        'Error')
E103 = (103, 12, 'create', '2020-01-01 01:00:00', '2020-01-01 01:00:05',
        'Success')
# Earlier than every trace row: neither is the epoch, neither is in the trace.
E104 = (104, 99, 'reboot', '2020-01-01 00:00:01', '2020-01-01 00:00:02',
        'Success')                              # its action does not exist
E105 = (105, 13, 'create', '2020-01-01 00:00:00', '2020-01-01 00:00:03',
        'Success')                              # its instance does not exist
E106 = (106, 11, 'reboot', '2020-01-02 00:01:00', None, None)   # running

HISTORY = [
    batch(INSTANCES, 'nova', [I1, I2, I3]),
    batch(ACTIONS, 'nova', [A10, A11, A12, A13, A14]),
    batch(EVENTS, 'nova', [E100, E101, E104]),
    batch(EVENTS, 'nova', [E102, E103, E105, E106]),
]

# An instance's fields in the trace, unmasked.
ALPHA = dict(memory_mb=2048, disk_gb=20, vcpus=1, instance_name='vm-1',
             user_id='alice', project_id='physics',
             host_name_physical='compute-1')
BETA = dict(memory_mb=4096, disk_gb=40, vcpus=2, instance_name='vm-2',
            user_id='bob', project_id='bio', host_name_physical='compute-2')


def trace_row(uuid, event, start_time, start_sec, finish_time, finish_sec,
              duration, result, instance):
    return dict(instance_uuid=uuid, event=event, start_time=start_time,
                start_sec=start_sec, finish_time=finish_time,
                finish_sec=finish_sec, event_duration=duration,
                result=result, **instance)


HISTORY_TRACE = [
    trace_row(U1, 'create', '2020-01-01T00:00:10Z', 0,
              '2020-01-01T00:00:15Z', 5, 5, 'Success', ALPHA),
    trace_row(U1, 'build', '2020-01-01T00:00:20Z', 10,
              '2020-01-01T00:00:50Z', 40, 30, 'Success', ALPHA),
    trace_row(U1, 'reboot', '2020-01-02T00:00:00Z', 86390,
              '2020-01-02T00:00:30Z', 86420, 30, 'Error', ALPHA),
    trace_row(U2, 'create', '2020-01-01T01:00:00Z', 3590,
              '2020-01-01T01:00:05Z', 3595, 5, 'Success', BETA),
]

HISTORY_COUNTS = {
    'read.events': 7, 'read.actions': 5, 'read.instances': 3,
    'in_trace.events': 4, 'in_trace.actions': 3, 'in_trace.instances': 2,
    'rejected.events.unfinished': 1,
    'rejected.events.no_action': 1,
    'rejected.events.no_instance': 1,
    'rejected.actions.no_instance': 1,
    'rejected.actions.no_finished_events': 1,
    'rejected.instances.no_finished_events': 1,
    'trace_rows': 4,
    'epoch': 1577836810,
}


def rows_of(tables):
    """The rows of a PCollection of Arrow tables, as dicts."""
    return tables | beam.FlatMap(lambda table: table.to_pylist())


def counters(result):
    """``{name: value}`` of starcompactor's counters, summed over steps."""
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals = {}
    for counter in query['counters']:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + counter.committed
    return totals


def build_trace(batches, expected_rows, num_buckets=8, **spec):
    """Run BuildTrace on ``batches``, assert its rows; its counts, as the
    pipeline's data gives them (Beam's counters must say the same)."""
    pipeline = test_pipeline.TestPipeline()
    trace = (pipeline
             | beam.Create(batches, reshuffle=False)
             | BuildTrace(TraceSpec(**spec), num_buckets))
    assert_that(rows_of(trace), equal_to(expected_rows))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'counts.json')
        _ = pipeline | WriteCounts(path)
        metrics = counters(pipeline.run())
        counts = read_counts(path)
    assert metrics == {name: value for name, value in counts.items()
                       if name != EPOCH}
    return counts


# -- BuildTrace ---------------------------------------------------------------

@pytest.mark.parametrize('num_buckets', [1, 3, 64])
def test_trace_of_a_small_history(num_buckets):
    """Several actions per instance; events without their action, actions
    without their instance or events, an instance without events: left out
    and counted. 64 buckets for a handful of keys: most are empty."""
    counts = build_trace(HISTORY, HISTORY_TRACE, num_buckets=num_buckets,
                         mask_method=NO_MASKING)
    assert counts == HISTORY_COUNTS


def test_rows_read_twice_are_counted_and_in_the_trace_once():
    """The live table, then its shadow_ copy: rows archived in between come
    again, in later batches, with the same db and id."""
    again = [batch(INSTANCES, 'nova', [I1]),
             batch(ACTIONS, 'nova', [A10]),
             batch(EVENTS, 'nova', [E100, E104])]
    counts = build_trace(HISTORY + again, HISTORY_TRACE,
                         mask_method=NO_MASKING)
    assert counts == dict(
        HISTORY_COUNTS,
        **{'read.events': 9, 'read.actions': 6, 'read.instances': 4,
           'rejected.events.read_twice': 2,
           'rejected.actions.read_twice': 1,
           'rejected.instances.read_twice': 1})


def test_two_cells_with_the_same_ids_stay_apart():
    """Ids are per cell, and an instance moved across cells keeps its uuid:
    each event joins its own cell's action and instance."""
    moved = (1, U1, 'alice', 'physics', 'vm-1', 'compute-9', 8192, 80, 4)
    resize = (100, 10, 'resize', '2020-01-03 00:00:00', '2020-01-03 00:00:07',
              'Success')
    batches = [
        batch(INSTANCES, 'cell1', [I1]), batch(ACTIONS, 'cell1', [A10]),
        batch(EVENTS, 'cell1', [E100]),
        batch(INSTANCES, 'cell2', [moved]), batch(ACTIONS, 'cell2', [A10]),
        batch(EVENTS, 'cell2', [resize]),
    ]
    counts = build_trace(batches, [
        trace_row(U1, 'create', '2020-01-01T00:00:10Z', 0,
                  '2020-01-01T00:00:15Z', 5, 5, 'Success', ALPHA),
        trace_row(U1, 'resize', '2020-01-03T00:00:00Z', 172790,
                  '2020-01-03T00:00:07Z', 172797, 7, 'Success',
                  dict(ALPHA, memory_mb=8192, disk_gb=80, vcpus=4,
                       host_name_physical='compute-9')),
    ], num_buckets=4, mask_method=NO_MASKING)
    assert counts == {
        'read.events': 2, 'read.actions': 2, 'read.instances': 2,
        'in_trace.events': 2, 'in_trace.actions': 2, 'in_trace.instances': 2,
        'trace_rows': 2, 'epoch': 1577836810}


def _hmac(key, value):
    return hmac.new(key, value.encode('utf-8'),
                    hashlib.sha256).hexdigest()[:32]


def test_identities_are_masked_with_the_key(monkeypatch):
    key = b'join-test-key-0123456789abcdef!!'
    monkeypatch.setenv('JOIN_TEST_MASK_KEY', key.decode())
    masked = {field: _hmac(key, value) for field, value in ALPHA.items()
              if isinstance(value, str)}
    build_trace(
        [batch(INSTANCES, 'nova', [I1]), batch(ACTIONS, 'nova', [A10]),
         batch(EVENTS, 'nova', [E100])],
        [trace_row(_hmac(key, U1), 'create', '2020-01-01T00:00:10Z', 0,
                   '2020-01-01T00:00:15Z', 5, 5, 'Success',
                   dict(ALPHA, **masked))],
        mask_method=HMAC_SHA256, mask_uuid=True,
        key_source=KeySource('env', 'JOIN_TEST_MASK_KEY'))


def test_seconds_count_from_a_given_epoch():
    """2020-01-01 00:00:15: event 100 started before it (-1)."""
    build_trace(
        [batch(INSTANCES, 'nova', [I1]), batch(ACTIONS, 'nova', [A10]),
         batch(EVENTS, 'nova', [E100, E101])],
        [trace_row(U1, 'create', '2020-01-01T00:00:10Z', -1,
                   '2020-01-01T00:00:15Z', 0, 5, 'Success', ALPHA),
         trace_row(U1, 'build', '2020-01-01T00:00:20Z', 5,
                   '2020-01-01T00:00:50Z', 35, 30, 'Success', ALPHA)],
        epoch=1577836815, mask_method=NO_MASKING)


# -- the join, step by step ---------------------------------------------------

def valid(table, db, rows):
    """``(table, batch)`` as the join gets it: validated."""
    name, source = batch(table, db, rows)
    return name, validate(name, source)[0]


def test_bucket_for_join_puts_each_join_key_in_one_bucket():
    """Events by action id meet their action by its id; instances are
    bucketed by uuid; every row is in exactly one piece, tagged with its
    table."""
    events = valid(EVENTS, 'nova', [E100, E101, E102, E103, E104])
    actions = valid(ACTIONS, 'nova', [A10, A11, A12])
    instances = valid(INSTANCES, 'nova', [I1, I2])
    bucket_of = {}    # (table, key) -> bucket
    for tagged, key in ((events, 'action_id'), (actions, 'id'),
                        (instances, 'uuid')):
        pieces = list(bucket_for_join(tagged, 16))
        assert sum(piece.num_rows for _, (_, piece) in pieces) == \
            tagged[1].num_rows
        for bucket, (table, piece) in pieces:
            assert table == tagged[0]
            for value in piece.column(key).to_pylist():
                assert bucket_of.setdefault((table, value), bucket) == bucket
    for action_id in (10, 11, 12):
        assert bucket_of[EVENTS, action_id] == bucket_of[ACTIONS, action_id]
    assert {table for table, _ in bucket_of} == {EVENTS, ACTIONS, INSTANCES}


def _join_events_to_actions(element, num_buckets, earliest_start=False):
    """A pipeline that runs ``join_events_to_actions`` on one grouped
    bucket, and its outputs (``JOINED``, ``EARLIEST_START``) to check."""
    pipeline = test_pipeline.TestPipeline()
    outputs = (pipeline
               | beam.Create([element], reshuffle=False)
               | beam.FlatMap(join_events_to_actions, num_buckets,
                              earliest_start)
               .with_outputs(EARLIEST_START, main=JOINED))
    return pipeline, outputs


def _tagged_rows(element):
    """``(bucket, (table, piece))`` -> ``(table, row)`` per row."""
    _, (table, piece) = element
    return [(table, tuple(sorted(row.items()))) for row in piece.to_pylist()]


def test_join_events_to_actions_gives_events_their_instance_uuid():
    """One bucket: events meet their action (events 100, 101 and 102),
    an event without its action (104) and an action without events (14)
    are counted; event 100 read twice is counted and joined once;
    instances pass through in their bucket, and each event goes on to the
    bucket its instance is in."""
    num_buckets = 8
    # Instances are bucketed by uuid from the start: this bucket is their
    # bucket in both groupings.
    (bucket, instance_piece), = bucket_for_join(
        valid(INSTANCES, 'nova', [I1]), num_buckets)
    element = (bucket, [valid(EVENTS, 'nova', [E100, E101]),
                        valid(ACTIONS, 'nova', [A10, A11, A14]),
                        valid(EVENTS, 'nova', [E100, E102, E104]),
                        instance_piece])
    pipeline, outputs = _join_events_to_actions(element, num_buckets)

    def event(action_id, name, start, finish, result):
        return (EVENTS, tuple(sorted(dict(
            db='nova', action_id=action_id, instance_uuid=U1, event=name,
            start=start, finish=finish, result=result).items())))

    instance = (INSTANCES, tuple(sorted(dict(
        db='nova', id=1, uuid=U1, user_id='alice', project_id='physics',
        hostname='vm-1', host='compute-1', memory_mb=2048, root_gb=20,
        vcpus=1, node=None).items())))
    assert_that(outputs[JOINED] | beam.FlatMap(_tagged_rows), equal_to([
        event(10, 'create', 1577836810, 1577836815, 'Success'),
        event(10, 'build', 1577836820, 1577836850, 'Success'),
        event(11, 'reboot', 1577923200, 1577923230, 'Error'),
        instance]), label='rows')
    assert_that(outputs[JOINED] | beam.Map(lambda element: element[0]),
                equal_to([bucket] * 2), label='buckets')
    assert_that(outputs[EARLIEST_START], equal_to([]), label='no starts')
    assert counters(pipeline.run()) == {
        'rejected.events.read_twice': 1,
        'rejected.events.no_action': 1,
        'rejected.actions.no_finished_events': 1}


def test_join_events_to_actions_tells_what_finds_the_earliest_start():
    """With ``earliest_start``: each instance's key, and each instance
    uuid's earliest event start, in the buckets of the second join."""
    element = (0, [valid(EVENTS, 'nova', [E100, E101, E103, E105]),
                   valid(ACTIONS, 'nova', [A10, A12, A13]),
                   valid(INSTANCES, 'nova', [I1])])
    pipeline, outputs = _join_events_to_actions(element, 1, True)
    assert_that(outputs[EARLIEST_START] | beam.FlatMap(_tagged_rows),
                equal_to([
                    (INSTANCES, (('db', 'nova'), ('instance_uuid', U1))),
                    (EVENTS, (('db', 'nova'), ('instance_uuid', U1),
                              ('start_min', 1577836810))),
                    (EVENTS, (('db', 'nova'), ('instance_uuid', U2),
                              ('start_min', 1577840400))),
                    (EVENTS, (('db', 'nova'), ('instance_uuid', U_MISSING),
                              ('start_min', 1577836800)))]))
    pipeline.run().wait_until_finish()


def events_with_instance(rows):
    """Events as the second join gets them: (action id, instance uuid,
    event, start, finish, result) in cell 'nova'."""
    names = ('action_id', 'instance_uuid', 'event', 'start', 'finish',
             'result')
    return EVENTS, pa.Table.from_pylist(
        [dict(zip(names, row), db='nova') for row in rows],
        EVENTS_WITH_INSTANCE_SCHEMA)


def test_join_events_to_instances_joins_and_counts():
    """Events meet their instance; events of a missing instance (two, of
    one action) and an instance without events are counted; instance 1
    read twice is counted and joined once."""
    element = (3, [
        events_with_instance([
            (10, U1, 'create', 1577836810, 1577836815, 'Success'),
            (11, U1, 'reboot', 1577923200, 1577923230, 'Error'),
            (13, U_MISSING, 'create', 1577836800, 1577836803, 'Success'),
            (13, U_MISSING, 'build', 1577836804, 1577836809, 'Success')]),
        valid(INSTANCES, 'nova', [I1, I3]),
        valid(INSTANCES, 'nova', [I1])])
    pipeline = test_pipeline.TestPipeline()
    joined = (pipeline
              | beam.Create([element], reshuffle=False)
              | beam.FlatMap(join_events_to_instances))
    instance = dict(hostname='vm-1', user_id='alice', project_id='physics',
                    host='compute-1', memory_mb=2048, root_gb=20, vcpus=1,
                    node=None)
    assert_that(rows_of(joined), equal_to([
        dict(db='nova', action_id=10, event='create', start=1577836810,
             finish=1577836815, result='Success', instance_uuid=U1,
             **instance),
        dict(db='nova', action_id=11, event='reboot', start=1577923200,
             finish=1577923230, result='Error', instance_uuid=U1,
             **instance)]))
    assert counters(pipeline.run()) == {
        'rejected.instances.read_twice': 1,
        'rejected.events.no_instance': 2,
        'rejected.actions.no_instance': 1,
        'rejected.instances.no_finished_events': 1,
        'in_trace.events': 2, 'in_trace.actions': 2, 'in_trace.instances': 1}


def _starts(rows):
    return EVENTS, pa.table(
        {'db': pa.array(['nova'] * len(rows), REPEATED_TEXT),
         'instance_uuid': [uuid for uuid, _ in rows],
         'start_min': pa.array([start for _, start in rows], pa.int64())})


def _instance_keys(uuids):
    return INSTANCES, pa.table(
        {'db': pa.array(['nova'] * len(uuids), REPEATED_TEXT),
         'instance_uuid': uuids})


def test_earliest_start_in_bucket_is_of_events_that_find_their_instance():
    element = (0, [_starts([(U_MISSING, 1577836800), (U1, 1577836810)]),
                   _starts([(U2, 1577840400)]),
                   _instance_keys([U1, U2])])
    assert list(earliest_start_in_bucket(element)) == [1577836810]
    assert list(earliest_start_in_bucket(
        (0, [_starts([(U_MISSING, 1577836800)]),
             _instance_keys([U1])]))) == []
    assert list(earliest_start_in_bucket((0, [_instance_keys([U1])]))) == []


@pytest.mark.parametrize('num_buckets', [1, 64])
def test_join_events_to_instances_transform(num_buckets):
    """The whole join on validated batches: the joined rows, and the
    earliest start among them only."""
    pipeline = test_pipeline.TestPipeline()
    join = (pipeline
            | beam.Create([valid(table, db, rows) for table, db, rows in (
                (INSTANCES, 'nova', [I1, I2, I3]),
                (ACTIONS, 'nova', [A10, A12, A13]),
                (EVENTS, 'nova', [E101, E103, E104, E105]))],
                reshuffle=False)
            | JoinEventsToInstances(num_buckets, earliest_start=True))
    assert_that(
        rows_of(join[JOINED]) | beam.Map(
            lambda row: (row['instance_uuid'], row['event'], row['host'])),
        equal_to([(U1, 'build', 'compute-1'), (U2, 'create', 'compute-2')]),
        label='joined')
    assert_that(join[EARLIEST_START], equal_to([1577836820]),
                label='earliest')
    expected = {
        'in_trace.events': 2, 'in_trace.actions': 2, 'in_trace.instances': 2,
        'rejected.events.no_action': 1,
        'rejected.events.no_instance': 1,
        'rejected.actions.no_instance': 1,
        'rejected.instances.no_finished_events': 1}
    assert_that(all_counts(pipeline), equal_to([expected]), label='counts')
    assert counters(pipeline.run()) == expected


def test_join_with_nothing_to_join_has_no_earliest_start():
    pipeline = test_pipeline.TestPipeline()
    join = (pipeline
            | beam.Create([valid(INSTANCES, 'nova', [I1]),
                           valid(EVENTS, 'nova', [E104])], reshuffle=False)
            | JoinEventsToInstances(4, earliest_start=True))
    assert_that(join[JOINED], equal_to([]), label='joined')
    assert_that(join[EARLIEST_START], equal_to([None]), label='earliest')
    assert counters(pipeline.run()) == {
        'rejected.events.no_action': 1,
        'rejected.instances.no_finished_events': 1}


class _EmitsAtBundleEnd(beam.DoFn):
    """Holds its elements and emits (and counts) them when the bundle ends,
    as Beam's own file sinks do."""

    def start_bundle(self):
        self.held = []

    def process(self, element):
        self.held.append(element)

    def finish_bundle(self):
        from apache_beam.utils.windowed_value import WindowedValue
        from starcompactor.transforms import counters
        counters.count('held', len(self.held))
        for element in self.held:
            yield WindowedValue(element, 0,
                                [beam.transforms.window.GlobalWindow()])


def test_counted_steps_keep_what_they_emit_and_count_at_bundle_end():
    from starcompactor.transforms.counters import Counted, all_counts
    with test_pipeline.TestPipeline() as pipeline:
        held = (pipeline | beam.Create([1, 2, 3])
                | 'Hold' >> Counted(_EmitsAtBundleEnd()))
        assert_that(held, equal_to([1, 2, 3]), label='Elements')
        assert_that(all_counts(pipeline), equal_to([{'held': 3}]),
                    label='Counts')
