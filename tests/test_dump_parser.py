"""The mysqldump source: parsing dump files into the source tables, splits,
compression, errors, and the Beam transform. No MariaDB needed: the dumps
are written here, with Nova's real CREATE TABLE statements."""
import bz2
import gzip
import lzma
import os
import re

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.pipeline.sources.dump.lexer import unescape
from starcompactor.pipeline.sources.dump.reader import DumpReader, DumpSplit
from starcompactor.transforms.schema import (
    ACTIONS, EVENTS, INSTANCES, SOURCE_TABLES, source_schema)

SCHEMA_SQL = os.path.join(os.path.dirname(__file__), '..', 'synth', 'sql',
                          'nova_cell.sql')
with open(SCHEMA_SQL) as f:
    _SCHEMA = f.read()

HEADER = """-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux
--
-- Host: localhost    Database: nova
-- ------------------------------------------------------
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
"""


def ddl(table):
    """Nova's real CREATE TABLE statement for ``table``."""
    m = re.search(r'CREATE TABLE `%s` \(.*?\n\) ENGINE[^\n]*;\n' % table,
                  _SCHEMA, re.S)
    return m.group(0)


def columns(table):
    return re.findall(r'^  `(\w+)`', ddl(table), re.M)


def q(text):
    """A string literal as mysqldump writes it."""
    for raw, esc in (('\\', '\\\\'), ('\0', '\\0'), ('\n', '\\n'),
                     ('\r', '\\r'), ("'", "\\'"), ('"', '\\"'),
                     ('\x1a', '\\Z')):
        text = text.replace(raw, esc)
    return "'" + text + "'"


def lit(value):
    if value is None:
        return 'NULL'
    if isinstance(value, int):
        return str(value)
    return q(value)


def row(table, **values):
    """One row of ``table`` in its CREATE TABLE order: given values as
    Python values (or raw SQL via a ``sql_`` prefix), others NULL."""
    out = []
    for column in columns(table):
        if 'sql_' + column in values:
            out.append(values['sql_' + column])
        else:
            out.append(lit(values.get(column)))
    return '(' + ','.join(out) + ')'


def insert(table, *rows, style='mysql'):
    """mysqldump writes a statement a line; mariadb-dump 10.x a row a line."""
    if style == 'mariadb':
        return (f'INSERT INTO `{table}` VALUES\n' + ',\n'.join(rows)
                + ';\n')
    return f'INSERT INTO `{table}` VALUES ' + ','.join(rows) + ';\n'


def table_section(table, *rows, per_line=None, style='mysql'):
    """What mysqldump writes for one table: DROP/CREATE, LOCK, INSERTs."""
    out = (f'\n--\n-- Table structure for table `{table}`\n--\n\n'
           f'DROP TABLE IF EXISTS `{table}`;\n'
           '/*!40101 SET @saved_cs_client     = @@character_set_client */;\n'
           + ddl(table) +
           '/*!40101 SET character_set_client = @saved_cs_client */;\n\n'
           f'--\n-- Dumping data for table `{table}`\n--\n\n'
           f'LOCK TABLES `{table}` WRITE;\n'
           f'/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;\n')
    per_line = per_line or max(len(rows), 1)
    for i in range(0, len(rows), per_line):
        out += insert(table, *rows[i:i + per_line], style=style)
    return out + (f'/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;\n'
                  'UNLOCK TABLES;\n')


def database_header(name):
    return (f'\n--\n-- Current Database: `{name}`\n--\n\n'
            f'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{name}` '
            '/*!40100 DEFAULT CHARACTER SET utf8mb3 */;\n\n'
            f'USE `{name}`;\n')


def instance(i, **values):
    base = dict(id=i, uuid=f'uuid-{i}', user_id='user', project_id='proj',
                hostname=f'vm-{i}', host='compute-1', memory_mb=2048,
                root_gb=20, vcpus=2, deleted=0, display_name='big text')
    base.update(values)
    return row('instances', **base)


def action(i, uuid, **values):
    return row('instance_actions', **dict(
        dict(id=i, instance_uuid=uuid, action='create',
             start_time='2024-03-04 13:00:00'), **values))


def event(i, action_id, start='2024-03-04 13:00:02', **values):
    return row('instance_actions_events', **dict(
        dict(id=i, action_id=action_id, event='compute__do_build',
             start_time=start, finish_time='2024-03-04 13:00:33',
             result='Success', traceback=None), **values))


def write(tmp_path, text, name='nova.sql', opener=open):
    path = tmp_path / name
    with opener(path, 'wt', encoding='utf-8') as f:
        f.write(text)
    return str(path)


def read_rows(path_or_reader, **options):
    """{logical table: sorted list of row dicts} of a whole dump."""
    reader = (path_or_reader if isinstance(path_or_reader, DumpReader)
              else DumpReader(path_or_reader, **options))
    return collect(reader.read())


def collect(batches):
    out = {table: [] for table in SOURCE_TABLES}
    for table, batch in batches:
        assert batch.schema == source_schema(table)
        out[table] += batch.to_pylist()
    for table in out:
        out[table].sort(key=lambda r: (r['db'], r['id']))
    return out


def small_dump(db_names=('nova_cell1',)):
    text = HEADER
    for d, name in enumerate(db_names):
        text += database_header(name)
        text += table_section('instances', instance(1), instance(2))
        text += table_section('instance_actions', action(1, 'uuid-1'),
                              action(2, 'uuid-2'))
        text += table_section('instance_actions_events', event(1, 1),
                              event(2, 2, start='2024-03-05 00:00:00'))
    return text


# --- values ------------------------------------------------------------------

@pytest.mark.parametrize('sql, expected', [
    (r"'a\0b'", 'a\0b'),
    (r"'it\'s'", "it's"),
    (r"'say \"hi\"'", 'say "hi"'),
    (r"'a\bb'", 'a\bb'),
    (r"'line\nnext'", 'line\nnext'),
    (r"'cr\rlf'", 'cr\rlf'),
    (r"'tab\there'", 'tab\there'),
    (r"'ctrl\Zz'", 'ctrl\x1az'),
    (r"'back\\slash'", 'back\\slash'),
    (r"'100\%'", '100\\%'),          # \% and \_ keep the backslash
    (r"'a\_b'", 'a\\_b'),
    (r"'other\qx'", 'otherqx'),      # unknown escapes drop the backslash
    ("'it''s'", "it's"),             # doubled quote
    ("''", ''),
    (r"'\\'", '\\'),                 # escaped backslash before the quote
    (r"'\''", "'"),
    ("'a,b),(c;'", 'a,b),(c;'),      # separators inside strings
    ("'NULL'", 'NULL'),
    ("'héllo ☃ 😀'", 'héllo ☃ 😀'),
    ('NULL', None),
    ('0x636f6d707574652d31', 'compute-1'),
    ("X'636f6d70'", 'comp'),
    ("_binary 'raw\\n'", 'raw\n'),
    ("_utf8mb4'x'", 'x'),
    ('42', '42'),                    # a number in a text column
])
def test_string_values_and_escapes(tmp_path, sql, expected):
    path = write(tmp_path, HEADER + table_section(
        'instances', instance(1, sql_host=sql), instance(2)))
    rows = read_rows(path)[INSTANCES]
    assert [r['host'] for r in rows] == [expected, 'compute-1']


def test_unescape():
    assert unescape(r"a\nb\\c\'d''e\%") == "a\nb\\c'd'e\\%"
    assert unescape('plain') == 'plain'


def test_integers_nulls_and_all_columns(tmp_path):
    path = write(tmp_path, HEADER + table_section(
        'instances',
        instance(1, memory_mb=-5, root_gb=None, vcpus=0, host=None),
        instance(2, sql_memory_mb="'64'", sql_vcpus='0x10')))
    rows = read_rows(path)[INSTANCES]
    assert rows == [
        {'db': 'nova', 'id': 1, 'uuid': 'uuid-1', 'user_id': 'user',
         'project_id': 'proj', 'hostname': 'vm-1', 'host': None,
         'memory_mb': -5, 'root_gb': None, 'vcpus': 0, 'node': None},
        {'db': 'nova', 'id': 2, 'uuid': 'uuid-2', 'user_id': 'user',
         'project_id': 'proj', 'hostname': 'vm-2', 'host': 'compute-1',
         'memory_mb': 64, 'root_gb': 20, 'vcpus': 16, 'node': None},
    ]


def test_events_and_actions_columns(tmp_path):
    path = write(tmp_path, HEADER
                 + table_section('instance_actions', action(7, 'u-7'))
                 + table_section('instance_actions_events', event(
                     9, 7, result=None, finish_time=None,
                     traceback='Traceback:\n  it\'s "bad"\\')))
    rows = read_rows(path)
    assert rows[ACTIONS] == [{'db': 'nova', 'id': 7, 'instance_uuid': 'u-7'}]
    assert rows[EVENTS] == [{
        'db': 'nova', 'id': 9, 'action_id': 7, 'event': 'compute__do_build',
        'start_time': '2024-03-04 13:00:02', 'finish_time': None,
        'result': None}]


def test_multi_row_and_single_row_inserts_agree(tmp_path):
    instances = [instance(i, host=f"h'{i}\n") for i in range(1, 8)]
    extended = write(tmp_path, HEADER + table_section('instances', *instances),
                     'extended.sql')
    single = write(tmp_path, HEADER + table_section(
        'instances', *instances, per_line=1), 'single.sql')
    mixed = write(tmp_path, HEADER + table_section(
        'instances', *instances, per_line=3), 'mixed.sql')
    mariadb = write(tmp_path, HEADER + table_section(
        'instances', *instances, per_line=3, style='mariadb'), 'mariadb.sql')
    crlf = write(tmp_path, (HEADER + table_section(
        'instances', *instances, per_line=3, style='mariadb')).replace(
            '\n', '\r\n'), 'crlf.sql')
    expected = read_rows(extended)
    assert len(expected[INSTANCES]) == 7
    assert read_rows(single) == expected
    assert read_rows(mixed) == expected
    assert read_rows(mariadb) == expected
    assert read_rows(crlf) == expected


def test_column_list_picks_by_name(tmp_path):
    """--complete-insert: columns by name, any order, no CREATE TABLE."""
    text = HEADER + (
        'INSERT INTO `instance_actions_events` (`result`, `id`, `event`, '
        '`start_time`, `action_id`, `finish_time`, `traceback`) VALUES '
        "('Error',3,'ev','2024-01-01 00:00:00',4,NULL,'tb'),"
        "(NULL,5,'ev2','2024-01-02 00:00:00',6,'2024-01-02 00:00:01',NULL);\n")
    rows = read_rows(write(tmp_path, text))[EVENTS]
    assert rows == [
        {'db': 'nova', 'id': 3, 'action_id': 4, 'event': 'ev',
         'start_time': '2024-01-01 00:00:00', 'finish_time': None,
         'result': 'Error'},
        {'db': 'nova', 'id': 5, 'action_id': 6, 'event': 'ev2',
         'start_time': '2024-01-02 00:00:00',
         'finish_time': '2024-01-02 00:00:01', 'result': None}]


def test_create_table_order_used_without_column_list(tmp_path):
    """A CREATE TABLE with another column order than Nova's (an older
    schema) decides which value is which."""
    text = HEADER + (
        'CREATE TABLE `instance_actions` (\n'
        "  `instance_uuid` varchar(36) DEFAULT NULL COMMENT 'x, (y',\n"
        '  `id` int(11) NOT NULL AUTO_INCREMENT,\n'
        '  `action` enum(\'a\',\'b\') DEFAULT NULL,\n'
        '  PRIMARY KEY (`id`),\n'
        '  KEY `instance_uuid_idx` (`instance_uuid`)\n'
        ') ENGINE=InnoDB;\n'
        "INSERT INTO `instance_actions` VALUES ('u-1',1,'a'),"
        "('u-2',2,NULL);\n")
    rows = read_rows(write(tmp_path, text))[ACTIONS]
    assert rows == [{'db': 'nova', 'id': 1, 'instance_uuid': 'u-1'},
                    {'db': 'nova', 'id': 2, 'instance_uuid': 'u-2'}]


def test_hand_written_create_table(tmp_path):
    """Bare names that begin like keywords (created_at, use_count,
    settings), a one-line CREATE TABLE, a multi-line INSERT."""
    text = (
        'create table instance_actions (\n'
        '  created_at datetime,\n'
        '  use_count int,\n'
        '  settings text,\n'
        '  instance_uuid varchar(36),\n'
        '  id int not null,\n'
        '  primary key (id)\n'
        ');\n'
        'CREATE TABLE instances (id int, uuid varchar(36), user_id text, '
        'project_id text, hostname text, host text, memory_mb int, '
        'root_gb int, vcpus int);\n'
        'insert into instance_actions values\n'
        "  (NULL, 1, 'a', 'u-1', 10),\n"
        "  (NULL, NULL, NULL, 'u-2', 11);\n"
        "INSERT INTO instances VALUES (1,'u','a','b','c','d',1,2,3);\n")
    rows = read_rows(write(tmp_path, text))
    assert rows[ACTIONS] == [{'db': 'nova', 'id': 10, 'instance_uuid': 'u-1'},
                             {'db': 'nova', 'id': 11, 'instance_uuid': 'u-2'}]
    assert rows[INSTANCES][0]['vcpus'] == 3


def test_insert_variants(tmp_path):
    """INSERT IGNORE, REPLACE, a qualified table name, a statement over
    several lines with spaces, as a hand-written dump may have."""
    cols = ', '.join(f'`{c}`' for c in columns('instance_actions'))
    text = HEADER + ddl('instance_actions') + (
        f"INSERT  IGNORE INTO `instance_actions` VALUES {action(1, 'a')};\n"
        f"REPLACE INTO `instance_actions` VALUES {action(2, 'b')};\n"
        f"INSERT INTO `other_db`.`instance_actions` ({cols}) VALUES "
        f"{action(3, 'c')};\n"
        "insert into instance_actions\n  (id, instance_uuid)\nvalues\n"
        "  (4, 'd') ,\n  ( 5 , 'e;' ) ;\n")
    rows = read_rows(write(tmp_path, text))[ACTIONS]
    assert [(r['db'], r['id'], r['instance_uuid']) for r in rows] == [
        ('nova', 1, 'a'), ('nova', 2, 'b'), ('nova', 4, 'd'),
        ('nova', 5, 'e;'), ('other_db', 3, 'c')]


def test_byte_order_mark(tmp_path):
    path = tmp_path / 'bom.sql'
    path.write_bytes(b'\xef\xbb\xbf' + (HEADER + table_section(
        'instances', instance(1))).encode())
    rows = collect(DumpReader(str(path)).read(DumpSplit(str(path))))
    assert [r['id'] for r in rows[INSTANCES]] == [1]
    path.write_bytes(b'\xef\xbb\xbfUSE `bom`;\n' + table_section(
        'instances', instance(2)).encode())
    assert [(r['db'], r['id']) for r in read_rows(str(path))[INSTANCES]] \
        == [('bom', 2)]


def test_other_tables_are_skipped_unparsed(tmp_path):
    text = HEADER + table_section('instances', instance(1)) + (
        'INSERT INTO `instance_extra` VALUES (this is not (( parsed\n'
        "INSERT INTO `instance_faults` VALUES ('unterminated;\n"
        'CREATE TABLE `other` (garbage;\n'
        'complete garbage line\n')
    assert [r['id'] for r in read_rows(write(tmp_path, text))[INSTANCES]] \
        == [1]


# --- databases, shadow tables, window, batches -------------------------------

def test_databases_from_use_and_filter(tmp_path):
    path = write(tmp_path, small_dump(('nova_cell0', 'nova_cell1')))
    rows = read_rows(path)
    assert [(r['db'], r['id']) for r in rows[INSTANCES]] == [
        ('nova_cell0', 1), ('nova_cell0', 2),
        ('nova_cell1', 1), ('nova_cell1', 2)]
    assert [r['db'] for r in rows[EVENTS]] == ['nova_cell0'] * 2 + \
        ['nova_cell1'] * 2
    only = read_rows(path, databases=['nova_cell1'])
    assert {r['db'] for table in only.values() for r in table} == \
        {'nova_cell1'}
    assert len(only[INSTANCES]) == 2
    assert read_rows(path, databases=['elsewhere']) == \
        {table: [] for table in SOURCE_TABLES}


def test_default_database_without_use(tmp_path):
    path = write(tmp_path, HEADER + table_section('instances', instance(1)))
    assert read_rows(path)[INSTANCES][0]['db'] == 'nova'
    assert read_rows(path, default_database='cell9')[INSTANCES][0]['db'] \
        == 'cell9'
    assert read_rows(path, databases=['cell9'],
                     default_database='cell9')[INSTANCES]


def test_shadow_tables_and_archived(tmp_path):
    text = HEADER + (
        table_section('instances', instance(1))
        + table_section('shadow_instances', instance(2))
        + table_section('instance_actions', action(1, 'uuid-1'))
        + table_section('shadow_instance_actions', action(2, 'uuid-2'))
        + table_section('instance_actions_events', event(1, 1))
        + table_section('shadow_instance_actions_events', event(2, 2)))
    path = write(tmp_path, text)
    both = read_rows(path)
    for table in SOURCE_TABLES:
        assert [r['id'] for r in both[table]] == [1, 2]
    live = read_rows(path, archived=False)
    for table in SOURCE_TABLES:
        assert [r['id'] for r in live[table]] == [1]


def test_event_window(tmp_path):
    text = HEADER + table_section('instance_actions_events',
                                  event(1, 1, start='2024-01-01 00:00:00'),
                                  event(2, 1, start='2024-01-31 23:59:59'),
                                  event(3, 1, start='2024-02-01 00:00:00'),
                                  event(4, 1, start=None),
                                  event(5, 1, start='2023-12-31 23:59:59'))
    path = write(tmp_path, text)

    def ids(window):
        return [r['id'] for r in read_rows(path, window=window)[EVENTS]]
    assert ids(('2024-01-01 00:00:00', '2024-02-01 00:00:00')) == [1, 2]
    assert ids(('2024-01-01 00:00:00', None)) == [1, 2, 3]
    assert ids((None, '2024-01-01 00:00:00')) == [5]
    assert ids((None, None)) == [1, 2, 3, 4, 5]
    # instances and actions are not filtered
    assert read_rows(write(tmp_path, small_dump(), 'b.sql'),
                     window=('2030-01-01 00:00:00', None))[INSTANCES]


def test_batches(tmp_path):
    rows = [instance(i) for i in range(1, 1001)]
    path = write(tmp_path, HEADER + table_section('instances', *rows,
                                                  per_line=70))
    batches = list(DumpReader(path, batch_rows=200).read())
    assert all(200 <= b.num_rows < 270 for _, b in batches[:-1])
    assert sum(b.num_rows for _, b in batches) == 1000
    assert collect(batches)[INSTANCES] == read_rows(path)[INSTANCES]


# --- compression -------------------------------------------------------------

@pytest.mark.parametrize('name, opener', [
    ('nova.sql.gz', gzip.open), ('nova.sql.bz2', bz2.open),
    ('nova.sql.xz', lzma.open), ('gzip-without-extension.sql', gzip.open)])
def test_compressed(tmp_path, name, opener):
    text = small_dump(('c0', 'c1'))
    expected = read_rows(write(tmp_path, text))
    path = write(tmp_path, text, name, opener)
    assert read_rows(path) == expected
    splits, _ = NovaDumpSource([path], split_bytes=100).plan()
    assert len(splits) == 1
    assert splits[0].compression in ('gzip', 'bzip2', 'xz')


def test_corrupt_compressed_file(tmp_path):
    text = small_dump() * 20
    path = write(tmp_path, text, 'nova.sql.gz', gzip.open)
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(UserError, match=r'nova\.sql\.gz line \d+: corrupt '
                                        r'or truncated gzip'):
        read_rows(path)
    with open(path, 'wb') as f:
        f.write(b'plain text, not gzip')
    with pytest.raises(UserError, match='nova.sql.gz: not a readable gzip'):
        NovaDumpSource([path]).plan()


# --- splits ------------------------------------------------------------------

def big_dump(style='mysql'):
    """Several databases, CREATE TABLEs and USEs between the cuts, lines
    of varied lengths, shadow tables, a table without CREATE TABLE
    order (column list), and other tables in between."""
    text = HEADER
    action_id = event_id = 0
    for d, name in enumerate(('nova_cell0', 'nova_cell1', 'nova')):
        text += database_header(name)
        text += table_section('instances', *[
            instance(i, host=f"h{i}" * (i % 7), display_name="x'" * i)
            for i in range(1, 120)], per_line=7, style=style)
        text += table_section('instance_faults', *[
            row('instance_faults', id=i, message='m' * 50)
            for i in range(1, 30)], per_line=3)
        for prefix in ('', 'shadow_'):
            actions = []
            events = []
            for i in range(1, 60):
                action_id += 1
                actions.append(action(action_id, f'uuid-{i}'))
                for _ in range(3):
                    event_id += 1
                    events.append(event(event_id, action_id,
                                        traceback='t\n' * (event_id % 5)))
            text += table_section(prefix + 'instance_actions', *actions,
                                  per_line=11, style=style)
            text += table_section(prefix + 'instance_actions_events',
                                  *events, per_line=1 + d * 13, style=style)
    return text


@pytest.mark.parametrize('style', ['mysql', 'mariadb'])
@pytest.mark.parametrize('split_bytes', [500, 3000, 20000, 10 ** 9])
def test_byte_range_splits_read_the_same_rows(tmp_path, split_bytes, style):
    path = write(tmp_path, big_dump(style))
    whole = read_rows(path)
    assert len(whole[INSTANCES]) == 3 * 119
    assert len(whole[EVENTS]) == 3 * 2 * 59 * 3

    source = NovaDumpSource([path], split_bytes=split_bytes)
    splits, estimated_events = source.plan()
    assert estimated_events == len(whole[EVENTS])
    size = os.path.getsize(path)
    if split_bytes < size:
        assert len(splits) > 3
    assert splits[0].start == 0 and splits[-1].end is None
    for a, b in zip(splits, splits[1:]):
        assert a.end == b.start
    pieces = []
    for split in splits:
        pieces += list(source.dump_reader(path).read(split))
    assert collect(pieces) == whole      # no loss, no duplicates


def test_split_starts_with_context(tmp_path):
    """A split whose start is past the USE and CREATE TABLE still knows
    the database and the column order."""
    path = write(tmp_path, big_dump())
    source = NovaDumpSource([path], split_bytes=20000)
    splits, _ = source.plan()
    late = splits[-1]
    assert late.database == 'nova'
    assert {(db, t) for db, t, _ in late.columns} >= {
        ('nova', 'instances'), ('nova_cell1', 'shadow_instance_actions')}
    rows = collect(source.dump_reader(path).read(late))
    assert {r['db'] for table in rows.values() for r in table} == {'nova'}
    # the line numbers of a split are the file's
    text = open(path).read()
    assert late.line == text[:late.start].count('\n') + 1


def test_split_line_numbers_in_errors(tmp_path):
    good = big_dump()
    text = good + "INSERT INTO `instances` VALUES (1,'oops);\n"
    path = write(tmp_path, text)
    source = NovaDumpSource([path], split_bytes=5000)
    splits, _ = source.plan()
    line = text.count('\n')
    with pytest.raises(UserError, match=rf'nova\.sql line {line}: '
                                        r'unterminated string'):
        for split in splits:
            list(source.dump_reader(path).read(split))


def test_plan_errors(tmp_path):
    with pytest.raises(UserError, match='missing.sql: no such dump file'):
        NovaDumpSource([str(tmp_path / 'missing.sql')]).plan()
    path = write(tmp_path, small_dump(('nova_cell0', 'nova_cell1')))
    with pytest.raises(UserError) as error:
        NovaDumpSource([path], databases=['nova_cell2', 'cell3']).plan()
    assert str(error.value) == (f'databases nova_cell2, cell3 are not in '
                                f'{path} (it has nova_cell0, nova_cell1)')
    source = NovaDumpSource([path], databases=['nova_cell1'])
    splits, events = source.plan()
    assert events == 2
    assert source.found_databases == ['nova_cell0', 'nova_cell1']


# --- input that is not what the user meant ----------------------------------

README = """# starcompactor

Anonymized instance-event traces from OpenStack Nova.
Create a table of contents; insert your notes here.
"""


@pytest.mark.parametrize('name, opener', [('README.sql', open),
                                          ('README.sql.gz', gzip.open)])
def test_a_file_that_is_no_dump(tmp_path, capsys, name, opener):
    path = write(tmp_path, README, name, opener)
    assert cli.main(['instances', '--dump', path, '--output',
                     str(tmp_path / 'out' / 'trace')]) == 1
    assert capsys.readouterr().err == (
        f'starcompactor: error: {path} is not a MySQL dump: no CREATE TABLE '
        f'or INSERT INTO of a Nova table\n')
    assert not list(tmp_path.glob('out/**/*'))      # nothing written


@pytest.mark.parametrize('name, opener', [('nova.sql', open),
                                          ('nova.sql.gz', gzip.open)])
def test_a_database_no_dump_has(tmp_path, capsys, name, opener):
    path = write(tmp_path, small_dump(('nova_cell0', 'nova_cell1')), name,
                 opener)
    assert cli.main(['instances', '--dump', path, '--databases',
                     'nova_cell1,nova_cell9', '--output',
                     str(tmp_path / 'out' / 'trace')]) == 1
    assert capsys.readouterr().err == (
        f'starcompactor: error: database nova_cell9 is not in {path} '
        f'(it has nova_cell0, nova_cell1)\n')
    assert not list(tmp_path.glob('out/**/*'))      # nothing written


def test_a_compressed_dump_is_checked_from_its_head(tmp_path):
    """Plan reads a compressed dump only until it shows every database
    asked for: a corrupt tail after them goes unnoticed until the read,
    and is met when a database is missing."""
    text = small_dump(('nova_cell0', 'nova_cell1')) * 20
    path = write(tmp_path, text, 'nova.sql.gz', gzip.open)
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    for databases in (None, ['nova_cell1', 'nova_cell0']):
        splits, _ = NovaDumpSource([path], databases=databases).plan()
        assert [s.compression for s in splits] == ['gzip']
    with pytest.raises(UserError, match=r'nova\.sql\.gz line \d+: corrupt '
                                        r'or truncated gzip'):
        NovaDumpSource([path], databases=['nova_cell9']).plan()


def test_several_files_have_the_databases_between_them(tmp_path):
    cell0 = write(tmp_path, small_dump(('nova_cell0',)), 'cell0.sql.gz',
                  gzip.open)
    cell1 = write(tmp_path, small_dump(('nova_cell1',)), 'cell1.sql')
    source = NovaDumpSource([cell0, cell1],
                            databases=['nova_cell1', 'nova_cell0'])
    splits, _ = source.plan()
    assert [s.path for s in splits] == [cell0, cell1]
    with pytest.raises(UserError) as error:
        NovaDumpSource([cell0, cell1], databases=['nova_cell2']).plan()
    assert str(error.value) == (f'database nova_cell2 is not in {cell0}, '
                                f'{cell1} (they have nova_cell0, nova_cell1)')


# --- malformed input ---------------------------------------------------------

def malformed(tmp_path, bad_line, after=''):
    """A dump whose line 7 (after HEADER) is ``bad_line``."""
    text = HEADER + bad_line + after
    assert HEADER.count('\n') == 7
    return write(tmp_path, text, 'broken.sql.gz', gzip.open)


@pytest.mark.parametrize('bad, message', [
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a'),(2,'unterminated);\n", 'unterminated string'),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a'),(2,bogus);\n", "bad value near 'bogus"),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a'),(2,'b' 'c');\n", 'bad value'),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a'),(2);\n", 'row 2 has 1 values, expected 2'),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a',3);\n", 'row 1 has more than 2 values'),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a');(2,'b');\n", 'text after the end'),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "('x','a');\n", "bad integer value for column id: 'x'"),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1.5,'a');\n", "bad integer value for column id: '1.5'"),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(99999999999999999999,'a');\n", 'integer out of range'),
    ("INSERT INTO `instance_actions` (`id`,`uuid`) VALUES (1,'a');\n",
     'no column instance_uuid'),
    ("INSERT INTO `instance_actions` VALUES (1,'a');\n",
     'no column list and no CREATE TABLE'),
    ("INSERT INTO `instance_actions` SET id=1;\n", 'cannot read INSERT'),
    ("INSERT INTO `instance_actions` (`id`,`instance_uuid`) VALUES "
     "(1,'a'),(2,\n", 'truncated statement'),
])
def test_malformed_insert(tmp_path, bad, message):
    text = HEADER.encode() + bad.encode()
    path = tmp_path / 'broken.sql.gz'
    with gzip.open(path, 'wb') as f:
        f.write(text + b'UNLOCK TABLES;\n')
    with pytest.raises(UserError) as error:
        read_rows(str(path))
    assert str(error.value).startswith(f'{path} line 8: ')
    assert message in str(error.value)
    assert '\n' not in str(error.value)


def test_text_that_is_not_utf8_drops_the_row(tmp_path):
    """As from MySQL: a row whose wanted text is not UTF-8 is dropped and
    counted (invalid_utf8); bad bytes in other columns do not matter."""
    text = (HEADER + ddl('instance_actions_events')).encode() + (
        b"INSERT INTO `instance_actions_events` (`id`,`action_id`,`event`,"
        b"`start_time`,`finish_time`,`result`,`traceback`) VALUES "
        b"(1,1,'ok','2024-01-01 00:00:00',NULL,NULL,'\xff\xfe'),"
        b"(2,1,'bad\xff','2024-01-01 00:00:00',NULL,NULL,NULL),"
        b"(3,1,'ok',_binary 'x\xc3','2024-01-01 00:00:00',NULL,NULL),"
        b"(4,1,'caf\xc3\xa9','2024-01-01 00:00:00',NULL,NULL,NULL);\n")
    path = tmp_path / 'latin.sql'
    path.write_bytes(text)
    reader = DumpReader(str(path))
    rows = collect(reader.read())[EVENTS]
    assert [(r['id'], r['event']) for r in rows] == [(1, 'ok'), (4, 'café')]
    assert reader.invalid_utf8 == {INSTANCES: 0, ACTIONS: 0, EVENTS: 2}
    # outside the window: not counted
    reader = DumpReader(str(path), window=('2025-01-01 00:00:00', None))
    assert collect(reader.read())[EVENTS] == []
    assert reader.invalid_utf8[EVENTS] == 0


def test_malformed_errors_name_the_right_line(tmp_path):
    """In a statement over several lines, and in a batch of many lines,
    the line of the fault itself."""
    text = HEADER + ddl('instance_actions') + (
        "INSERT INTO instance_actions (id, instance_uuid) VALUES\n"
        "(1, 'a'),\n(2, 'b'),\n(3, @x);\n")
    line = text.count('\n')
    with pytest.raises(UserError, match=rf'line {line}: bad value near '
                                        r"'@x\)"):
        read_rows(write(tmp_path, text))
    rows = [action(i, 'u') for i in range(1, 10)]
    rows[7] = rows[7].replace(',8,', ",'eight',", 1)
    text = HEADER + table_section('instance_actions', *rows, per_line=2)
    bad = [n for n, line in enumerate(text.split('\n'), 1)
           if 'eight' in line][0]
    with pytest.raises(UserError, match=rf'line {bad}: bad integer value '
                                        "for column id: 'eight' in INSERT "
                                        'into instance_actions'):
        read_rows(write(tmp_path, text, 'b.sql'))


def test_truncated_at_end_of_file(tmp_path):
    text = small_dump()
    cut = text.index("'uuid-2'")          # mid-INSERT of instances
    path = write(tmp_path, text[:cut])
    line = text[:cut].count('\n') + 1
    with pytest.raises(UserError, match=rf'nova\.sql line {line}: truncated '
                                        r'statement: INSERT into instances '
                                        r'\(end of file\)'):
        read_rows(path)
    # an INSERT without its end, followed by the next statement
    lines = text[:cut] + '\nUNLOCK TABLES;\n'
    with pytest.raises(UserError, match=rf'line {line}: truncated statement'):
        read_rows(write(tmp_path, lines, 'b.sql'))


# --- Beam --------------------------------------------------------------------

def test_read_nova_dump_in_a_pipeline(tmp_path):
    path = write(tmp_path, big_dump())
    archive = write(tmp_path, small_dump(('nova_cell9',)), 'second.sql.gz',
                    gzip.open)
    source = NovaDumpSource([path, archive], databases=None, archived=False,
                            window=('2024-03-04 13:00:00',
                                    '2024-03-05 00:00:00'),
                            split_bytes=7000)
    splits, _ = source.plan()
    assert len(splits) > 3
    expected = collect(list(DumpReader(path, archived=False,
                                       window=source.window).read())
                       + list(DumpReader(archive, archived=False,
                                         window=source.window).read()))
    assert expected[EVENTS] and all(
        r['start_time'] < '2024-03-05' for r in expected[EVENTS])

    def keyed(rows):
        return [tuple(sorted(r.items())) for r in rows]

    with test_pipeline.TestPipeline() as p:
        read = p | source.reader(splits)
        for table in SOURCE_TABLES:
            rows = (read
                    | f'Only{table}' >> beam.Filter(
                        lambda tagged, name: tagged[0] == name, table)
                    | f'Rows{table}' >> beam.FlatMap(
                        lambda tagged: tagged[1].to_pylist())
                    | f'Key{table}' >> beam.Map(
                        lambda r: tuple(sorted(r.items()))))
            assert_that(rows, equal_to(keyed(expected[table])),
                        label=f'Check{table}')
