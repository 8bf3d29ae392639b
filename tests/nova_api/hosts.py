"""Nova's host listings and Placement's inventories over ``compute_nodes``
and ``services`` rows: ``GET /os-hypervisors`` and
``/os-hypervisors/detail`` (nova/api/openstack/compute/hypervisors.py and
its schemas), ``GET /os-services`` (services.py) and Placement's
``GET /resource_providers/{uuid}/inventories``. Only live rows show, as
Nova reads them (``read_deleted='no'``)."""
import datetime as dt
import json
import uuid

from .compute import db_time, parse_version
from .data import with_times
from .messages import ApiError, nova_fault

# services._get_services: API services are not RPC services, never listed.
_API_SERVICES = ('nova-osapi_compute', 'nova-metadata')
SERVICE_DOWN_TIME = dt.timedelta(seconds=60)    # [DEFAULT] service_down_time
_HYPERVISOR_QUERY_V253 = {'limit', 'marker', 'hypervisor_hostname_pattern',
                          'with_servers'}
_DETAIL_FIELDS = ('vcpus', 'memory_mb', 'local_gb', 'vcpus_used',
                  'memory_mb_used', 'local_gb_used', 'free_ram_mb',
                  'free_disk_gb', 'current_workload', 'running_vms',
                  'disk_available_least')
# Placement's inventory of a compute node: (resource class, compute_nodes
# column, its allocation ratio column, Nova's default ratio, reserved).
_INVENTORY = (('VCPU', 'vcpus', 'cpu_allocation_ratio', 16.0, 0),
              ('MEMORY_MB', 'memory_mb', 'ram_allocation_ratio', 1.5, 512),
              ('DISK_GB', 'local_gb', 'disk_allocation_ratio', 1.0, 0))


def _uuid_of(row, table):
    """A row's uuid; Nova gives a row without one a uuid when it loads it
    (online data migration), so a NULL one is made here, stable."""
    return row.get('uuid') or str(uuid.uuid5(
        uuid.NAMESPACE_URL, f'nova/{row["db"]}/{table}/{row["id"]}'))


def _live(rows, table):
    """Live rows with their times as datetimes and a uuid, in the order
    Nova's cell loop reads them: cell after cell (as first seen), by id."""
    cells = list(dict.fromkeys(row['db'] for row in rows))
    live = [dict(with_times(row), uuid=_uuid_of(row, table))
            for row in rows if not row.get('deleted')]
    return sorted(live, key=lambda r: (cells.index(r['db']), r['id']))


def inventories_of(node):
    """The inventories the resource tracker reports for a compute node
    (none for a class whose total is 0)."""
    inventories = {}
    for resource_class, column, ratio, default, reserved in _INVENTORY:
        total = node.get(column) or 0
        if total:
            inventories[resource_class] = {
                'total': total, 'reserved': min(reserved, total),
                'min_unit': 1, 'max_unit': total, 'step_size': 1,
                'allocation_ratio': node.get(ratio) or default}
    return inventories


class HostData:
    """Compute nodes and services of all cells, merged as Nova's API merges
    them; ``providers`` (resource provider uuid -> inventories) is what
    Placement holds, which tests may change while the server runs (delete
    an entry: a compute node without a resource provider)."""

    def __init__(self, compute_nodes=(), services=()):
        self.nodes = _live(compute_nodes, 'compute_nodes')
        self.services = [s for s in _live(services, 'services')
                         if s.get('binary') not in _API_SERVICES]
        self.providers = {node['uuid']: inventories_of(node)
                          for node in self.nodes}

    def compute_service(self, host):
        """HostAPI.service_get_by_compute_host: the live nova-compute
        service of ``host``, or None."""
        return next((s for s in self.services if s['host'] == host
                     and s.get('binary') == 'nova-compute'), None)


def _is_up(service, now):
    """servicegroup's DB driver: up while the last heartbeat is recent."""
    heartbeat = service.get('last_seen_up') or service.get('created_at')
    return bool(heartbeat and not service.get('forced_down')
                and abs(now - heartbeat) <= SERVICE_DOWN_TIME)


def _admin_only(request, policy):
    """The rule's default: admins only."""
    if not request.token.is_admin:
        raise nova_fault(403, f"Policy doesn't allow os_compute_api:"
                              f"{policy} to be performed.")


def _now():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Hosts:
    """os-hypervisors and os-services of ``data`` (a ``HostData``); paging
    as ``compute`` (a ``Compute``) pages servers."""

    def __init__(self, data, compute):
        self.data = data
        self.compute = compute

    # -- os-hypervisors -------------------------------------------------------

    def list_hypervisors(self, request):
        _admin_only(request, 'os-hypervisors:list')
        return self._hypervisors(request, detail=False)

    def list_hypervisors_detail(self, request):
        _admin_only(request, 'os-hypervisors:list-detail')
        return self._hypervisors(request, detail=True)

    def _hypervisors(self, request, detail):
        """_get_hypervisors: paged from 2.33 (the page is cut before nodes
        whose host has no service are dropped from it), uuid ids from
        2.53, where unknown query parameters are refused."""
        version, query = request.version, request.query
        if version >= (2, 53):
            for name in query.keys() - _HYPERVISOR_QUERY_V253:
                raise nova_fault(400, f'Invalid input for query parameters '
                                      f'{name}. Value: {query[name]}. '
                                      f'Additional properties are not '
                                      f'allowed (\'{name}\' was unexpected)')
        nodes, limit = self.data.nodes, None
        if version >= (2, 33):
            limit, marker = self.compute._paging(query)
            if marker is not None:
                nodes = nodes[self._after(marker, version >= (2, 53)):]
            nodes = nodes[:limit]
        now = _now()
        hypervisors = []
        for node in nodes:
            service = self.data.compute_service(node.get('host'))
            if service is not None:
                hypervisors.append(self._hypervisor(request, node, service,
                                                    detail, now))
        body = {'hypervisors': hypervisors}
        if limit is not None:
            links = self.compute._next_links(
                request, 'os-hypervisors' + ('/detail' if detail else ''),
                hypervisors, limit, 'id')
            if links:
                body['hypervisors_links'] = links
        return 200, body, []

    def _after(self, marker, by_uuid):
        """HostAPI.compute_node_get_all: the position after the marker, a
        uuid from 2.53, else an id (the first cell holding it)."""
        for i, node in enumerate(self.data.nodes):
            if (node['uuid'] if by_uuid else str(node['id'])) == marker:
                return i + 1
        raise nova_fault(400, f'marker [{marker}] not found')

    def _hypervisor(self, request, node, service, detail, now):
        """HypervisorsController._view_hypervisor"""
        version = request.version
        uuid_ids = version >= (2, 53)
        hypervisor = {
            'id': node['uuid'] if uuid_ids else node['id'],
            'hypervisor_hostname': node.get('hypervisor_hostname'),
            'state': 'up' if _is_up(service, now) else 'down',
            'status': 'disabled' if service.get('disabled') else 'enabled'}
        if not detail:
            return hypervisor
        hypervisor.update({
            'hypervisor_type': node.get('hypervisor_type'),
            'hypervisor_version': node.get('hypervisor_version'),
            'host_ip': node.get('host_ip'),
            'service': {'id': service['uuid'] if uuid_ids else service['id'],
                        'host': node.get('host'),
                        'disabled_reason': service.get('disabled_reason')}})
        if version <= (2, 87):
            hypervisor.update({f: node.get(f) for f in _DETAIL_FIELDS})
            cpu_info = node.get('cpu_info')
            hypervisor['cpu_info'] = cpu_info if version <= (2, 27) else \
                json.loads(cpu_info) if cpu_info else {}
        else:   # the fake driver cannot tell its uptime
            hypervisor['uptime'] = None
        return hypervisor

    # -- os-services ----------------------------------------------------------

    def list_services(self, request):
        """ServiceController.index: filtered by host and binary; ids are
        uuids from 2.53; forced_down from 2.11; unknown query parameters
        refused from 2.75."""
        _admin_only(request, 'os-services:list')
        version, query = request.version, request.query
        if version >= (2, 75):
            for name in query.keys() - {'host', 'binary'}:
                raise nova_fault(400, f'Invalid input for query parameters '
                                      f'{name}. Value: {query[name]}. '
                                      f'Additional properties are not '
                                      f'allowed (\'{name}\' was unexpected)')
        now = _now()
        services = []
        for service in self.data.services:
            if any(query.get(name) and service.get(name) != query[name]
                   for name in ('host', 'binary')):
                continue
            shown = {
                'binary': service.get('binary'), 'host': service.get('host'),
                'id': service['uuid'] if version >= (2, 53) else service['id'],
                'zone': 'nova' if service.get('binary') == 'nova-compute'
                else 'internal',
                'status': 'disabled' if service.get('disabled')
                else 'enabled',
                'state': 'up' if _is_up(service, now) else 'down',
                'updated_at': db_time(service.get('updated_at')),
                'disabled_reason': service.get('disabled_reason')}
            if version >= (2, 11):
                shown['forced_down'] = bool(service.get('forced_down'))
            services.append(shown)
        return 200, {'services': services}, []


class Placement:
    """The Placement API's root and the inventories of ``data.providers``
    (admin only, as its default policy)."""

    MAX_VERSION = (1, 39)

    def __init__(self, data):
        self.data = data

    def root(self, request):
        return 200, {'versions': [{
            'id': 'v1.0', 'status': 'CURRENT',
            'min_version': '1.0', 'max_version': '%d.%d' % self.MAX_VERSION,
            'links': [{'rel': 'self',
                       'href': f'{request.base_url}/placement/'}]}]}, []

    def requested_version(self, headers):
        """``OpenStack-API-Version: placement X.Y``; 1.0 when absent."""
        for value in headers.get_all('OpenStack-API-Version') or ():
            service, _, version = value.strip().partition(' ')
            if service.lower() == 'placement':
                return (self.MAX_VERSION if version.strip() == 'latest'
                        else parse_version(version))
        return 1, 0

    def list_inventories(self, request, provider_uuid):
        if not request.token.is_admin:
            raise placement_error(403, 'Forbidden', 'Access was denied to '
                                  'this resource.\n\n Policy does not allow '
                                  'placement:resource_providers:inventories:'
                                  'list to be performed.  ')
        inventories = self.data.providers.get(provider_uuid)
        if inventories is None:
            raise placement_error(404, 'Not Found', f'The resource could not '
                                  f'be found.\n\n No resource provider with '
                                  f'uuid {provider_uuid} found  ')
        return 200, {'inventories': inventories,
                     'resource_provider_generation': 1}, []


def placement_error(status, title, detail):
    """Placement's error body (placement/util.py json_error_formatter)."""
    return ApiError(status, {'errors': [{
        'status': status, 'title': title, 'detail': detail,
        'request_id': f'req-{uuid.uuid4()}',
        'code': 'placement.undefined_code'}]})
