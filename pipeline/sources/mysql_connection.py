"""Connecting to Nova's MySQL/MariaDB: where the password comes from, and
errors a user can act on.

The password is never a command-line literal and never part of the pipeline
graph: a ``MySQLConnection`` only says *where* to find it (a file,
``MYSQL_PWD``, or ``~/.my.cnf``), and each worker reads it when it connects.
"""
import configparser
import os
from dataclasses import dataclass
from typing import Optional

import pymysql
from pymysql.constants import ER, FIELD_TYPE
from pymysql.converters import conversions

from starcompactor.pipeline.errors import UserError

PASSWORD_ENV = 'MYSQL_PWD'

# Times are kept as Nova's text and parsed later, vectorised: converting each
# value to a Python datetime costs more than the read itself.
_TEXT_TYPES = (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATE,
               FIELD_TYPE.TIME, FIELD_TYPE.NEWDATE)
FAST_CONVERSIONS = {k: v for k, v in conversions.items()
                    if k not in _TEXT_TYPES}


def _password_from_my_cnf(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       allow_no_value=True)
    try:
        parser.read(path)
    except configparser.Error as e:
        raise UserError(f'cannot parse {path}: {e.message.splitlines()[0]}')
    if parser.has_option('client', 'password'):
        return (parser.get('client', 'password') or '').strip('"\'')
    return None


@dataclass(frozen=True)
class MySQLConnection:
    host: str = '127.0.0.1'
    port: int = 3306
    user: str = 'root'
    password_file: Optional[str] = None
    my_cnf: str = '~/.my.cnf'
    connect_timeout: int = 10

    def password(self, environ=os.environ):
        if self.password_file:
            try:
                with open(self.password_file, encoding='utf-8') as f:
                    return f.read().rstrip('\r\n')
            except OSError as e:
                raise UserError(f'cannot read MySQL password file '
                                f'{self.password_file}: {e.strerror}')
        if PASSWORD_ENV in environ:
            return environ[PASSWORD_ENV]
        my_cnf = os.path.expanduser(self.my_cnf)
        if os.path.exists(my_cnf):
            return _password_from_my_cnf(my_cnf) or ''
        return ''

    def describe(self):
        return f'{self.user}@{self.host}:{self.port}'

    def connect(self, database=None):
        """A read-only connection; raises ``UserError`` on failure."""
        try:
            connection = pymysql.connect(
                host=self.host, port=self.port, user=self.user,
                password=self.password(), database=database,
                connect_timeout=self.connect_timeout,
                charset='utf8mb4', conv=FAST_CONVERSIONS,
                use_unicode=False)   # text is decoded, and checked, by Arrow
        except pymysql.err.MySQLError as e:
            raise self.error(e, database) from None
        with connection.cursor() as cursor:
            # A trace tool never writes to Nova: make sure it cannot.
            cursor.execute('SET SESSION TRANSACTION READ ONLY')
        return connection

    def error(self, exc, database=None, table=None):
        """A one-line ``UserError`` for a PyMySQL error."""
        code = exc.args[0] if exc.args else None
        where = self.describe()
        if code == ER.ACCESS_DENIED_ERROR:
            return UserError(f'MySQL refused user {self.user!r} at '
                             f'{self.host}:{self.port}: wrong password or '
                             f'no access (give it with --mysql-password-file,'
                             f' {PASSWORD_ENV} or ~/.my.cnf)')
        if code == ER.BAD_DB_ERROR or code == ER.DBACCESS_DENIED_ERROR:
            return UserError(f'unknown or inaccessible database {database!r} '
                             f'on {where}')
        if code == ER.NO_SUCH_TABLE:
            return UserError(f'table {table or "?"} is missing in database '
                             f'{database!r} on {where}: not a Nova cell '
                             f'database? (use --no-archived if only the '
                             f'shadow_ tables are missing)')
        if code == ER.BAD_FIELD_ERROR:
            return UserError(f'table {table or "?"} in database {database!r} '
                             f'lacks a column starcompactor reads (an older '
                             f'Nova schema?): {exc.args[1]}')
        if code == ER.TABLEACCESS_DENIED_ERROR:
            return UserError(f'user {self.user!r} may not read {table or "?"} '
                             f'in {database!r}: grant SELECT on it')
        if code in (2003, 2005, 2013):
            return UserError(f'cannot reach MySQL at {self.host}:{self.port}: '
                             f'{exc.args[1] if len(exc.args) > 1 else exc}')
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        return UserError(f'MySQL error {code} on {where}: {message}')
