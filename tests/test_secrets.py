"""The database password and the masking key stay secret; an interrupted run
leaves nothing behind; the reading session cannot write.

The command runs as users run it, a real process (``python -m
starcompactor``), on a synthetic history in a real MariaDB. While it runs,
its ``/proc/PID/cmdline`` and its children's (Beam's worker processes) are
sampled, and Beam's temporary shards are read as they appear. Afterwards its
output, every file it wrote (CSV and JSON lines as raw bytes, Avro decoded,
the manifest) and its temporary directory are searched for each secret, raw
and hex- or base64-encoded. The environment of the processes is not checked:
``MYSQL_PWD`` and ``STARCOMPACTOR_MASK_KEY`` are the documented channel.
"""
import base64
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import fastavro
import pymysql
import pytest

from conftest import READER, READER_PASSWORD, drop_databases, grant_reader
from helpers import insert, read_csv, run_job, write_key_file
from starcompactor import synth
from starcompactor.pipeline import shards
from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
from starcompactor.transforms import mask

MASK_KEY = b'Mask-Key-SECRET-0123456789abcdef!'
WRONG_PASSWORD = 'Wrong-Pa55-SECRET-never-shown'
INSTANCES = 12_000     # a run of several seconds
MULTI_PROCESS = ('--direct_running_mode', 'multi_processing',
                 '--direct_num_workers', '2')
STARTED = 'reading '   # the job's log line once the plan is made


def forms(secret):
    """A secret as it could leak: raw, hex, base64."""
    raw = secret if isinstance(secret, bytes) else secret.encode('utf-8')
    return {raw, raw.hex().encode(), base64.b64encode(raw)}


SECRETS = {'the password': forms(READER_PASSWORD),
           'the wrong password': forms(WRONG_PASSWORD),
           'the mask key': forms(MASK_KEY)}


def leaks_in(data, where):
    """``[(secret, where)]`` for each secret found in ``data`` (bytes)."""
    if isinstance(data, str):
        data = data.encode('utf-8', 'surrogateescape')
    return [(name, where) for name, variants in SECRETS.items()
            if any(v in data for v in variants)]


@pytest.fixture(scope='module')
def history(mariadb):
    """A synthetic two-cell history big enough for a run of seconds."""
    cells = ('secrets_c0', 'secrets_c1')
    with mariadb.admin() as admin:
        synth.load_mysql(admin, INSTANCES, cells=cells, seed=4)
    with mariadb.admin() as admin, admin.cursor() as cursor:
        for cell in cells:
            grant_reader(cursor, cell)
    yield cells
    drop_databases(mariadb, cells)


@pytest.fixture
def key_file(tmp_path):
    return write_key_file(tmp_path / 'secrets', MASK_KEY + b'\n')


def source_args(mariadb, cells):
    return ['--mysql-host', mariadb.host, '--mysql-port', str(mariadb.port),
            '--mysql-user', READER, '--databases', ','.join(cells)]


def _descendants(pid):
    """``pid`` and every process below it, from /proc."""
    children = {}
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat, 'rb') as f:
                fields = f.read().rsplit(b')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(
            int(stat.split('/')[2]))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _sigint_as_at_a_terminal():
    """The child's SIGINT back to the default: a test suite run as a
    background job inherits it ignored, and Python only turns a SIGINT it
    was started with the default for into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _temporary_shards(prefix):
    """Every file in the temporary folders of runs writing to ``prefix``."""
    return [path for path in glob.glob(
        f'{shards.temporary_folder(prefix, "*")}/**', recursive=True)
        if os.path.isfile(path)]


def _read(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError:   # gone meanwhile (renamed, removed)
        return None


class Run:
    """The ``starcompactor`` command as a process, watched while it runs."""

    def __init__(self, args, tmp_path, env=None, password_file=None):
        self.tmp = tmp_path / 'tmp'            # its TMPDIR
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.out_dir = tmp_path / 'out'
        self.prefix = str(self.out_dir / 'trace')
        self.stdout_path = tmp_path / 'stdout'
        self.stderr_path = tmp_path / 'stderr'
        environ = {k: v for k, v in os.environ.items()
                   if k not in ('MYSQL_PWD', mask.KEY_ENV)}
        environ.update(env or {}, TMPDIR=str(self.tmp))
        if password_file:
            args = [*args, '--mysql-password-file', password_file]
        self.args = ['instances', *args, '--output', self.prefix]
        self.cmdlines = {}      # pid -> cmdline, of every process seen
        self.samples = 0        # times the tool was seen alive
        self.children = set()   # pids of its child processes seen
        self.temp_files = {}    # Beam's temporary shards seen: path -> bytes
        with open(self.stdout_path, 'wb') as out, \
                open(self.stderr_path, 'wb') as err:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'starcompactor', *self.args],
                env=environ, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True,   # its own group, as a shell job
                preexec_fn=_sigint_as_at_a_terminal)

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors='replace')

    @property
    def stdout(self):
        return self.stdout_path.read_text(errors='replace')

    def sample(self):
        """Read the command lines of the tool and its children, and Beam's
        temporary shards, now."""
        for pid in _descendants(self.process.pid):
            cmdline = _read(f'/proc/{pid}/cmdline')
            if cmdline:
                self.cmdlines[pid, cmdline] = cmdline
                if pid != self.process.pid:
                    self.children.add(pid)
        if self.process.poll() is None:
            self.samples += 1
        for path in _temporary_shards(self.prefix):
            data = _read(path)
            if data:
                self.temp_files[path] = data

    def watch(self, until=None, timeout=120):
        """Sample until the process ends (or ``until()`` is true)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            self.sample()
            if until and until():
                return
            assert time.monotonic() < deadline, self.stderr
            time.sleep(0.01)
        self.sample()

    def wait(self, timeout=120):
        self.watch(timeout=timeout)
        return self.process.wait()

    def alive_children(self):
        """Child processes seen that still run (even if orphaned)."""
        alive = []
        for pid in self.children:
            stat = _read(f'/proc/{pid}/stat')
            if stat and stat.rsplit(b')', 1)[1].split()[0] != b'Z':
                alive.append(pid)
        return alive

    def output_files(self):
        return sorted(p for p in glob.glob(f'{self.out_dir}/**',
                                           recursive=True)
                      if os.path.isfile(p))

    def leaks(self):
        """Every place a secret was found."""
        found = leaks_in(self.stdout, 'stdout') + \
            leaks_in(self.stderr, 'stderr')
        for (pid, _), cmdline in self.cmdlines.items():
            found += leaks_in(cmdline, f'/proc/{pid}/cmdline')
        for path, data in self.temp_files.items():
            found += leaks_in(data, path)
        for path in self.output_files():
            found += leaks_in(_read(path), path)
            if path.endswith('.avro'):
                with open(path, 'rb') as f:
                    values = [repr(v) for record in fastavro.reader(f)
                              for v in record.values()]
                found += leaks_in('\n'.join(values), f'values in {path}')
        for path in glob.glob(f'{self.tmp}/**', recursive=True):
            if os.path.isfile(path):
                found += leaks_in(_read(path) or b'', path)
        return found


def _left_in(folder):
    """What a run left in ``folder`` (a failed run removes the folders it
    made)."""
    return sorted(os.listdir(folder)) if folder.exists() else []


def _assert_one_line_error(run, *phrases):
    stderr = run.stderr
    assert 'Traceback' not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith('starcompactor: '), stderr
    for phrase in phrases:
        assert phrase in last, last
    return last


CHANNELS = {
    'files': dict(password='file', key='file'),
    'environment': dict(password='env', key='env'),
}


@pytest.mark.parametrize('channel', sorted(CHANNELS))
def test_secrets_appear_nowhere_a_run_shows_or_writes(
        mariadb, history, password_file, key_file, tmp_path, channel):
    """Password and key through files, or through the environment: neither
    is in the output, the files written, Beam's temporary shards, the
    temporary directory, or any process's command line."""
    how = CHANNELS[channel]
    env = {}
    args = source_args(mariadb, history) + [
        '--formats', 'csv,avro,jsonl', '--num-shards', '2', *MULTI_PROCESS]
    if how['password'] == 'env':
        env['MYSQL_PWD'] = READER_PASSWORD
    if how['key'] == 'env':
        env[mask.KEY_ENV] = MASK_KEY.decode()
    else:
        args += ['--mask-key-file', key_file]
    began = time.monotonic()
    run = Run(args, tmp_path, env=env,
              password_file=password_file if how['password'] == 'file'
              else None)
    code = run.wait()
    seconds = time.monotonic() - began
    assert code == 0, run.stderr
    assert run.leaks() == []

    # The watch saw the tool alive, and Beam's worker processes too.
    assert run.samples > 50, (run.samples, seconds)
    assert any(b'sdk_worker' in c for c in run.cmdlines.values()), \
        run.cmdlines
    assert any(b'starcompactor' in c and b'instances' in c
               for c in run.cmdlines.values())
    # Beam's temporary shards were caught and searched.
    assert run.temp_files, 'no temporary shard seen'

    # The key was the one given (masks are HMACs under it), and the
    # manifest tells so by a fingerprint, not the key.
    manifest = json.loads((run.out_dir / 'trace.manifest.json').read_text())
    assert manifest['masking']['key'] == how['key']
    assert manifest['masking']['key_fingerprint'] == \
        mask.key_fingerprint(MASK_KEY)
    _, rows = read_csv(run.out_dir / 'trace')
    assert len(rows) == manifest['trace_rows'] > 40_000
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f'SELECT DISTINCT user_id FROM `{history[1]}`.'
                       f'instances')
        users = {mask.mask_value(MASK_KEY, u) for u, in cursor}
    assert users & {row[12] for row in rows}


def test_failing_runs_show_no_secret(mariadb, history, nova_db, password_file,
                                     key_file, tmp_path):
    """A wrong password (in a file, or in MYSQL_PWD) and a table vanishing
    mid-run: one line, no traceback, no secret, no trace."""
    wrong = tmp_path / 'wrong-password'
    wrong.write_text(WRONG_PASSWORD + '\n')
    args = source_args(mariadb, history) + ['--mask-key-file', key_file]
    for name, env, password in (('file', {}, str(wrong)),
                                ('env', {'MYSQL_PWD': WRONG_PASSWORD}, None)):
        run = Run(args, tmp_path / name, env=env, password_file=password)
        assert run.wait() == 1
        _assert_one_line_error(run, 'refused user', 'wrong password')
        assert run.leaks() == []
        assert run.output_files() == []

    # A table dropped once the run has planned its reads: the shadow_
    # tables are read last, after every live row.
    cells = (nova_db('vanish'),)
    with mariadb.admin() as admin, admin.cursor() as cursor:
        for table in synth.TABLES:
            cursor.execute(f'INSERT INTO `{cells[0]}`.`{table}` SELECT * '
                           f'FROM `{history[1]}`.`{table}`')
    run = Run(source_args(mariadb, cells) + ['--formats', 'csv,avro,jsonl'],
              tmp_path / 'vanish', env={mask.KEY_ENV: MASK_KEY.decode()},
              password_file=password_file)
    run.watch(until=lambda: STARTED in run.stderr)
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f'DROP TABLE `{cells[0]}`.shadow_instances')
    assert run.wait() == 1
    _assert_one_line_error(run, 'shadow_instances is missing')
    assert run.leaks() == []
    assert run.output_files() == []


def test_a_random_key_is_new_every_run_and_never_told(
        mariadb, history, password_file, tmp_path):
    """Without a key, each run draws its own: two runs mask the same
    identities differently, and the manifest says the key was random,
    discarded, with no fingerprint."""
    cells = (history[0],)      # cell0: a quick run
    masks, manifests = [], []
    for n in (1, 2):
        run = Run(source_args(mariadb, cells) + ['--formats', 'csv'],
                  tmp_path / f'run{n}', password_file=password_file)
        assert run.wait() == 0, run.stderr
        assert run.leaks() == []
        manifest = json.loads(
            (run.out_dir / 'trace.manifest.json').read_text())
        manifests.append(manifest)
        _, rows = read_csv(run.out_dir / 'trace')
        assert rows
        # uuid, event and start time identify a row; user and project masks
        masks.append({row[:3]: (row[12], row[13]) for row in rows})
    for manifest in manifests:
        assert manifest['masking']['key'] == 'random per-run key, discarded'
        assert manifest['masking']['key_fingerprint'] is None
    first, second = masks
    assert first.keys() == second.keys()
    for row, (user, project) in first.items():
        assert user != second[row][0] and project != second[row][1], row
    # Within a run a mask is a function of the identity (a join key).
    assert len({m for m, _ in first.values()}) == \
        len({m for m, _ in second.values()})


INTERRUPTS = [  # (runner mode, moment, whom SIGINT goes to)
    ('in_memory', 'reading', 'group'),
    ('in_memory', 'writing', 'group'),
    ('in_memory', 'writing', 'tool'),
    ('multi_processing', 'reading', 'tool'),
    ('multi_processing', 'writing', 'group'),
]


@pytest.mark.parametrize('mode, moment, target', INTERRUPTS,
                         ids=['-'.join(i) for i in INTERRUPTS])
def test_ctrl_c_leaves_no_trace_and_says_one_line(
        mariadb, history, password_file, key_file, tmp_path, mode, moment,
        target):
    """SIGINT while it reads, or while Beam's temporary shards are being
    written, to the process group (Ctrl-C at a terminal) or to the tool
    alone (``kill -INT``): exit status 130, one line, no trace files, final
    or temporary, and no process left running."""
    args = source_args(mariadb, history) + [
        '--formats', 'csv,avro', '--mask-key-file', key_file,
        '--direct_running_mode', mode]
    if mode == 'multi_processing':
        args += ['--direct_num_workers', '2']
    run = Run(args, tmp_path, password_file=password_file)
    out = run.out_dir

    if moment == 'reading':     # a first table split has been read
        run.watch(until=lambda: re.search(r'read \S+ ids', run.stderr))
    else:
        run.watch(until=lambda: bool(_temporary_shards(run.prefix)))
    assert run.process.poll() is None, (
        f'finished before the {moment} moment; make the history bigger')
    if target == 'group':
        os.killpg(run.process.pid, signal.SIGINT)
    else:
        run.process.send_signal(signal.SIGINT)
    code = run.wait(timeout=60)

    assert code == 130, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last == 'starcompactor: interrupted; no trace written', \
        run.stderr
    if mode == 'in_memory':
        assert 'Traceback' not in run.stderr, run.stderr
        assert 'KeyboardInterrupt' not in run.stderr, run.stderr
    # else Beam's worker processes log to the same stderr, their own way:
    # a worker stopped mid-bundle (or hit by the terminal's SIGINT too)
    # logs its failure with a traceback. Not the tool's lines.
    assert _left_in(out) == []
    # Nothing of the tool stays running (Beam's worker processes included).
    deadline = time.monotonic() + 15
    while run.alive_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.alive_children() == []
    if mode == 'multi_processing':
        assert run.children, 'no worker process seen'


# Ctrl-C at the worst moments, made exact: the tool, patched, sends itself
# SIGINT once Beam has renamed a first shard to its final name, or while the
# sampled leak check runs (the trace and manifest are written by then).
_SIGINT_AT = {
    'renaming': """
from apache_beam.io.localfilesystem import LocalFileSystem
rename = LocalFileSystem.rename
def interrupted_rename(self, sources, destinations):
    rename(self, sources[:1], destinations[:1])
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(2)
    rename(self, sources[1:], destinations[1:])
LocalFileSystem.rename = interrupted_rename
""",
    'leak-check': """
from starcompactor.pipeline import leaks
def interrupted_check(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(2)
leaks.check = interrupted_check
""",
}


@pytest.mark.parametrize('moment', sorted(_SIGINT_AT))
def test_ctrl_c_after_files_got_final_names_removes_them(
        mariadb, history, password_file, key_file, tmp_path, moment):
    out = tmp_path / 'out'
    code = ('import os, signal, sys, time\n' + _SIGINT_AT[moment] +
            'from starcompactor.pipeline.cli import main\n'
            'sys.exit(main(sys.argv[1:]))\n')
    args = ['instances', *source_args(mariadb, (history[0],)),
            '--mysql-password-file', password_file,
            '--mask-key-file', key_file, '--num-shards', '3',
            '--output', str(out / 'trace')]
    env = {k: v for k, v in os.environ.items() if k != 'MYSQL_PWD'}
    run = subprocess.run([sys.executable, '-c', code, *args], env=env,
                         capture_output=True, text=True, timeout=120,
                         preexec_fn=_sigint_as_at_a_terminal)
    assert run.returncode == 130, run.stderr
    assert run.stderr.strip().splitlines()[-1] == \
        'starcompactor: interrupted; no trace written', run.stderr
    assert 'Traceback' not in run.stderr, run.stderr
    assert _left_in(out) == []


# -- the reading session cannot write ----------------------------------------

ER_READ_ONLY = 1792   # "Cannot execute statement in a READ ONLY transaction"
WRITER = 'trace_reader_who_may_write'
WRITER_PASSWORD = 'writer-Pa55-for-this-test'


def _try_to_write(session, events, n):
    """Error codes of an INSERT, an UPDATE and a DELETE on ``session``, with
    autocommit off and on; None for a statement that went through."""
    codes = []
    statements = (
        (f"INSERT INTO {events} (id, event, start_time) VALUES (%s, "
         f"'compute_reboot_instance', '2020-01-01 00:00:00')", (1000 + n,)),
        (f"UPDATE {events} SET result = 'Error'", None),
        (f'DELETE FROM {events}', None))
    for autocommit in (False, True):
        session.autocommit(autocommit)
        for sql, args in statements:
            try:
                with session.cursor() as cursor:
                    cursor.execute(sql, args)
                codes.append(None)
            except pymysql.err.MySQLError as e:
                codes.append(e.args[0])
            session.rollback()
    session.autocommit(False)
    return codes


def test_the_reading_session_is_read_only(mariadb, nova_db, tmp_path,
                                          monkeypatch):
    """Even as a user granted INSERT, UPDATE and DELETE, no session the tool
    opens can change Nova: each is READ ONLY (error 1792), autocommit or
    not. Checked on ``MySQLConnection.connect()`` and on every session a
    real run opens (plan, table reads, leak check)."""
    database = nova_db('readonly')
    password = tmp_path / 'writer-password'
    password.write_text(WRITER_PASSWORD)
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE USER IF NOT EXISTS '{WRITER}'@'%' "
                       f"IDENTIFIED BY '{WRITER_PASSWORD}'")
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON "
                       f"`{database}`.* TO '{WRITER}'@'%'")
    events = f'`{database}`.instance_actions_events'
    try:
        # The grant is real: an ordinary session of that user can write.
        plain = pymysql.connect(host=mariadb.host, port=mariadb.port,
                                user=WRITER, password=WRITER_PASSWORD)
        with plain:
            assert _try_to_write(plain, events, 0) == [None] * 6
        # (it inserted, then deleted all: with autocommit, for good)

        with mariadb.admin() as admin:
            insert(admin, database, 'instances', [dict(
                id=1, uuid='aaaaaaaa-0000-4000-8000-000000000001',
                user_id='u', project_id='p', hostname='vm', host='h',
                deleted=0)])
            insert(admin, database, 'instance_actions', [dict(
                id=1, action='create', instance_uuid=(
                    'aaaaaaaa-0000-4000-8000-000000000001'),
                start_time='2020-01-01 00:00:00')])
            insert(admin, database, 'instance_actions_events', [dict(
                id=1, action_id=1, event='compute_reboot_instance',
                start_time='2020-01-01 00:00:00',
                finish_time='2020-01-01 00:00:09', result='Success')])
        connection = MySQLConnection(mariadb.host, mariadb.port, WRITER,
                                     str(password))
        session = connection.connect()
        with session:
            assert _try_to_write(session, events, 1) == [ER_READ_ONLY] * 6

        # Every session of a real run (the DirectRunner runs in this
        # process): each is tried as soon as it is opened.
        tried = []
        connect = MySQLConnection.connect

        def connect_and_try(self, *args, **kwargs):
            session = connect(self, *args, **kwargs)
            tried.append(_try_to_write(session, events, 2 + len(tried)))
            return session

        monkeypatch.setattr(MySQLConnection, 'connect', connect_and_try)
        summary = run_job([
            '--mysql-host', mariadb.host, '--mysql-port', str(mariadb.port),
            '--mysql-user', WRITER, '--mysql-password-file', str(password),
            '--databases', database, '--output', str(tmp_path / 'trace'),
            '--formats', 'csv'])
        assert summary.trace_rows == 1
        assert len(tried) >= 2, tried     # the plan, and the reader(s)
        assert all(codes == [ER_READ_ONLY] * 6 for codes in tried), tried
        with mariadb.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f'SELECT id, result FROM {events}')
            assert cursor.fetchall() == ((1, 'Success'),)
    finally:
        with mariadb.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{WRITER}'@'%'")
