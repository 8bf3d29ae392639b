"""Compute API answers as rows of the three source tables.

The API shows no row ids and no cells. Ids are made from what identifies a
row in Nova: an instance's uuid, an action's (uuid, request id), an event's
(uuid, request id, event name, start), hashed to 63 bits (blake2b) so that
they fit the id columns and come out the same wherever and whenever a row
is read. A
server listed twice (live, then deleted, because it was deleted between
the two listings) so yields the same rows twice, which the join keeps once
(``read_twice``), as it does a row read from a live and a ``shadow_``
table. ``db`` is one label for the whole API.
"""
import hashlib
import re
from dataclasses import dataclass
from typing import Optional, Tuple

import pyarrow as pa

from starcompactor.transforms.schema import (
    ACTIONS, EVENTS, INSTANCES, SOURCE_COLUMNS, source_schema)

API_DB = 'api'

# Nova writes times as '2016-03-01T12:00:05.000000' (sometimes with a zone
# suffix); the source tables hold them as its database does.
_API_TIME = re.compile(
    r'(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.\d+)?(?:Z|[+-]00:?00)?$')


def row_id(*parts):
    """A 63-bit id for the row that ``parts`` identify."""
    digest = hashlib.blake2b('\0'.join(parts).encode('utf-8'),
                             digest_size=8).digest()
    return int.from_bytes(digest, 'big') >> 1


def nova_time(value):
    """An API time as Nova's database text (``YYYY-MM-DD HH:MM:SS``). Text
    that is no UTC time is kept as it is: validation rejects it
    (``bad_time``) like a bad time in the database."""
    if value is None:
        return None
    match = _API_TIME.match(value)
    return f'{match.group(1)} {match.group(2)}' if match else value


def in_window(start_time, window):
    """Whether an event starting at ``start_time`` (Nova text) falls in
    ``window`` (``(start, end)``, Nova text or None), as the database
    sources' ``WHERE start_time >= start AND start_time < end`` decides."""
    start, end = window
    if not (start or end):
        return True
    if start_time is None:
        return False
    return (not start or start_time >= start) and \
        (not end or start_time < end)


# memory_mb, root_gb, vcpus
Sizes = Tuple[Optional[int], Optional[int], Optional[int]]


def flavor_sizes(flavor):
    """``(memory_mb, root_gb, vcpus)`` of an API flavor (embedded in a
    server from 2.47, or from ``GET /flavors/{id}``)."""
    return flavor.get('ram'), flavor.get('disk'), flavor.get('vcpus')


@dataclass(frozen=True)
class Server:
    """What the trace needs of one server of a listing. ``sizes`` is None
    until known: older microversions name the flavor (``flavor_id``) only."""
    uuid: str
    user_id: Optional[str]
    project_id: Optional[str]
    hostname: Optional[str]
    host: Optional[str]
    sizes: Optional[Sizes]
    flavor_id: Optional[str]

    @classmethod
    def from_api(cls, record):
        # A server of a cell that is down (2.69+) comes as a partial
        # record: what it lacks stays None.
        flavor = record.get('flavor') or {}
        embedded = 'vcpus' in flavor
        return cls(record['id'], record.get('user_id'),
                   record.get('tenant_id'),
                   record.get('OS-EXT-SRV-ATTR:hostname'),
                   record.get('OS-EXT-SRV-ATTR:host'),
                   flavor_sizes(flavor) if embedded else None,
                   None if embedded else flavor.get('id'))

    def identities(self):
        return (self.user_id, self.project_id, self.hostname, self.host)


def source_table(name, rows):
    """A source-table batch of ``rows`` (tuples in ``SOURCE_COLUMNS``
    order, without ``db``; the optional columns the API does not give,
    ``schema.OPTIONAL_COLUMNS``, may be left off the end: NULL)."""
    schema = source_schema(name)
    width = len(SOURCE_COLUMNS[name])
    columns = list(zip(*rows)) or [()] * width
    columns += [(None,) * len(rows)] * (width - len(columns))
    arrays = [pa.array([API_DB] * len(rows), pa.string())] + [
        pa.array(list(values), field.type)
        for values, field in zip(columns, list(schema)[1:])]
    return pa.Table.from_arrays(arrays, schema=schema)


def instances_table(servers):
    """``servers``: ``(Server, sizes)`` pairs (sizes may be None)."""
    return source_table(INSTANCES, [
        (row_id(s.uuid), s.uuid, s.user_id, s.project_id, s.hostname,
         s.host, *(sizes or (None, None, None)))
        for s, sizes in servers])


def actions_table(actions):
    """``actions``: ``(uuid, request_id)`` pairs."""
    return source_table(ACTIONS, [(row_id(uuid, request_id), uuid)
                                  for uuid, request_id in actions])


def event_rows(uuid, request_id, events, window):
    """The source rows of an action's ``events`` (as the API shows them)
    that start in ``window``."""
    found = []
    for event in events:
        name, start = event.get('event'), nova_time(event.get('start_time'))
        if in_window(start, window):
            found.append((row_id(uuid, request_id, name or '', start or ''),
                          row_id(uuid, request_id), name, start,
                          nova_time(event.get('finish_time')),
                          event.get('result')))
    return found


def events_table(rows):
    return source_table(EVENTS, rows)
