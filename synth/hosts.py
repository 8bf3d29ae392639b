"""The hosts of a synthetic history: ``compute_nodes`` and ``services`` as
Nova leaves them at the end of the span, history included.

Every cell but cell0 (which has no hosts) holds:

* the hosts the history places instances on (``History.hosts``): added
  30-400 days before the span, so each exists before any instance reaches
  it, and never retired (instances stay on them to the end). Their nodes
  keep ids 1..n, the ``compute_id`` the instances carry. 10% got new
  hardware during the span (the old node row deleted, a new one with the
  next capacity class created at the same time: Nova's DELETE then CREATE
  on one host), 10% were resized in place (more capacity, ``updated_at``
  then), 20% were disabled for maintenance and re-enabled (``updated_at``
  the re-enabling, ``disabled_reason`` cleared as Nova clears it);
* retired hosts, a quarter as many: drained, disabled with a reason and
  deleted (node and service, ``deleted = id``) during the span; no
  instance of the history is placed on them. Those retired before the
  archive time are in the ``shadow_`` tables, as the instances deleted
  then are;
* new hosts, an eighth as many, added in the last tenth of the span and
  empty: half still disabled for burn-in (with the reason), half enabled
  once it passed;
* a nova-conductor service per controller.

``updated_at`` holds a row's last change (real Nova also moves it with
every periodic report; the history leaves that out, so the dates say what
happened). Host rows come from their own random stream: the instance rows
of a seed do not depend on them.
"""
import datetime as dt
import random

from starcompactor.synth.model import CONTROLLERS, _uuid4
from starcompactor.synth.tables import SHADOW_PREFIX

# (vcpus, memory_mb, local_gb); a resize or replacement moves one class up.
HOST_CLASSES = ((32, 131072, 1000), (48, 196608, 1800), (64, 262144, 2000),
                (96, 393216, 3600), (128, 524288, 7000))
# Shares of the instance hosts: cumulative thresholds of one draw.
REPLACED, RESIZED, MAINTAINED = 0.10, 0.20, 0.40
RETIRED_SHARE, NEW_SHARE = 4, 8  # one retired host per 4, one new per 8
RETIRED_REASON = 'decommissioned: end of warranty'
BURN_IN_REASON = 'burn-in: new hardware'
DAY = 86400
REPORT_INTERVAL = 10             # seconds between a service's reports
HYPERVISOR = ('QEMU', 8002000,
              '{"arch": "x86_64", "model": "Icelake-Server", '
              '"vendor": "Intel", "topology": {"cells": 2, "sockets": 2}}')


class _Cell:
    """The rows of one cell's hosts, built in the order they are decided."""

    def __init__(self, history, rng):
        self.history, self.rng = history, rng
        self.rows = {}            # table -> rows
        self.next_node, self.next_service = 1, 1

    def time(self, t):
        """Second ``t`` of the history (negative: before its first day)."""
        return (self.history.base + dt.timedelta(seconds=t)).strftime(
            '%Y-%m-%d %H:%M:%S')

    def add(self, table, row, deleted_at):
        archived = deleted_at is not None and \
            deleted_at < self.history.archive_before
        self.rows.setdefault((SHADOW_PREFIX if archived else '') + table,
                             []).append(row)

    def service(self, host, binary, created, updated, disabled=False,
                reason=None, deleted_at=None):
        id_ = self.next_service
        self.next_service += 1
        last = deleted_at if deleted_at is not None else self.history.now
        self.add('services', (
            self.time(created), self.time(updated),
            self.time(deleted_at) if deleted_at is not None else None, id_,
            host, binary, binary.split('-')[1],
            (last - created) // REPORT_INTERVAL, int(disabled),
            id_ if deleted_at is not None else 0, reason, self.time(last), 0,
            66, _uuid4(self.rng)), deleted_at)
        return id_

    def node(self, id_, host, service_id, created, capacity, updated=None,
             deleted_at=None):
        vcpus, memory_mb, local_gb = capacity
        hypervisor_type, version, cpu_info = HYPERVISOR
        self.add('compute_nodes', (
            self.time(created), self.time(updated or created),
            self.time(deleted_at) if deleted_at is not None else None, id_,
            service_id, vcpus, memory_mb, local_gb, 0, 512, 0,
            hypervisor_type, version, cpu_info, f'{host}.cloud.example',
            id_ if deleted_at is not None else 0, host, 1.5, 16.0,
            _uuid4(self.rng), 1.0, 1), deleted_at)

    def new_node_id(self):
        id_ = self.next_node
        self.next_node += 1
        return id_


def _between(rng, low, high):
    return low + int(rng.random() * max(1, high - low))


def host_rows(history):
    """``(database, table, rows)`` of every cell's ``compute_nodes`` and
    ``services`` (and their ``shadow_`` copies) for ``history`` (a
    ``model.History``), over ``tables.COLUMNS``."""
    rng = random.Random(f'starcompactor-synth-hosts:{history.seed}')
    s0, now = history.s0, history.now
    names = iter(range(sum(map(len, history.hosts.values())) + 1, 10 ** 6))
    for cell in history.live_cells:
        rows = _Cell(history, rng)
        hosts = history.hosts[cell]
        rows.next_node = len(hosts) + 1    # instance hosts' nodes: 1..n
        for position, host in enumerate(hosts, 1):
            created = s0 - _between(rng, 30 * DAY, 400 * DAY)
            kind = int(rng.random() * (len(HOST_CLASSES) - 1))
            capacity, bigger = HOST_CLASSES[kind], HOST_CLASSES[kind + 1]
            change = _between(rng, s0, now)
            fate = rng.random()
            re_enabled = change if RESIZED <= fate < MAINTAINED else created
            service = rows.service(host, 'nova-compute', created, re_enabled)
            if fate < REPLACED:
                rows.node(rows.new_node_id(), host, service, created,
                          capacity, deleted_at=change)
                rows.node(position, host, service, change, bigger)
            elif fate < RESIZED:
                rows.node(position, host, service, created, bigger,
                          updated=change)
            else:
                rows.node(position, host, service, created, capacity)
        for _ in range(max(1, len(hosts) // RETIRED_SHARE)):
            host = f'compute-{next(names):04d}'
            created = s0 - _between(rng, 200 * DAY, 800 * DAY)
            retired = _between(rng, s0 + DAY, now - DAY)
            drained = retired - _between(rng, DAY, 14 * DAY)
            service = rows.service(host, 'nova-compute', created, drained,
                                   True, RETIRED_REASON, retired)
            rows.node(rows.new_node_id(), host, service, created,
                      HOST_CLASSES[0], deleted_at=retired)
        for i in range(max(1, len(hosts) // NEW_SHARE)):
            host = f'compute-{next(names):04d}'
            created = _between(rng, now - (now - s0) // 10, now - 3600)
            burning_in = i % 2 == 0
            updated = created if burning_in else \
                min(now, created + _between(rng, 3600, 2 * DAY))
            service = rows.service(host, 'nova-compute', created, updated,
                                   burning_in,
                                   BURN_IN_REASON if burning_in else None)
            rows.node(rows.new_node_id(), host, service, created,
                      HOST_CLASSES[-1])
        for controller in CONTROLLERS:
            created = s0 - _between(rng, 400 * DAY, 800 * DAY)
            rows.service(controller, 'nova-conductor', created, created)
        for table in sorted(rows.rows):
            # Each table in id order, as a database returns it.
            yield cell, table, sorted(rows.rows[table], key=lambda r: r[3])
