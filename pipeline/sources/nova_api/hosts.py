"""The Nova compute API as the host table's source (``starcompactor hosts
--api``): hypervisors and nova-compute services, as the ``compute_nodes``
and ``services`` rows of one database state, taken at the cut.

One split, read on one worker: ``GET /os-services?binary=nova-compute``
(Nova does not page services), then ``GET /os-hypervisors/detail`` page by
page (``limit``/``marker`` from 2.33). Below 2.88 a hypervisor carries its
capacities; a cloud that requires 2.88 or later has them read from
Placement, ``GET /resource_providers/{uuid}/inventories`` (a compute node's
uuid is its resource provider's), ``concurrency`` requests at a time.

What the API cannot show: deleted and archived rows (it lists live ones),
a compute node's ``updated_at``, and when a node was created. A node's
``created_at`` is the earliest moment the API shows its host existing: its
nova-compute service's ``updated_at`` (the last report), else the cut. A
hypervisor whose capacities cannot be read is left out and counted
(``no_resource_provider``, ``http_<status>``), as is a service whose
status is unknown (``status_unknown``: its cell is down, 2.69+).
"""
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Optional

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.about import about_line
from starcompactor.pipeline.sources.nova_api import versions
from starcompactor.pipeline.sources.nova_api.client import (
    PLACEMENT, ApiError, NovaClient)
from starcompactor.pipeline.sources.nova_api.credentials import (
    CredentialSource)
from starcompactor.pipeline.sources.nova_api.rows import (
    nova_time, row_id, source_table)
from starcompactor.pipeline.sources.nova_api.source import (
    WithClientPool, report_requests, url_path, version_document)
from starcompactor.pipeline.sources.read import ReadSplits
from starcompactor.pipeline.times import UTC, to_nova_text
from starcompactor.transforms import counters
from starcompactor.transforms.host_trace import NOVA_COMPUTE
from starcompactor.transforms.schema import COMPUTE_NODES, SERVICES

log = logging.getLogger(__name__)

HOSTS = 'hypervisors and nova-compute services'   # the one split
PURPOSE = 'list hypervisors, services and resource provider inventories'
SERVICE_DISABLED = {'enabled': 0, 'disabled': 1}
# Reasons a listed row is left out.
NO_RESOURCE_PROVIDER = 'no_resource_provider'
STATUS_UNKNOWN = 'status_unknown'


def list_services(client):
    """Every nova-compute service (one request: no paging)."""
    try:
        body = client.get('os-services', {'binary': NOVA_COMPUTE})
    except ApiError as e:
        raise UserError(f'the compute API failed listing services: '
                        f'{e}') from None
    return body.get('services') or []


def list_hypervisors(client, page_size, paged):
    """The pages of ``GET /os-hypervisors/detail``. Nova drops a node whose
    host has no service from a page after cutting it, so a short page is
    not always the last: a listing ends with an empty page."""
    params = {'limit': page_size} if paged else None
    markers = set()
    while True:
        try:
            body = client.get('os-hypervisors/detail', params)
        except ApiError as e:
            raise UserError(f'the compute API failed listing hypervisors: '
                            f'{e}') from None
        records = body.get('hypervisors') or []
        if records:
            yield records
        if not (paged and records):
            return
        marker = records[-1]['id']
        if marker in markers:
            # Before 2.53 markers are ids, which repeat across cells: Nova
            # pages on from the first cell holding one, in a loop.
            raise UserError(f'the compute API pages hypervisors in a loop '
                            f'(marker {marker} again): their ids repeat '
                            f'across cells before microversion 2.53, which '
                            f'this cloud does not offer')
        markers.add(marker)
        params = dict(params, marker=marker)


def services_table(records):
    """The ``services`` batch of os-services ``records`` whose status is
    known, and how many are not (the partial record of a service in a cell
    that is down)."""
    known = [r for r in records if r.get('status') in SERVICE_DISABLED]
    return source_table(SERVICES, [
        (row_id(str(r['id'])), r.get('host'), r.get('binary'),
         nova_time(r.get('updated_at')), 0, SERVICE_DISABLED[r['status']])
        for r in known]), len(records) - len(known)


def creation_times(records, cut):
    """host -> the ``created_at`` of its nodes: the earliest report of its
    services (``records``), else ``cut`` (Nova text)."""
    reports = {}
    for record in records:
        host, updated = record.get('host'), nova_time(record.get('updated_at'))
        if updated and (host not in reports or updated < reports[host]):
            reports[host] = updated
    return lambda host: reports.get(host, cut)


def hypervisor_capacity(record):
    """``(vcpus, memory_mb, local_gb)`` of a hypervisor (before 2.88)."""
    return record.get('vcpus'), record.get('memory_mb'), record.get('local_gb')


def inventory_capacity(inventories):
    """``(vcpus, memory_mb, local_gb)`` from a resource provider's
    inventories: the totals, as the compute node reports them (the
    dedicated CPUs, PCPU, count with VCPU as in ``compute_nodes.vcpus``).
    A class the node does not hold (DISK_GB on shared storage) stays
    empty."""
    def total(*classes):
        totals = [inventories[c].get('total') for c in classes
                  if c in inventories]
        return sum(totals) if totals else None
    return total('VCPU', 'PCPU'), total('MEMORY_MB'), total('DISK_GB')


def compute_nodes_table(hypervisors, created):
    """The ``compute_nodes`` batch of ``(record, capacity)`` pairs; a
    hypervisor's host is its service's."""
    rows = []
    for record, capacity in hypervisors:
        host = (record.get('service') or {}).get('host')
        rows.append((row_id(str(record['id'])), host, created(host), None,
                     None, 0, *capacity))
    return source_table(COMPUTE_NODES, rows)


@dataclass(frozen=True)
class HostReading:
    """What a worker needs to read the hosts: where the credentials are,
    the microversion, whether capacities come from Placement, paging,
    concurrency, and the cut (Nova text) for nodes with no known time."""
    credentials: CredentialSource
    microversion: str
    placement: bool
    page_size: int
    concurrency: int
    rate: Optional[float]
    cut: str

    def client(self):
        return NovaClient(self.credentials.settings(), self.microversion,
                          self.concurrency, self.rate, PURPOSE)


class ReadHosts(WithClientPool):
    """The split -> ``(table, batch)``: the services, then the compute
    nodes, a page of hypervisors at a time."""
    pool_name = 'placement'

    def setup(self):
        super().setup()
        self.paged = versions.at_least(self.reading.microversion,
                                       versions.PAGED_HYPERVISORS)

    def process(self, _split):
        services = list_services(self.client)
        batch, unknown = services_table(services)
        counters.count_read(SERVICES, unknown)
        counters.count_rejected(SERVICES, STATUS_UNKNOWN, unknown)
        yield SERVICES, batch
        created = creation_times(services, self.reading.cut)
        for page in list_hypervisors(self.client, self.reading.page_size,
                                     self.paged):
            kept = []
            for record, (capacity, reason) in zip(
                    page, self.pool.map(self._capacity, page)):
                if reason:
                    counters.count_read(COMPUTE_NODES, 1)
                    counters.count_rejected(COMPUTE_NODES, reason, 1)
                else:
                    kept.append((record, capacity))
            report_requests(self.client)
            yield COMPUTE_NODES, compute_nodes_table(kept, created)
        report_requests(self.client)

    def _capacity(self, record):
        """``(capacity, None)``, or ``(None, reason)`` it is left out."""
        if not self.reading.placement:
            return hypervisor_capacity(record), None
        try:
            body = self.client.get(
                url_path('resource_providers', record['id'], 'inventories'),
                service=PLACEMENT)
        except ApiError as e:
            log.warning('%s; its hypervisor is left out', e)
            return None, (NO_RESOURCE_PROVIDER if e.status == 404
                          else counters.server_http_error(e.status))
        return inventory_capacity(body.get('inventories') or {}), None


class NovaApiHostSource:
    """The hosts of the cloud ``credentials`` point at, through its compute
    API (and Placement where it must): one state, at ``cut`` (a datetime;
    when no run sets it, the moment of reading)."""

    def __init__(self, credentials, window, page_size, concurrency,
                 rate=None, cut=None):
        self.credentials = credentials
        self.window = window      # the hosts job refuses one
        self.page_size = page_size
        self.concurrency = concurrency
        self.rate = rate
        self.cut = cut
        self.endpoint = self.microversion = self.placement = None

    def plan(self):
        """Authenticate, choose the microversion, find Placement if it is
        needed, and check the credentials may list hypervisors: each
        failure is one line, before the run starts."""
        client = NovaClient(self.credentials.settings(), concurrency=1,
                            purpose=PURPOSE)
        try:
            self.endpoint, document = version_document(client)
            self.microversion, from_placement = versions.negotiate_hosts(
                document, self.endpoint)
            client.use_microversion(self.microversion)
            if from_placement:
                self.placement = client.endpoint(PLACEMENT)
            try:
                client.get('os-hypervisors', {'limit': 1})
            except ApiError as e:
                raise UserError(f'the compute API at {self.endpoint} cannot '
                                f'list hypervisors: {e}') from None
        finally:
            client.close()
        return [HOSTS], 0

    def reader(self, splits):
        cut = to_nova_text(self.cut or dt.datetime.now(UTC))
        reading = HostReading(self.credentials, self.microversion,
                              bool(self.placement), self.page_size,
                              self.concurrency, self.rate, cut)
        return ReadSplits(splits, ReadHosts(reading))

    def raw_identities(self, among=None):
        """Every host and hypervisor name listed (with ``among``, only those
        among the candidates)."""
        if self.microversion is None:
            self.plan()
        reading = HostReading(self.credentials, self.microversion, False,
                              self.page_size, 1, self.rate, None)
        client = reading.client()
        try:
            values = {s.get('host') for s in list_services(client)}
            for page in list_hypervisors(client, self.page_size, versions.
                                         at_least(self.microversion,
                                                  versions.PAGED_HYPERVISORS)):
                for record in page:
                    values.add((record.get('service') or {}).get('host'))
                    values.add(record.get('hypervisor_hostname'))
        finally:
            client.close()
        values.discard(None)
        return values if among is None else values & set(among)

    def describe(self):
        return {'kind': 'nova-api', 'endpoint': self.endpoint,
                'microversion': self.microversion,
                'capacities': ('placement' if self.placement
                               else 'os-hypervisors'),
                'placement': self.placement,
                'credentials': self.credentials.describe()}

    def about(self):
        capacities = (f', capacities from Placement {self.placement}'
                      if self.placement else '')
        return about_line(
            f'Nova API {self.endpoint} (microversion {self.microversion}, '
            f'credentials from {self.credentials.describe()}){capacities}',
            HOSTS, False, self.window)
