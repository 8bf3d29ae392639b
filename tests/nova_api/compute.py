"""Nova's compute API v2.1, the part a trace reader uses: version
discovery, microversions, ``GET /servers/detail``, ``GET /flavors/{id}``
and ``os-instance-actions``. Each behaviour follows Nova's code
(nova/api/openstack/): the file and function are named where it matters."""
import collections
import datetime as dt
import hashlib
import re
import urllib.parse

from .messages import nova_fault

# common._STATE_MAP: (vm_state, task_state) -> status; None: the default.
_STATES = {
    'active': {None: 'ACTIVE', 'rebooting': 'REBOOT',
               'reboot_pending': 'REBOOT', 'reboot_started': 'REBOOT',
               'rebooting_hard': 'HARD_REBOOT',
               'reboot_pending_hard': 'HARD_REBOOT',
               'reboot_started_hard': 'HARD_REBOOT',
               'updating_password': 'PASSWORD', 'rebuilding': 'REBUILD',
               'rebuild_block_device_mapping': 'REBUILD',
               'rebuild_spawning': 'REBUILD', 'migrating': 'MIGRATING',
               'resize_prep': 'RESIZE', 'resize_migrating': 'RESIZE',
               'resize_migrated': 'RESIZE', 'resize_finish': 'RESIZE'},
    'building': {None: 'BUILD'},
    'stopped': {None: 'SHUTOFF', 'resize_prep': 'RESIZE',
                'resize_migrating': 'RESIZE', 'resize_migrated': 'RESIZE',
                'resize_finish': 'RESIZE', 'rebuilding': 'REBUILD',
                'rebuild_block_device_mapping': 'REBUILD',
                'rebuild_spawning': 'REBUILD'},
    'resized': {None: 'VERIFY_RESIZE', 'resize_reverting': 'REVERT_RESIZE'},
    'paused': {None: 'PAUSED', 'migrating': 'MIGRATING'},
    'suspended': {None: 'SUSPENDED'},
    'rescued': {None: 'RESCUE'},
    'error': {None: 'ERROR', 'rebuilding': 'REBUILD',
              'rebuild_block_device_mapping': 'REBUILD',
              'rebuild_spawning': 'REBUILD'},
    'deleted': {None: 'DELETED'},
    'soft-delete': {None: 'SOFT_DELETED'},
    'shelved': {None: 'SHELVED'},
    'shelved_offloaded': {None: 'SHELVED_OFFLOADED'},
}
_PROGRESS_STATUSES = ('ACTIVE', 'BUILD', 'REBUILD', 'RESIZE', 'VERIFY_RESIZE',
                      'MIGRATING')
# servers._get_server_search_options: the filters non-admins may use; Nova
# silently drops the others (remove_invalid_options), ``deleted`` included.
_USER_FILTERS = ('reservation_id', 'name', 'status', 'image', 'flavor', 'ip',
                 'changes-since', 'all_tenants')
_ACTION_KEYS = ('action', 'instance_uuid', 'request_id', 'user_id',
                'project_id', 'start_time', 'message')
# oslo strutils.bool_from_string
_TRUE, _FALSE = ('1', 't', 'true', 'on', 'y', 'yes'), \
    ('0', 'f', 'false', 'off', 'n', 'no')


def api_time(value):
    """utils.isotime, for server created/updated (now when NULL, as Nova)."""
    return (value or dt.datetime.now(dt.timezone.utc)).strftime(
        '%Y-%m-%dT%H:%M:%SZ')


def db_time(value):
    """A DB datetime as oslo's jsonutils renders it: actions, events and
    OS-SRV-USG times."""
    return value.strftime('%Y-%m-%dT%H:%M:%S.%f') if value else None


def host_id(host, project_id):
    """utils.generate_hostid"""
    if not host:
        return ''
    return hashlib.sha224((str(project_id) + host).encode()).hexdigest()


def _status(instance):
    """views/servers.py _get_vm_status"""
    if instance.get('deleted'):
        return 'DELETED'
    by_task = _STATES.get(instance.get('vm_state'), {None: 'UNKNOWN'})
    return by_task.get(instance.get('task_state'), by_task[None])


def version_text(version):
    return '%d.%d' % version


def parse_version(text):
    match = re.fullmatch(r'([1-9]\d*)\.([1-9]\d*|0)', text.strip())
    if not match:
        raise nova_fault(400, f'API Version String {text} is of invalid '
                              'format. Must be of format MajorNum.MinorNum.')
    return int(match[1]), int(match[2])


def instance_not_found(server_id):
    return nova_fault(404, f'Instance {server_id} could not be found.')


def _bool(value, strict=False):
    text = value.strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    if strict:
        raise nova_fault(400, f"Unrecognized value '{value}', acceptable "
                              f"values are: {', '.join(_TRUE + _FALSE)}")
    return False


def _invalid(name, value, reason):
    return nova_fault(400, f'Invalid input for query parameters {name}. '
                           f'Value: {value}. {reason}')


def _time_filter(query, name):
    """changes-since / changes-before as naive UTC, or None if absent."""
    if name not in query:
        return None
    try:
        value = dt.datetime.fromisoformat(query[name])
    except ValueError:
        raise _invalid(name, query[name],
                       f"'{query[name]}' is not a 'date-time'") from None
    if value.tzinfo:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _changes_window(query):
    since = _time_filter(query, 'changes-since')
    before = _time_filter(query, 'changes-before')
    if since and before and before < since:
        raise nova_fault(400, 'The value of changes-since must be less than '
                              'or equal to changes-before.')
    return since, before


def _in_window(row, since, before):
    """db _get_query_nova_resource_by_changes_time, on updated_at."""
    updated = row.get('updated_at')
    if since is None and before is None:
        return True
    return updated is not None and (since is None or updated >= since) \
        and (before is None or updated <= before)


class Compute:
    """The compute service over ``data`` (a ``NovaData``), serving
    microversions ``min_version``..``max_version`` ((major, minor) pairs)
    and at most ``max_limit`` items a page (``[api] max_limit``)."""

    def __init__(self, data, min_version, max_version, max_limit):
        self.data = data
        self.min_version, self.max_version = min_version, max_version
        self.max_limit = max_limit

    # -- discovery (unauthenticated) ------------------------------------------

    def _version(self, request):
        return {'id': 'v2.1', 'status': 'CURRENT',
                'version': version_text(self.max_version),
                'min_version': version_text(self.min_version),
                'updated': '2013-07-23T11:33:21Z',
                'links': [{'rel': 'self',
                           'href': f'{request.base_url}/compute/v2.1/'},
                          {'rel': 'describedby', 'type': 'text/html',
                           'href': 'http://docs.openstack.org/'}],
                'media-types': [{
                    'base': 'application/json',
                    'type': 'application/vnd.openstack.compute+json;'
                            'version=2.1'}]}

    def versions(self, request):
        return 200, {'versions': [self._version(request)]}, []

    def version(self, request):
        return 200, {'version': self._version(request)}, []

    # -- microversions (wsgi.Request.set_api_version_request) -----------------

    def requested_version(self, headers):
        """The version asked for in ``OpenStack-API-Version: compute X.Y``
        (or the legacy ``X-OpenStack-Nova-API-Version``): the minimum when
        absent, the maximum for ``latest``, 406 outside the range."""
        text = headers.get('X-OpenStack-Nova-API-Version')
        for value in headers.get_all('OpenStack-API-Version') or ():
            for item in value.split(','):
                service, _, version = item.strip().partition(' ')
                if service.lower() == 'compute':
                    text = version
        if text is None:
            return self.min_version
        if text.strip() == 'latest':
            return self.max_version
        version = parse_version(text)
        if not self.min_version <= version <= self.max_version:
            raise nova_fault(
                406, f'Version {version_text(version)} is not supported by '
                     f'the API. Minimum is {version_text(self.min_version)} '
                     f'and maximum is {version_text(self.max_version)}.')
        return version

    # -- servers (servers.ServersController._get_servers, views/servers.py) ---

    def list_servers(self, request):
        admin = request.token.is_admin
        query = request.query
        filters = query if admin else {
            name: value for name, value in query.items()
            if name in _USER_FILTERS
            or (name == 'changes-before' and request.version >= (2, 66))}
        since, before = _changes_window(filters)
        if 'deleted' in filters:
            deleted = _bool(filters['deleted'])
        else:   # changes-since/-before list deleted servers too
            deleted = False if since is None and before is None else None
        all_tenants = 'all_tenants' in filters and (
            filters['all_tenants'] == '' or _bool(filters['all_tenants'],
                                                  strict=True))
        if all_tenants and not admin:
            raise nova_fault(403, "Policy doesn't allow os_compute_api:"
                                  "servers:detail:get_all_tenants to be "
                                  "performed.")
        limit, marker_id = self._paging(query)
        marker = None
        if marker_id is not None:
            # The marker may be any instance, deleted too, that the caller
            # could see (db._build_instance_get, project_only).
            marker = self.data.instances.get(marker_id)
            if marker is None or not (
                    admin or marker['project_id'] == request.token.project_id):
                raise nova_fault(400, f'marker [{marker_id}] not found')

        def listed(instance):
            if not all_tenants and \
                    instance.get('project_id') != request.token.project_id:
                return False
            # db.instance_get_all_by_filters_sort: deleted is deleted = id
            # or the soft-deleted state; hidden instances never show.
            soft_deleted = instance.get('vm_state') == 'soft-delete'
            if deleted is True and not (instance.get('deleted')
                                        or soft_deleted):
                return False
            if deleted is False and (instance.get('deleted') or soft_deleted):
                return False
            return not instance.get('hidden') and \
                _in_window(instance, since, before)

        page = []
        for instance in self.data.instances_after(marker):
            if len(page) == limit:
                break
            if listed(instance):
                page.append(instance)
        body = {'servers': [self._server(request, i) for i in page]}
        links = self._next_links(request, 'servers/detail', page, limit,
                                 'uuid')
        if links:
            body['servers_links'] = links
        return 200, body, []

    def _server(self, request, instance):
        version, admin = request.version, request.token.is_admin
        status = _status(instance)
        uuid = instance['uuid']
        server = {
            'id': uuid, 'name': instance.get('display_name'),
            'status': status,
            'tenant_id': instance.get('project_id') or '',
            'user_id': instance.get('user_id') or '',
            'metadata': {},
            'hostId': host_id(instance.get('host'),
                              instance.get('project_id')),
            'image': self._image(request, instance),
            'flavor': self._flavor(request, instance),
            'created': api_time(instance.get('created_at')),
            'updated': api_time(instance.get('updated_at')),
            'addresses': {},
            'accessIPv4': instance.get('access_ip_v4') or '',
            'accessIPv6': instance.get('access_ip_v6') or '',
            'links': self._links(request, 'servers', uuid),
            'OS-DCF:diskConfig':
                'AUTO' if instance.get('auto_disk_config') else 'MANUAL',
        }
        if status in _PROGRESS_STATUSES:
            server['progress'] = instance.get('progress') or 0
        server.update({
            'OS-EXT-AZ:availability_zone':
                instance.get('availability_zone') or '',
            'config_drive': instance.get('config_drive'),
            'key_name': instance.get('key_name'),
            'OS-SRV-USG:launched_at': db_time(instance.get('launched_at')),
            'OS-SRV-USG:terminated_at':
                db_time(instance.get('terminated_at')),
        })
        if admin:   # the extended server attributes policy: admin only
            server.update({
                'OS-EXT-SRV-ATTR:host': instance.get('host'),
                'OS-EXT-SRV-ATTR:instance_name':
                    'instance-%08x' % (instance.get('id') or 0),
                'OS-EXT-SRV-ATTR:hypervisor_hostname': instance.get('node')})
            if version >= (2, 3):
                server.update({
                    'OS-EXT-SRV-ATTR:reservation_id':
                        instance.get('reservation_id'),
                    'OS-EXT-SRV-ATTR:launch_index':
                        instance.get('launch_index'),
                    'OS-EXT-SRV-ATTR:hostname': instance.get('hostname'),
                    'OS-EXT-SRV-ATTR:kernel_id': instance.get('kernel_id'),
                    'OS-EXT-SRV-ATTR:ramdisk_id': instance.get('ramdisk_id'),
                    'OS-EXT-SRV-ATTR:root_device_name':
                        instance.get('root_device_name'),
                    'OS-EXT-SRV-ATTR:user_data': instance.get('user_data')})
        elif version >= (2, 90):
            server['OS-EXT-SRV-ATTR:hostname'] = instance.get('hostname')
        server.update({
            'OS-EXT-STS:task_state': instance.get('task_state'),
            'OS-EXT-STS:vm_state': instance.get('vm_state'),
            'OS-EXT-STS:power_state': instance.get('power_state'),
            'os-extended-volumes:volumes_attached': []})
        if version >= (2, 9):
            server['locked'] = instance.get('locked_by') is not None
        if version >= (2, 19):
            server['description'] = instance.get('display_description')
        if version >= (2, 26):
            server['tags'] = []
        if version >= (2, 63):
            server['trusted_image_certificates'] = None
        return server

    def _image(self, request, instance):
        image = instance.get('image_ref')
        if not image:
            return ''
        return {'id': image, 'links': [{
            'rel': 'bookmark',
            'href': f'{request.base_url}/compute/images/{image}'}]}

    def _flavor(self, request, instance):
        """The instance's own flavor copy: embedded from 2.47, before that
        its id and a link to the flavor catalog."""
        flavor = instance['flavor']
        if request.version >= (2, 47):
            return {'vcpus': flavor['vcpus'], 'ram': flavor['memory_mb'],
                    'disk': flavor['root_gb'],
                    'ephemeral': flavor['ephemeral_gb'],
                    'swap': flavor['swap'], 'original_name': flavor['name'],
                    'extra_specs': {}}
        return {'id': str(flavor['flavorid']), 'links': [{
            'rel': 'bookmark', 'href': f'{request.base_url}/compute/flavors/'
                                       f'{flavor["flavorid"]}'}]}

    # -- flavors (views/flavors.py) -------------------------------------------

    def show_flavor(self, request, flavor_id):
        flavor = self.data.flavors.get(flavor_id)
        if flavor is None:
            raise nova_fault(404, f'Flavor {flavor_id} could not be found.')
        swap = flavor.get('swap') or 0
        body = {
            'id': flavor['flavorid'], 'name': flavor['name'],
            'ram': flavor['memory_mb'], 'disk': flavor['root_gb'],
            'swap': swap if request.version >= (2, 75) else swap or '',
            'OS-FLV-EXT-DATA:ephemeral': flavor.get('ephemeral_gb') or 0,
            'OS-FLV-DISABLED:disabled': bool(flavor.get('disabled')),
            'vcpus': flavor['vcpus'],
            'os-flavor-access:is_public':
                bool(flavor.get('is_public', True)),
            'rxtx_factor': flavor.get('rxtx_factor', 1.0),
            'links': self._links(request, 'flavors', flavor['flavorid'])}
        if request.version >= (2, 55):
            body['description'] = flavor.get('description')
        if request.version >= (2, 61):
            body['extra_specs'] = {}
        return 200, {'flavor': body}, []

    # -- instance actions (instance_actions.py) -------------------------------

    def _instance(self, request, server_id):
        """common.get_instance: 404 for servers the caller cannot see; the
        deleted ones are visible from 2.21 (read_deleted='yes')."""
        instance = self.data.instances.get(server_id)
        if instance is None \
                or not (request.token.is_admin or instance.get('project_id')
                        == request.token.project_id) \
                or (instance.get('deleted') and request.version < (2, 21)):
            raise instance_not_found(server_id)
        return instance

    def _action(self, request, action):
        body = {key: action.get(key) for key in _ACTION_KEYS}
        body['start_time'] = db_time(action.get('start_time'))
        if request.version >= (2, 58):
            body['updated_at'] = db_time(action.get('updated_at'))
        return body

    def list_actions(self, request, server_id):
        """Newest first; from 2.58 paged by limit and marker (a request_id)
        and filtered by changes-since (and changes-before from 2.66)."""
        instance = self._instance(request, server_id)
        actions = self.data.actions_of.get(instance['uuid'], [])
        if request.version < (2, 58):
            return 200, {'instanceActions': [
                self._action(request, a) for a in actions]}, []
        allowed = {'limit', 'marker', 'changes-since'} | (
            {'changes-before'} if request.version >= (2, 66) else set())
        for name in request.query.keys() - allowed:
            raise _invalid(name, request.query[name],
                           f"Additional properties are not allowed "
                           f"('{name}' was unexpected)")
        since, before = _changes_window(request.query)
        limit, marker_id = self._paging(request.query)
        start = 0
        if marker_id is not None:
            marker = next((a for a in actions
                           if a.get('request_id') == marker_id), None)
            if marker is None:
                raise nova_fault(400, f'Marker {marker_id} could not be '
                                      'found.')
            start = actions.index(marker) + 1
        page = [a for a in actions[start:]
                if _in_window(a, since, before)][:limit]
        body = {'instanceActions': [self._action(request, a) for a in page]}
        links = self._next_links(
            request, f'servers/{server_id}/os-instance-actions', page, limit,
            'request_id')
        if links:
            body['links'] = links
        return 200, body, []

    def show_action(self, request, server_id, request_id):
        """The action and its events: every event field for admins (the
        events policy), from 2.51 without the traceback for the others;
        host for admins and hostId for all from 2.62; details from 2.84."""
        instance = self._instance(request, server_id)
        actions = self.data.actions_of.get(instance['uuid'], [])
        action = next((a for a in actions
                       if a.get('request_id') == request_id), None)
        if action is None:
            raise nova_fault(404, f'Action {request_id} not found')
        body = self._action(request, action)
        admin, version = request.token.is_admin, request.version
        if admin or version >= (2, 51):
            events = []
            for event in self.data.events_of.get(
                    (action['db'], action.get('id')), []):
                shown = {'event': event.get('event'),
                         'start_time': db_time(event.get('start_time')),
                         'finish_time': db_time(event.get('finish_time')),
                         'result': event.get('result')}
                if admin:
                    shown['traceback'] = event.get('traceback')
                if admin and version >= (2, 62):
                    shown['host'] = event.get('host')
                if version >= (2, 62):
                    shown['hostId'] = host_id(
                        event.get('host'), action.get('project_id')
                        or instance.get('project_id'))
                if version >= (2, 84):
                    shown['details'] = event.get('details')
                events.append(shown)
            body['events'] = events
        return 200, {'instanceAction': body}, []

    # -- paging (common.get_limit_and_marker, _get_collection_links) -------

    def _paging(self, query):
        limit = self.max_limit
        if 'limit' in query:
            if not re.fullmatch(r'[0-9]+', query['limit']):
                raise _invalid('limit', query['limit'],
                               f"'{query['limit']}' does not match "
                               "'^[0-9]*$'")
            limit = min(limit, int(query['limit']))
        return limit, query.get('marker')

    def _next_links(self, request, collection, page, limit, id_key):
        """A next link whenever the page is full, even the last one."""
        if not limit or len(page) != limit:
            return []
        params = collections.OrderedDict(sorted(request.query.items()))
        params['marker'] = page[-1][id_key]
        return [{'rel': 'next',
                 'href': f'{request.base_url}/compute/v2.1/{collection}?'
                         f'{urllib.parse.urlencode(params)}'}]

    def _links(self, request, collection, item_id):
        return [{'rel': 'self', 'href': f'{request.base_url}/compute/v2.1/'
                                        f'{collection}/{item_id}'},
                {'rel': 'bookmark', 'href': f'{request.base_url}/compute/'
                                            f'{collection}/{item_id}'}]
