"""Pure functions, tested without a pipeline."""
import hashlib
import hmac
import json
import os
import pickle
import subprocess
import sys

import pyarrow as pa
import pytest

from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
from starcompactor.pipeline.sources.mysql import (
    TableSplit, chunk_statement, chunk_to_table)
from starcompactor.pipeline.summary import Summary
from starcompactor.transforms import mask
from starcompactor.transforms.buckets import bucket_numbers, split_into_buckets
from starcompactor.transforms.derive import iso_times, seconds_since
from starcompactor.transforms.schema import source_schema
from starcompactor.transforms.validate import validate_events


def _fmix64(x):
    m = (1 << 64) - 1
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & m
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & m
    return x ^ (x >> 33)


def _string_code(text):
    """A string key's code, written out: its last 8 bytes (little-endian),
    then its length."""
    data = text.encode('utf-8')
    return (int.from_bytes(data[-8:], 'little') * 1_000_003 + len(data)) \
        % (1 << 64)


def test_bucket_numbers_are_murmur3_finalized_key_codes():
    table = pa.table({'db': ['nova', 'nova', None], 'id': [7, 8, 9]})
    m = (1 << 64) - 1
    expected = [_fmix64((_string_code('nova') * 1_000_003 + i) & m) % 16
                for i in (7, 8)] + [_fmix64(9) % 16]
    assert list(bucket_numbers(table, ['db', 'id'], 16)) == expected
    uuid = '5d3b6a6e-8a1f-4c65-9a4e-0c6f3f0d9b21'
    assert list(bucket_numbers(pa.table({'u': [uuid]}), ['u'], 1000)) == [
        _fmix64(_string_code(uuid)) % 1000]


def _buckets_of_test_keys():
    """Bucket numbers of a few integer and text keys."""
    ids = pa.table({'db': ['nova', 'nova', None], 'id': [7, 8, 9]})
    texts = pa.table({'k': ['5d3b6a6e-8a1f-4c65-9a4e-0c6f3f0d9b21', 'cell1',
                            'é' * 5]})
    return [bucket_numbers(ids, ['db', 'id'], 16).tolist(),
            bucket_numbers(texts, ['k'], 1000).tolist()]


def test_buckets_are_stable_across_processes():
    """A runner shuffles between worker processes, each salting Python's
    ``hash()`` its own way: a key's bucket must not depend on the process."""
    expected = [[2, 7, 5], [35, 587, 890]]
    assert _buckets_of_test_keys() == expected
    program = ('import json, sys; sys.path.insert(0, sys.argv[1]); '
               'import test_transforms; '
               'print(json.dumps(test_transforms._buckets_of_test_keys()))')
    for seed in ('1', '2'):
        child = subprocess.run(
            [sys.executable, '-c', program, os.path.dirname(__file__)],
            env=dict(os.environ, PYTHONHASHSEED=seed), capture_output=True,
            text=True, check=True)
        assert json.loads(child.stdout) == expected, seed


def test_bucket_codes_agree_for_text_dictionaries_chunks_and_slices():
    values = ['a', '', None, 'hello-world-123', 'é' * 5, 'x' * 40, 'cell1']
    plain = pa.array(values)
    expected = list(bucket_numbers(pa.table({'k': plain}), ['k'], 97))
    for column in (pa.chunked_array([plain[:3], plain[3:]]),
                   plain.dictionary_encode(),
                   pa.chunked_array([plain[:2].dictionary_encode(),
                                     plain[2:].dictionary_encode()])):
        assert list(bucket_numbers(pa.table({'k': column}), ['k'], 97)) \
            == expected
    sliced = pa.array(['pad'] + values).slice(1)
    assert list(bucket_numbers(pa.table({'k': sliced}), ['k'], 97)) == \
        expected
    assert expected[2] == _fmix64(0) % 97   # null


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
    expected = ['6664a42048c6d6d7fe3657e39b14155c', None, '',
                '6664a42048c6d6d7fe3657e39b14155c']
    for values in (column, column.dictionary_encode()):
        assert mask.mask_column(values, mask.Masker(key)).to_pylist() == \
            expected


@pytest.mark.parametrize('key_bytes', [16, 32, 64, 65, 200])
def test_masker_is_hmac_sha256_for_any_key_length(key_bytes):
    key = bytes(range(256))[:key_bytes]
    masker = mask.Masker(key)
    for value in ('a', 'é' * 50, 'x' * 300):
        assert masker(value) == hmac.new(key, value.encode('utf-8'),
                                         hashlib.sha256).hexdigest()[:32]


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
    seconds = [1456833605, 0, -1, 86399, 951782400, 253402300799]
    assert iso_times(pa.array(seconds, pa.int64())).to_pylist() == [
        '2016-03-01T12:00:05Z', '1970-01-01T00:00:00Z',
        '1969-12-31T23:59:59Z', '1970-01-01T23:59:59Z',
        '2000-02-29T00:00:00Z', '9999-12-31T23:59:59Z']
    assert iso_times(pa.array([], pa.int64())).to_pylist() == []


def test_window_goes_into_the_sql():
    split = TableSplit('nova_cell1', 'events', (
        'instance_actions_events', 'shadow_instance_actions_events'), 100, 200)
    sql, args = chunk_statement(split, 'shadow_instance_actions_events',
                                ('2016-01-01 00:00:00', '2017-01-01 00:00:00'))
    assert sql.endswith(
        'FROM `nova_cell1`.`shadow_instance_actions_events` WHERE id >= %s '
        'AND id < %s AND start_time >= %s AND start_time < %s')
    assert args == ['2016-01-01 00:00:00', '2017-01-01 00:00:00']
    # Instances are never filtered by the event window.
    sql, args = chunk_statement(
        TableSplit('nova', 'instances', ('instances',), 5, None), 'instances',
        ('2016-01-01', None))
    assert 'start_time' not in sql and args == []


def test_chunks_become_arrow_tables_and_bad_text_is_counted():
    lines = (b'1,"u""1, and\na new line"\n'
             b'2,\n'
             b'3,"caf\xc3("\n'
             b'4,""')
    table, invalid = chunk_to_table('nova', 'actions', lines)
    assert invalid == 1
    assert table.to_pylist() == [
        {'db': 'nova', 'id': 1, 'instance_uuid': 'u"1, and\na new line'},
        {'db': 'nova', 'id': 2, 'instance_uuid': None},
        {'db': 'nova', 'id': 4, 'instance_uuid': ''}]


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


def test_summary_says_what_does_not_add_up():
    """A table whose rows do not add up, or files that do not hold the
    trace's rows: what a run must fail on (instances.check_balance)."""
    balanced = {'read.events': 3, 'in_trace.events': 2,
                'rejected.events.unfinished': 1, 'trace_rows': 2}
    summary = Summary.from_counters(balanced)
    assert summary.imbalance({'csv': 2, 'avro': 2}) is None
    assert summary.imbalance({'csv': 2, 'avro': 0}) == (
        '2 trace rows made, but the avro files hold 0')
    short = Summary.from_counters(dict(balanced, **{'read.events': 4}))
    assert short.imbalance({'csv': 2}) == (
        'events: read 4, but in trace 2 + left out 1')


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
