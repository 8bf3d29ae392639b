"""Loading a synthetic history into MariaDB/MySQL."""
import queue
import threading
import time

from starcompactor.synth.model import History
from starcompactor.synth.nova_schema import create_cell_database
from starcompactor.synth.result import Result
from starcompactor.synth.inserts import ExtendedInserts


def load_mysql(connection, instances, **options):
    """Create the cell databases (dropping them first) with Nova's schema
    on ``connection`` (pymysql, a user allowed to create databases) and
    load ``generate(instances, **options)`` into them. Sets autocommit on
    the connection; rows go as ~1 MB extended INSERTs with foreign key and
    unique checks off, sent by a second thread while the next ones are
    generated. Returns a ``Result``."""
    began = time.monotonic()
    history = History(instances, **options)
    for cell in history.cells:
        create_cell_database(connection, cell, drop=True)
    connection.autocommit(True)
    with connection.cursor() as cursor:
        cursor.execute('SET SESSION foreign_key_checks=0, unique_checks=0')
    statements, errors = queue.Queue(maxsize=8), []

    def send():
        with connection.cursor() as cursor:
            while True:
                statement = statements.get()
                if statement is None:
                    return
                if not errors:
                    try:
                        cursor.execute(statement)
                    except Exception as e:  # re-raised in the caller
                        errors.append(e)

    sender = threading.Thread(target=send, name='synth-mysql', daemon=True)
    sender.start()
    try:
        inserts = ExtendedInserts(
            lambda db, table, statement: statements.put(statement),
            qualify=True)
        for db, table, rows in history.rows():
            if errors:
                break
            inserts.add(db, table, rows)
        if not errors:
            inserts.close()
    finally:
        statements.put(None)
        sender.join()
    if errors:
        raise errors[0]
    with connection.cursor() as cursor:
        cursor.execute('SET SESSION foreign_key_checks=1, unique_checks=1')
    return Result(history.counts, time.monotonic() - began)
