"""Host (machine) events from Nova's ``compute_nodes`` and ``services``.

A database state shows, per host, its compute node rows (live, soft-deleted
and archived: ``created_at``, ``deleted_at``, capacities) and its
nova-compute service (``disabled``, ``updated_at``). One state is read as a
change from nothing; a series of states (nightly dumps) adds what changed
between consecutive ones:

- a node row new to the state: CREATE at its ``created_at`` (and DELETE at
  its ``deleted_at`` when it is already deleted);
- a live node now deleted: DELETE at its ``deleted_at``; a live node gone
  from the state (purged, or the host removed): DELETE at the state's time;
- a live node whose capacities changed: UPDATE;
- the service's ``disabled`` flipped: DISABLE or ENABLE.

An UPDATE, ENABLE or DISABLE is dated when the change became visible: the
row's ``updated_at`` where it moved since the previous state, else the
state's time. A replaced node (a new row for the same host) gives the old
row's DELETE and the new one's CREATE.

Then, per host in time order, the events must make sense: no CREATE while
created, no DELETE unless created, no ENABLE or DISABLE repeating the last,
no UPDATE that changes nothing. An event breaking a rule is counted under
its reason, never written.
"""
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Tuple

CREATE, DELETE, UPDATE, ENABLE, DISABLE = (
    'CREATE', 'DELETE', 'UPDATE', 'ENABLE', 'DISABLE')
# At one second: a replaced node goes before its successor comes, and a
# host exists before it changes.
SAME_SECOND_ORDER = {DELETE: 0, CREATE: 1, UPDATE: 2, DISABLE: 3, ENABLE: 3}

CREATE_WHILE_CREATED = 'create_while_created'
DELETE_UNLESS_CREATED = 'delete_unless_created'
REPEATED_ENABLE = 'repeated_enable'
REPEATED_DISABLE = 'repeated_disable'
UPDATE_CHANGES_NOTHING = 'update_changes_nothing'


@dataclass(frozen=True)
class Node:
    """One compute node row; times in seconds since 1970."""
    key: Tuple[str, int]            # (database, id): ids collide across cells
    created: int
    updated: Optional[int]
    deleted: Optional[int]          # its deleted_at; None while live
    capacity: Tuple[int, int, int]  # vcpus, memory_mb, local_gb


@dataclass(frozen=True)
class Service:
    """A host's live nova-compute service row."""
    updated: Optional[int]
    disabled: bool


@dataclass(frozen=True)
class HostState:
    """One host in one database state taken at ``time`` (a host absent from
    the state has no nodes and no service)."""
    time: int
    nodes: Tuple[Node, ...] = ()
    service: Optional[Service] = None


@dataclass(frozen=True)
class HostEvent:
    time: int
    event: str
    capacity: Optional[Tuple[int, int, int]]


def _visible(updated, updated_before, state_time):
    """When a change became visible: ``updated_at`` if it moved."""
    if updated is not None and updated != updated_before:
        return updated
    return state_time


def changes(previous, current):
    """Candidate events of one host between two states (``previous`` None:
    the first state, a change from nothing)."""
    before = {node.key: node for node in previous.nodes} if previous else {}
    for node in current.nodes:
        old = before.pop(node.key, None)
        if old is None:
            yield HostEvent(node.created, CREATE, node.capacity)
            if node.deleted is not None:
                yield HostEvent(node.deleted, DELETE, node.capacity)
        elif old.deleted is None and node.deleted is not None:
            yield HostEvent(node.deleted, DELETE, node.capacity)
        elif node.deleted is None and node.capacity != old.capacity:
            yield HostEvent(_visible(node.updated, old.updated, current.time),
                            UPDATE, node.capacity)
    for old in before.values():
        if old.deleted is None:
            yield HostEvent(current.time, DELETE, old.capacity)

    was = previous.service if previous else None
    now = current.service
    if now is not None and now.disabled != (was is not None and was.disabled):
        yield HostEvent(
            _visible(now.updated, was.updated if was else None, current.time),
            DISABLE if now.disabled else ENABLE, None)


def host_events(states):
    """``(events, rejects)`` of one host from its ``states`` in time order
    (``kept_by_rules``)."""
    return kept_by_rules(event for previous, current
                         in zip((None,) + tuple(states), states)
                         for event in changes(previous, current))


def kept_by_rules(candidates):
    """``(events, rejects)``: the candidates that keep the rules, in time
    order, each with the host's capacities then, and ``{reason: n}`` of
    the others."""
    created, disabled, capacity = False, False, None
    events, rejects = [], Counter()
    for candidate in sorted(candidates,
                            key=lambda e: (e.time, SAME_SECOND_ORDER[e.event])):
        kind = candidate.event
        broken = {
            CREATE: created and CREATE_WHILE_CREATED,
            DELETE: not created and DELETE_UNLESS_CREATED,
            UPDATE: candidate.capacity == capacity and UPDATE_CHANGES_NOTHING,
            ENABLE: not disabled and REPEATED_ENABLE,
            DISABLE: disabled and REPEATED_DISABLE,
        }[kind]
        if broken:
            rejects[broken] += 1
            continue
        if kind in (ENABLE, DISABLE):
            disabled = kind == DISABLE
            events.append(HostEvent(candidate.time, kind, capacity))
            continue
        events.append(candidate)
        created = kind != DELETE
        # A deleted host has no capacity until it is created again.
        capacity = candidate.capacity if created else None
    return events, dict(rejects)
