"""Beam metrics of a run: one namespace, names that read well in a summary.

Every source row is counted when read, and every row that does not become a
trace row is counted under exactly one reason, so that the summary proves
nothing was lost: for each table, read = in trace + sum of its reasons.
"""
import apache_beam as beam

NAMESPACE = 'starcompactor'

READ = 'read'            # counter name: read.<table>
IN_TRACE = 'in_trace'    # in_trace.<table>: rows that reached the trace
REJECTED = 'rejected'    # rejected.<table>.<reason>
TRACE_ROWS = 'trace_rows'
EPOCH = 'epoch'           # a distribution: the epoch the run used

# Reasons a row is not in the trace. Rejects are rows that would have been
# trace rows but are broken or incomplete; the others are simply rows the
# trace does not describe (an instance nothing happened to in the window).
EVENT_BAD_TIME = 'bad_time'
EVENT_NO_START = 'no_start_time'
EVENT_UNFINISHED = 'unfinished'
EVENT_FINISH_BEFORE_START = 'finish_before_start'
EVENT_NO_ACTION = 'no_action'
EVENT_NO_INSTANCE = 'no_instance'
ACTION_NO_INSTANCE = 'no_instance'
ACTION_NO_EVENTS = 'no_finished_events'
INSTANCE_NO_EVENTS = 'no_finished_events'
INSTANCE_BAD_UUID = 'bad_uuid'
# Any table: the row was read from both the live and the shadow_ table,
# archived while the trace ran; the other copy is in the trace.
READ_TWICE = 'read_twice'
# Any table: text that is not UTF-8 (seen in damaged or hand-edited rows).
INVALID_UTF8 = 'invalid_utf8'


def count(name, n):
    if n:
        beam.metrics.Metrics.counter(NAMESPACE, name).inc(int(n))


def count_read(table, n):
    count(f'{READ}.{table}', n)


def count_in_trace(table, n):
    count(f'{IN_TRACE}.{table}', n)


def count_rejected(table, reason, n):
    count(f'{REJECTED}.{table}.{reason}', n)


def record_epoch(epoch):
    beam.metrics.Metrics.distribution(NAMESPACE, EPOCH).update(int(epoch))
