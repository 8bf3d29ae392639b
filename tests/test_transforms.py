"""Pure functions, tested without a pipeline."""
import pickle
import zlib

import pyarrow as pa
import pytest

from starcompactor.pipeline.mysql_connection import MySQLConnection
from starcompactor.pipeline.mysql_source import (
    TableSplit, chunk_statement, chunk_to_table)
from starcompactor.pipeline.summary import Summary
from starcompactor.transforms import mask
from starcompactor.transforms.buckets import bucket_numbers, split_into_buckets
from starcompactor.transforms.derive import iso_times, seconds_since
from starcompactor.transforms.schema import source_schema
from starcompactor.transforms.validate import validate_events


def test_buckets_are_stable_across_processes():
    table = pa.table({'db': ['nova', 'nova', None], 'id': [7, 8, 9]})
    # CRC-32 of the db name, then the id: the formula, written out.
    expected = [(zlib.crc32(b'nova') * 1_000_003 + i) % 16 for i in (7, 8)]
    assert list(bucket_numbers(table, ['db', 'id'], 16))[:2] == expected
    assert list(bucket_numbers(table, ['db', 'id'], 16))[2] == 9 % 16


def test_split_into_buckets_keeps_every_row_once_and_copies():
    table = pa.table({'db': ['a', 'b'] * 5000, 'id': list(range(10000)),
                      'pad': ['x' * 50] * 10000})
    pieces = list(split_into_buckets(table, ['db', 'id'], 7))
    assert len({b for b, _ in pieces}) == len(pieces) <= 7
    ids = sorted(i for _, t in pieces for i in t.column('id').to_pylist())
    assert ids == list(range(10000))
    # A piece pickles to about its own size, not its parent's.
    bucket, piece = pieces[0]
    assert len(pickle.dumps(piece)) < 3 * piece.nbytes
    # Rows with the same key always land in the same bucket.
    again = dict(split_into_buckets(table.take([5, 6, 7]), ['db', 'id'], 7))
    for b, t in again.items():
        for i in t.column('id').to_pylist():
            assert any(i in p.column('id').to_pylist()
                       for pb, p in pieces if pb == b)


def test_mask_value_is_truncated_hmac_sha256_and_keeps_empties():
    key = b'k' * 32
    assert mask.mask_value(key, 'alice') == '6664a42048c6d6d7fe3657e39b14155c'
    assert mask.mask_value(key, '') == ''
    assert mask.mask_value(key, None) is None
    column = pa.chunked_array([['alice', None, '', 'alice']])
    assert mask.mask_column(column, key).to_pylist() == [
        '6664a42048c6d6d7fe3657e39b14155c', None, '',
        '6664a42048c6d6d7fe3657e39b14155c']


def test_drawn_keys_are_256_bit_and_new_each_time():
    source = mask.KeySource()
    keys = {mask.load_key(source) for _ in range(3)}
    assert len(keys) == 3 and all(len(k) == 32 for k in keys)


def test_key_files_and_environment(tmp_path):
    path = tmp_path / 'key'
    path.write_bytes(b'0123456789abcdef\n')
    assert mask.load_key(mask.KeySource('file', str(path))) == \
        b'0123456789abcdef'
    path.write_bytes(b'')
    with pytest.raises(mask.MaskKeyError, match='is empty'):
        mask.load_key(mask.KeySource('file', str(path)))
    path.write_bytes(b'short')
    with pytest.raises(mask.MaskKeyError, match='5 bytes long'):
        mask.load_key(mask.KeySource('file', str(path)))
    with pytest.raises(mask.MaskKeyError, match='cannot read'):
        mask.load_key(mask.KeySource('file', str(tmp_path / 'missing')))
    env = {mask.KEY_ENV: 'an-environment-key'}
    assert mask.key_source_for(None, env) == mask.KeySource('env', mask.KEY_ENV)
    assert mask.key_source_for('f', env) == mask.KeySource('file', 'f')
    assert mask.load_key(mask.KeySource('env', mask.KEY_ENV), env) == \
        b'an-environment-key'
    # Error messages never show the key.
    env = {mask.KEY_ENV: 'sekrit'}
    with pytest.raises(mask.MaskKeyError) as error:
        mask.load_key(mask.KeySource('env', mask.KEY_ENV), env)
    assert 'sekrit' not in str(error.value)


def _events(rows):
    columns = list(zip(*rows))
    names = ['id', 'action_id', 'event', 'start_time', 'finish_time', 'result']
    data = {'db': ['nova'] * len(rows)}
    data.update({n: list(c) for n, c in zip(names, columns)})
    return pa.table(data, schema=source_schema('events'))


def test_validate_events_gives_each_bad_row_one_reason():
    events = _events([
        (1, 1, 'ok', '2020-01-01 00:00:00', '2020-01-01 00:00:05', 'Success'),
        (2, 1, 'zero', '0000-00-00 00:00:00', '2020-01-01 00:00:05', 'Success'),
        (3, 1, 'nostart', None, '2020-01-01 00:00:05', 'Success'),
        (4, 1, 'running', '2020-01-01 00:00:00', None, None),
        (5, 1, 'late', '2020-01-01 00:00:00', '2030-01-01 00:00:00', 'Success'),
        (6, 1, 'backwards', '2020-01-01 00:00:09', '2020-01-01 00:00:05',
         'Success'),
        (7, 1, 'garbage', '2020-13-45 99:00:00', None, None),
    ])
    valid, rejects = validate_events(events, cut=1893456000)  # 2030-01-01
    assert valid.column('event').to_pylist() == ['ok', 'late']
    assert valid.column('start').to_pylist() == [1577836800, 1577836800]
    assert rejects == {'bad_time': 2, 'no_start_time': 1, 'unfinished': 1,
                       'finish_before_start': 1}
    _, rejects = validate_events(events, cut=1577836805)
    assert rejects['unfinished'] == 2


def test_seconds_since_epoch_and_iso_times():
    times = pa.array([100, 159, 160, 1000], pa.int64())
    assert seconds_since(times, 160).to_pylist() == [-1, -1, 0, 840]
    assert iso_times(pa.array(['2016-03-01 12:00:05'])).to_pylist() == [
        '2016-03-01T12:00:05Z']


def test_window_goes_into_the_sql():
    split = TableSplit('nova_cell1', 'events', 'shadow_instance_actions_events',
                       100, 200)
    sql, args = chunk_statement(split, ('2016-01-01 00:00:00',
                                        '2017-01-01 00:00:00'))
    assert sql.endswith(
        'FROM `nova_cell1`.`shadow_instance_actions_events` WHERE id >= %s '
        'AND id < %s AND start_time >= %s AND start_time < %s')
    assert args == ['2016-01-01 00:00:00', '2017-01-01 00:00:00']
    # Instances are never filtered by the event window.
    sql, args = chunk_statement(TableSplit('nova', 'instances', 'instances',
                                           5, None), ('2016-01-01', None))
    assert 'start_time' not in sql and args == []


def test_chunks_become_arrow_tables_and_bad_text_is_counted():
    lines = (b'{"id": 1, "instance_uuid": "u\\"1"}\n'
             b'{"id": 2, "instance_uuid": null}\n'
             b'{"id": 3, "instance_uuid": "caf\xc3("}')
    table, invalid = chunk_to_table('nova', 'actions', lines)
    assert invalid == 1
    assert table.to_pylist() == [
        {'db': 'nova', 'id': 1, 'instance_uuid': 'u"1'},
        {'db': 'nova', 'id': 2, 'instance_uuid': None}]


def test_password_sources(tmp_path):
    password_file = tmp_path / 'pw'
    password_file.write_text('from-file\n')
    my_cnf = tmp_path / 'my.cnf'
    my_cnf.write_text('[client]\nuser = x\npassword = "from-cnf"\n')
    assert MySQLConnection(password_file=str(password_file)).password(
        {'MYSQL_PWD': 'env'}) == 'from-file'
    assert MySQLConnection(my_cnf=str(my_cnf)).password(
        {'MYSQL_PWD': 'from-env'}) == 'from-env'
    assert MySQLConnection(my_cnf=str(my_cnf)).password({}) == 'from-cnf'
    assert MySQLConnection(my_cnf=str(tmp_path / 'none')).password({}) == ''


def test_summary_balances_reads_against_trace_and_reasons():
    summary = Summary.from_counters({
        'read.events': 10, 'in_trace.events': 7,
        'rejected.events.unfinished': 2, 'rejected.events.no_action': 1,
        'read.actions': 3, 'in_trace.actions': 2,
        'read.instances': 1, 'in_trace.instances': 1, 'trace_rows': 7})
    assert summary.tables['events'].balanced
    assert not summary.tables['actions'].balanced
    assert summary.rejects('events') == {'no_action': 1, 'unfinished': 2}
    text = '\n'.join(summary.lines())
    assert 'no_action 1, unfinished 2' in text


def test_drop_duplicates_keeps_the_first_of_each_key():
    from starcompactor.transforms.buckets import drop_duplicates
    table = pa.table({'db': ['a', 'a', 'b', 'a', 'b'], 'id': [1, 2, 1, 1, 1],
                      'v': ['first', 'x', 'y', 'second', 'z']})
    kept, dropped = drop_duplicates(table, ['db', 'id'])
    assert dropped == 2
    assert kept.to_pylist() == [{'db': 'a', 'id': 1, 'v': 'first'},
                                {'db': 'a', 'id': 2, 'v': 'x'},
                                {'db': 'b', 'id': 1, 'v': 'y'}]
    same, dropped = drop_duplicates(kept, ['db', 'id'])
    assert dropped == 0 and same is kept
