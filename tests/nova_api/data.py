"""The rows the API serves, indexed the way Nova's queries reach them.

Rows are dicts over Nova's column names (nova-schema/cell.sql) plus ``db``,
the cell database they come from. Only the live tables are read: rows that
``nova-manage db archive_deleted_rows`` moved to ``shadow_`` tables are gone
from the API, as in real Nova.
"""
import bisect
import collections
import datetime as dt
import itertools

import pymysql.cursors

TIME_COLUMNS = ('created_at', 'updated_at', 'deleted_at', 'launched_at',
                'terminated_at', 'start_time', 'finish_time', 'last_seen_up')
SERVER_TABLES = ('instances', 'instance_actions', 'instance_actions_events')
HOST_TABLES = ('compute_nodes', 'services')


def read_mysql(connection, databases, tables=SERVER_TABLES):
    """The rows of the live ``tables`` of ``databases``, a list per table
    (by default instances, actions, events)."""
    found = {table: [] for table in tables}
    with connection.cursor(pymysql.cursors.DictCursor) as cursor:
        for db in databases:
            for table, rows in found.items():
                cursor.execute(f'SELECT * FROM `{db}`.`{table}`')
                rows.extend(dict(row, db=db) for row in cursor.fetchall())
    return tuple(found.values())


def _time(value):
    """A naive UTC datetime; None for NULL and for what is not a time
    (PyMySQL hands MySQL's zero date over as a string)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def with_times(row):
    return dict(row, **{c: _time(row[c]) for c in TIME_COLUMNS if c in row})


def newest_first_key(row):
    """Nova's default order, created_at desc then id desc, read descending.
    NULL created_at sorts last as in MySQL; the uuid (or request_id) breaks
    ties of rows from different cells, whose ids collide."""
    return (row.get('created_at') or dt.datetime.min, row.get('id') or 0,
            row.get('uuid') or row.get('request_id') or '')


def derived_flavors(instances):
    """The flavor catalog the instances imply: one flavor per
    instance_type_id (Nova's flavors.id), or per (vcpus, memory_mb, root_gb)
    where that is NULL."""
    flavors = {}
    for instance in instances:
        key = instance.get('instance_type_id') or (
            instance.get('vcpus'), instance.get('memory_mb'),
            instance.get('root_gb'))
        if key not in flavors:
            flavorid = (str(key) if isinstance(key, int)
                        else 'auto-{}c-{}m-{}g'.format(*key))
            flavors[key] = dict(
                id=key if isinstance(key, int) else None, flavorid=flavorid,
                name=f'flavor-{flavorid}', vcpus=instance.get('vcpus'),
                memory_mb=instance.get('memory_mb'),
                root_gb=instance.get('root_gb'),
                ephemeral_gb=instance.get('ephemeral_gb') or 0, swap=0,
                rxtx_factor=1.0, disabled=False, is_public=True,
                description=None)
    return list(flavors.values())


class NovaData:
    """Instances of all cells merged (as Nova's API merges cells), each with
    its own flavor copy (Nova keeps one per instance), its actions and
    their events; and the flavor catalog, ``flavors`` (flavorid -> row),
    which tests may change while the server runs (delete an entry: a flavor
    that no longer exists)."""

    def __init__(self, instances, actions, events, flavors=None):
        instances = [with_times(row) for row in instances]
        catalog = derived_flavors(instances) if flavors is None else flavors
        self.flavors = {f['flavorid']: f for f in catalog}
        by_type_id = {f['id']: f for f in catalog if f.get('id') is not None}
        by_size = {(f['vcpus'], f['memory_mb'], f['root_gb']): f
                   for f in catalog}
        for instance in instances:
            catalog_entry = by_type_id.get(instance.get('instance_type_id')) \
                or by_size.get((instance.get('vcpus'),
                                instance.get('memory_mb'),
                                instance.get('root_gb')), {})
            instance['flavor'] = dict(
                flavorid=catalog_entry.get('flavorid'),
                name=catalog_entry.get('name'), vcpus=instance.get('vcpus'),
                memory_mb=instance.get('memory_mb'),
                root_gb=instance.get('root_gb'),
                ephemeral_gb=instance.get('ephemeral_gb') or 0,
                swap=catalog_entry.get('swap', 0))

        self.instances = {row['uuid']: row for row in instances}
        self.newest_first = sorted(instances, key=newest_first_key,
                                   reverse=True)
        self._oldest_first_keys = [newest_first_key(row)
                                   for row in reversed(self.newest_first)]

        cell_of = {row['uuid']: row['db'] for row in instances}
        self.actions_of = collections.defaultdict(list)
        for action in map(with_times, actions):
            if cell_of.get(action.get('instance_uuid')) == action['db']:
                self.actions_of[action['instance_uuid']].append(action)
        for rows in self.actions_of.values():
            rows.sort(key=newest_first_key, reverse=True)

        self.events_of = collections.defaultdict(list)
        for event in map(with_times, events):
            self.events_of[event['db'], event.get('action_id')].append(event)
        for rows in self.events_of.values():
            rows.sort(key=newest_first_key, reverse=True)

    def instances_after(self, marker):
        """Instances newest first, from just after ``marker`` (an instance
        row, or None for the start)."""
        start = 0
        if marker is not None:
            older = bisect.bisect_left(self._oldest_first_keys,
                                       newest_first_key(marker))
            start = len(self.newest_first) - older
        return itertools.islice(self.newest_first, start, None)
