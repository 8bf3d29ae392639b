"""A throwaway MariaDB server for tests and benchmarks.

Starts ``mariadbd`` on a temporary data directory and a free loopback port,
so that no system service is needed (or touched). Set
``STARCOMPACTOR_TEST_MYSQL=host:port`` (with ``MYSQL_PWD`` for root) to use
an existing server instead.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pymysql

INSTALL_HINT = ('MariaDB is not installed: as root run '
                '`apt-get update && apt-get install -y mariadb-server` '
                '(or run ./run_local.sh test, which does)')


def _find(*names):
    for name in names:
        path = shutil.which(name) or shutil.which(name, path='/usr/sbin:/usr/bin')
        if path:
            return path
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class MariaDBServer:
    """A running server; ``admin()`` connects as root over its socket.

    By default on a temporary directory removed by ``stop()``; with
    ``directory``, on that one, kept (its data survive for the next start).
    """

    def __init__(self, base_dir=None, directory=None):
        self.mariadbd = _find('mariadbd', 'mysqld')
        self.install_db = _find('mariadb-install-db', 'mysql_install_db')
        if not self.mariadbd or not self.install_db:
            raise RuntimeError(INSTALL_HINT)
        self.temporary = directory is None
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.dir = directory or tempfile.mkdtemp(
            prefix='starcompactor-mariadb-', dir=base_dir)
        self.datadir = os.path.join(self.dir, 'data')
        self.socket = os.path.join(self.dir, 'mariadb.sock')
        self.host, self.port = '127.0.0.1', _free_port()
        self.process = None

    def start(self, timeout=60):
        user = ['--user=root'] if os.geteuid() == 0 else []
        if not os.path.isdir(os.path.join(self.datadir, 'mysql')):
            subprocess.run(
                [self.install_db, '--no-defaults',
                 f'--datadir={self.datadir}',
                 '--auth-root-authentication-method=normal', '--skip-test-db',
                 *user],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.process = subprocess.Popen(
            [self.mariadbd, '--no-defaults', f'--datadir={self.datadir}',
             f'--socket={self.socket}', f'--port={self.port}',
             f'--tmpdir={self.dir}',
             '--bind-address=127.0.0.1', '--skip-name-resolve',
             '--innodb-buffer-pool-size=512M', '--innodb-log-file-size=256M',
             '--innodb-flush-log-at-trx-commit=0', '--skip-log-bin',
             '--local-infile=1', '--max-allowed-packet=256M',
             f'--log-error={self.dir}/error.log', *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin().close()
                return self
            except pymysql.err.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'mariadbd did not start; see '
                                       f'{self.dir}/error.log')
                time.sleep(0.2)

    def admin(self, database=None, **kwargs):
        return pymysql.connect(unix_socket=self.socket, user='root',
                               password='', database=database,
                               charset='utf8mb4', autocommit=True, **kwargs)

    def stop(self, timeout=60):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.temporary:
            shutil.rmtree(self.dir, ignore_errors=True)


class ExistingServer:
    """A server someone else runs (``STARCOMPACTOR_TEST_MYSQL``)."""

    def __init__(self, address):
        host, _, port = address.partition(':')
        self.host, self.port = host, int(port or 3306)
        self.socket = None

    def start(self):
        self.admin().close()
        return self

    def admin(self, database=None, **kwargs):
        return pymysql.connect(host=self.host, port=self.port, user='root',
                               password=os.environ.get('MYSQL_PWD', ''),
                               database=database, charset='utf8mb4',
                               autocommit=True, **kwargs)

    def stop(self):
        pass


def start_server():
    address = os.environ.get('STARCOMPACTOR_TEST_MYSQL')
    server = ExistingServer(address) if address else MariaDBServer()
    return server.start()
