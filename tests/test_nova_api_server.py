"""The loopback Nova compute + Keystone v3 server (tests/nova_api) against
the API references, with plain HTTP calls. Expected values come from SQL on
the same cell databases, or are written out."""
import os
import time

import pymysql.cursors
import pytest
import requests

from nova_api import Faults, NovaApiServer
from starcompactor import synth

AUTH_REQUIRED = {'error': {
    'code': 401, 'title': 'Unauthorized',
    'message': 'The request you have made requires authentication.'}}


# -- fixtures and helpers -----------------------------------------------------

@pytest.fixture(scope='module')
def cells(mariadb):
    names = [f'napi_{os.getpid()}_cell0', f'napi_{os.getpid()}_cell1']
    with mariadb.admin() as admin:
        synth.load_mysql(admin, 400, seed=21, cells=names, days=90)
    yield names
    with mariadb.admin() as admin, admin.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP DATABASE IF EXISTS `{name}`')


@pytest.fixture(scope='module')
def nova(mariadb, cells):
    with mariadb.admin() as admin:
        server = NovaApiServer.from_mysql(admin, cells)
    with server:
        yield server


@pytest.fixture
def api(nova):
    """The module's server, its fault knobs reset after each test."""
    yield nova
    nova.faults, nova.latency_s = Faults(), 0.0
    nova.identity.token_ttl_s = 3600


@pytest.fixture
def sql(mariadb, cells):
    """Rows of a query run in every cell (``{db}`` is the cell)."""
    def run(query, *args):
        rows = []
        with mariadb.admin(cursorclass=pymysql.cursors.DictCursor) as admin, \
                admin.cursor() as cursor:
            for cell in cells:
                cursor.execute(query.format(db=cell), args)
                rows.extend(cursor.fetchall())
        return rows
    return run


def password_auth(env):
    return {'auth': {
        'identity': {'methods': ['password'], 'password': {'user': {
            'name': env['OS_USERNAME'], 'password': env['OS_PASSWORD'],
            'domain': {'name': env['OS_USER_DOMAIN_NAME']}}}},
        'scope': {'project': {
            'name': env['OS_PROJECT_NAME'],
            'domain': {'name': env['OS_PROJECT_DOMAIN_NAME']}}}}}


def login(server, env=None):
    """(token id, token body) of a password login (admin by default)."""
    response = requests.post(server.auth_url + '/auth/tokens',
                             json=password_auth(env or server.admin_env()))
    assert response.status_code == 201, response.text
    return response.headers['X-Subject-Token'], response.json()['token']


def compute(server, token, path, version=None, **params):
    headers = {'X-Auth-Token': token}
    if version:
        headers['OpenStack-API-Version'] = f'compute {version}'
    return requests.get(f'http://127.0.0.1:{server.port}/compute/v2.1{path}',
                        headers=headers, params=params)


def all_pages(server, token, path, version, key, links_key, **params):
    """Every item of a paged listing, following the next links."""
    response = compute(server, token, path, version, **params)
    items = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body[key])
        links = body.get(links_key, [])
        if not links:
            return items
        assert [link['rel'] for link in links] == ['next']
        response = requests.get(
            links[0]['href'], headers={
                'X-Auth-Token': token,
                'OpenStack-API-Version': f'compute {version}'})


# -- Keystone -----------------------------------------------------------------

def test_password_token_is_scoped_and_carries_the_compute_catalog(api):
    token, body = login(api)
    assert token
    assert body['methods'] == ['password']
    assert body['project']['name'] == 'admin'
    assert {role['name'] for role in body['roles']} == {
        'admin', 'member', 'reader'}
    assert body['expires_at'] > body['issued_at']
    compute_service, = [s for s in body['catalog'] if s['type'] == 'compute']
    assert sorted((e['interface'], e['region_id'], e['url'])
                  for e in compute_service['endpoints']) == [
        (interface, 'RegionOne',
         f'http://127.0.0.1:{api.port}/compute/v2.1')
        for interface in ('admin', 'internal', 'public')]


def test_application_credential_token(api):
    env = api.app_credential_env()
    assert env['OS_AUTH_TYPE'] == 'v3applicationcredential'
    response = requests.post(env['OS_AUTH_URL'] + '/auth/tokens', json={
        'auth': {'identity': {
            'methods': ['application_credential'],
            'application_credential': {
                'id': env['OS_APPLICATION_CREDENTIAL_ID'],
                'secret': env['OS_APPLICATION_CREDENTIAL_SECRET']}}}})
    assert response.status_code == 201
    body = response.json()['token']
    assert body['methods'] == ['application_credential']
    assert body['application_credential']['id'] == \
        env['OS_APPLICATION_CREDENTIAL_ID']
    token = response.headers['X-Subject-Token']
    assert compute(api, token, '/servers/detail').status_code == 200


def test_wrong_password_is_401_with_keystone_error(api):
    env = dict(api.admin_env(), OS_PASSWORD='not-the-password')
    response = requests.post(api.auth_url + '/auth/tokens',
                             json=password_auth(env))
    assert response.status_code == 401
    assert response.json() == AUTH_REQUIRED
    assert 'X-Subject-Token' not in response.headers


def test_compute_refuses_missing_and_unknown_tokens(api):
    url = f'http://127.0.0.1:{api.port}/compute/v2.1/servers/detail'
    for headers in ({}, {'X-Auth-Token': 'gAAAAA-never-issued'}):
        response = requests.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json() == AUTH_REQUIRED
        assert response.headers['WWW-Authenticate'] == \
            f"Keystone uri='http://127.0.0.1:{api.port}/identity'"


def test_admin_env_is_an_openrc(api):
    assert api.admin_env() == {
        'OS_AUTH_URL': f'http://127.0.0.1:{api.port}/identity/v3',
        'OS_USERNAME': 'admin',
        'OS_PASSWORD': api.admin_env()['OS_PASSWORD'],
        'OS_PROJECT_NAME': 'admin', 'OS_USER_DOMAIN_NAME': 'Default',
        'OS_PROJECT_DOMAIN_NAME': 'Default', 'OS_REGION_NAME': 'RegionOne',
        'OS_INTERFACE': 'public', 'OS_IDENTITY_API_VERSION': '3'}


# -- discovery and microversions ----------------------------------------------

def test_version_documents_need_no_token(api):
    base = f'http://127.0.0.1:{api.port}'
    versions = requests.get(base + '/compute/')
    assert versions.status_code == 200
    v21, = versions.json()['versions']
    assert (v21['id'], v21['status'], v21['version'], v21['min_version']) \
        == ('v2.1', 'CURRENT', '2.96', '2.1')
    version = requests.get(base + '/compute/v2.1/').json()['version']
    assert (version['version'], version['min_version']) == ('2.96', '2.1')
    identity = requests.get(base + '/identity/v3').json()['version']
    assert (identity['id'], identity['status']) == ('v3.14', 'stable')


def test_microversion_is_echoed_with_vary(api):
    token, _ = login(api)
    response = compute(api, token, '/servers/detail', '2.47')
    assert response.headers['OpenStack-API-Version'] == 'compute 2.47'
    assert response.headers['X-OpenStack-Nova-API-Version'] == '2.47'
    assert response.headers['Vary'] == \
        'OpenStack-API-Version, X-OpenStack-Nova-API-Version'
    assert compute(api, token, '/servers/detail').headers[
        'OpenStack-API-Version'] == 'compute 2.1'
    assert compute(api, token, '/servers/detail', 'latest').headers[
        'OpenStack-API-Version'] == 'compute 2.96'
    legacy = requests.get(
        f'http://127.0.0.1:{api.port}/compute/v2.1/servers/detail',
        headers={'X-Auth-Token': token,
                 'X-OpenStack-Nova-API-Version': '2.60'})
    assert legacy.headers['OpenStack-API-Version'] == 'compute 2.60'


@pytest.mark.parametrize('version', ['2.200', '2.0'])
def test_microversion_outside_the_range_is_406(api, version):
    token, _ = login(api)
    response = compute(api, token, '/servers/detail', version)
    assert response.status_code == 406
    assert response.json() == {'computeFault': {
        'code': 406,
        'message': f'Version {version} is not supported by the API. '
                   'Minimum is 2.1 and maximum is 2.96.'}}


# -- servers ------------------------------------------------------------------

def test_paging_lists_every_live_server_once(api, sql):
    token, _ = login(api)
    servers = all_pages(api, token, '/servers/detail', '2.47', 'servers',
                        'servers_links', all_tenants='1', limit='7')
    live = {row['uuid'] for row in sql(
        'SELECT uuid FROM `{db}`.instances WHERE deleted = 0')}
    ids = [server['id'] for server in servers]
    assert len(ids) == len(set(ids)) == len(live) > 14
    assert set(ids) == live
    created = [server['created'] for server in servers]
    assert created == sorted(created, reverse=True)


def test_limit_is_capped_and_a_full_page_links_to_the_next(api, sql):
    token, _ = login(api)
    page = compute(api, token, '/servers/detail', '2.1', all_tenants='1',
                   limit='3').json()
    assert len(page['servers']) == 3
    link, = page['servers_links']
    assert link['rel'] == 'next'
    assert link['href'] == (
        f'http://127.0.0.1:{api.port}/compute/v2.1/servers/detail?'
        f'all_tenants=1&limit=3&marker={page["servers"][-1]["id"]}')


def test_server_fields_as_nova_renders_them(api, sql):
    api_format = "'%%Y-%%m-%%dT%%H:%%i:%%sZ'"
    row = min(sql(f"SELECT uuid, user_id, project_id, display_name, "
                  f"hostname, host, DATE_FORMAT(created_at, {api_format}) c, "
                  f"DATE_FORMAT(updated_at, {api_format}) u "
                  "FROM `{db}`.instances "
                  "WHERE deleted = 0 AND host IS NOT NULL"),
              key=lambda r: r['uuid'])
    token, _ = login(api)
    servers = all_pages(api, token, '/servers/detail', '2.3', 'servers',
                        'servers_links', all_tenants='1')
    server, = [s for s in servers if s['id'] == row['uuid']]
    assert (server['user_id'], server['tenant_id'], server['name'],
            server['created'], server['updated'],
            server['OS-EXT-SRV-ATTR:hostname'],
            server['OS-EXT-SRV-ATTR:host']) == (
        row['user_id'], row['project_id'], row['display_name'], row['c'],
        row['u'], row['hostname'], row['host'])
    before_2_3 = compute(api, token, '/servers/detail', '2.1',
                         all_tenants='1', limit='1').json()['servers'][0]
    assert 'OS-EXT-SRV-ATTR:host' in before_2_3
    assert 'OS-EXT-SRV-ATTR:hostname' not in before_2_3


def test_deleted_listing_shows_the_soft_deleted_servers(api, sql):
    token, _ = login(api)
    servers = all_pages(api, token, '/servers/detail', '2.47', 'servers',
                        'servers_links', all_tenants='1', deleted='True',
                        limit='50')
    deleted = {row['uuid'] for row in sql(
        'SELECT uuid FROM `{db}`.instances WHERE deleted != 0')}
    assert len(servers) == len(deleted) > 0
    assert {s['id'] for s in servers} == deleted
    assert {s['status'] for s in servers} == {'DELETED'}


def test_archived_servers_are_invisible(api, sql):
    archived = [row['uuid'] for row in sql(
        'SELECT uuid FROM `{db}`.shadow_instances')]
    assert archived
    token, _ = login(api)
    response = compute(api, token, f'/servers/{archived[0]}/'
                                   'os-instance-actions', '2.21')
    assert response.status_code == 404
    listed = all_pages(api, token, '/servers/detail', '2.1', 'servers',
                       'servers_links', all_tenants='1',
                       **{'changes-since': '2000-01-01T00:00:00Z'})
    assert not {s['id'] for s in listed} & set(archived)


def test_changes_since_lists_servers_updated_since_deleted_too(api, sql):
    since = sorted(row['updated_at'] for row in sql(
        'SELECT updated_at FROM `{db}`.instances'))[150]
    expected = {row['uuid'] for row in sql(
        'SELECT uuid FROM `{db}`.instances WHERE updated_at >= %s', since)}
    token, _ = login(api)
    servers = all_pages(api, token, '/servers/detail', '2.1', 'servers',
                        'servers_links', all_tenants='1',
                        **{'changes-since': since.isoformat() + 'Z'})
    assert {s['id'] for s in servers} == expected
    assert {s['status'] for s in servers} > {'DELETED'}


def test_unknown_marker_is_400(api):
    token, _ = login(api)
    marker = '00000000-0000-4000-8000-00000000dead'
    response = compute(api, token, '/servers/detail', '2.1',
                       all_tenants='1', marker=marker)
    assert response.status_code == 400
    assert response.json() == {'badRequest': {
        'code': 400, 'message': f'marker [{marker}] not found'}}


def test_member_sees_only_its_project_and_no_admin_listing(api, sql):
    token, body = login(api, api.member_env())
    project = body['project']['id']
    assert {r['name'] for r in body['roles']} == {'member', 'reader'}
    mine = {row['uuid'] for row in sql(
        'SELECT uuid FROM `{db}`.instances '
        'WHERE deleted = 0 AND project_id = %s', project)}
    servers = all_pages(api, token, '/servers/detail', '2.47', 'servers',
                        'servers_links')
    assert {s['id'] for s in servers} == mine and mine
    assert not any('OS-EXT-SRV-ATTR:host' in s for s in servers)

    refused = compute(api, token, '/servers/detail', '2.47', all_tenants='1')
    assert refused.status_code == 403
    assert refused.json() == {'forbidden': {
        'code': 403, 'message': "Policy doesn't allow os_compute_api:"
                                "servers:detail:get_all_tenants to be "
                                "performed."}}
    # Nova drops filters a non-admin may not use: deleted=True lists the
    # live servers (servers.remove_invalid_options).
    ignored = all_pages(api, token, '/servers/detail', '2.47', 'servers',
                        'servers_links', deleted='True')
    assert {s['id'] for s in ignored} == mine


def test_flavor_embedded_from_2_47_and_by_id_before(api, sql):
    row = min(sql('SELECT uuid, vcpus, memory_mb, root_gb, ephemeral_gb, '
                  'instance_type_id FROM `{db}`.instances WHERE deleted = 0'),
              key=lambda r: r['uuid'])
    token, _ = login(api)

    def flavor_at(version):
        servers = all_pages(api, token, '/servers/detail', version,
                            'servers', 'servers_links', all_tenants='1')
        return next(s['flavor'] for s in servers if s['id'] == row['uuid'])

    embedded = flavor_at('2.47')
    assert {k: v for k, v in embedded.items() if k != 'original_name'} == {
        'vcpus': row['vcpus'], 'ram': row['memory_mb'],
        'disk': row['root_gb'], 'ephemeral': row['ephemeral_gb'],
        'swap': 0, 'extra_specs': {}}
    assert embedded['original_name']

    by_id = flavor_at('2.46')
    assert set(by_id) == {'id', 'links'}
    assert by_id['id'] == str(row['instance_type_id'])
    flavor = compute(api, token, f'/flavors/{by_id["id"]}', '2.46').json()
    assert (flavor['flavor']['vcpus'], flavor['flavor']['ram'],
            flavor['flavor']['disk']) == (
        row['vcpus'], row['memory_mb'], row['root_gb'])

    gone = api.data.flavors.pop(by_id['id'])
    try:
        response = compute(api, token, f'/flavors/{by_id["id"]}', '2.46')
        assert response.status_code == 404
        assert response.json() == {'itemNotFound': {
            'code': 404,
            'message': f'Flavor {by_id["id"]} could not be found.'}}
        assert flavor_at('2.47') == embedded    # the instance's own copy
    finally:
        api.data.flavors[gone['flavorid']] = gone


# -- instance actions ---------------------------------------------------------

@pytest.fixture
def busiest(sql):
    """The instance of the live tables with most actions, and its request ids
    newest first (Nova's order: created_at desc, id desc)."""
    uuid = max(sql('SELECT a.instance_uuid, COUNT(*) n '
                   'FROM `{db}`.instance_actions a '
                   'JOIN `{db}`.instances i ON i.uuid = a.instance_uuid '
                   'GROUP BY a.instance_uuid'),
               key=lambda r: (r['n'], r['instance_uuid']))['instance_uuid']
    request_ids = [row['request_id'] for row in sql(
        "SELECT request_id FROM `{db}`.instance_actions "
        "WHERE instance_uuid = %s ORDER BY created_at DESC, id DESC", uuid)]
    assert len(request_ids) >= 4
    return uuid, request_ids


def test_actions_are_paged_from_2_58_newest_first(api, busiest):
    uuid, request_ids = busiest
    token, _ = login(api)
    actions = all_pages(api, token, f'/servers/{uuid}/os-instance-actions',
                        '2.58', 'instanceActions', 'links', limit='2')
    assert [a['request_id'] for a in actions] == request_ids
    assert all('updated_at' in a for a in actions)

    before = compute(api, token, f'/servers/{uuid}/os-instance-actions',
                     '2.57', limit='2').json()
    assert [a['request_id'] for a in before['instanceActions']] == \
        request_ids
    assert 'links' not in before
    assert 'updated_at' not in before['instanceActions'][0]


def test_action_marker_must_exist(api, busiest):
    uuid, _ = busiest
    token, _ = login(api)
    response = compute(api, token, f'/servers/{uuid}/os-instance-actions',
                       '2.58', marker='req-never-made')
    assert response.status_code == 400
    assert response.json()['badRequest']['code'] == 400


def test_action_shows_its_events(api, sql, busiest):
    uuid, request_ids = busiest
    expected = sql(
        "SELECT e.event, e.result, e.host, "
        "DATE_FORMAT(e.start_time, '%%Y-%%m-%%dT%%H:%%i:%%s.000000') s, "
        "DATE_FORMAT(e.finish_time, '%%Y-%%m-%%dT%%H:%%i:%%s.000000') f "
        "FROM `{db}`.instance_actions_events e "
        "JOIN `{db}`.instance_actions a ON a.id = e.action_id "
        "WHERE a.instance_uuid = %s AND a.request_id = %s "
        "ORDER BY e.created_at DESC, e.id DESC", uuid, request_ids[-1])
    assert expected
    token, _ = login(api)
    response = compute(api, token, f'/servers/{uuid}/os-instance-actions/'
                                   f'{request_ids[-1]}', '2.62')
    action = response.json()['instanceAction']
    assert action['request_id'] == request_ids[-1]
    assert [(e['event'], e['result'], e['host'], e['start_time'],
             e['finish_time']) for e in action['events']] == [
        (r['event'], r['result'], r['host'], r['s'], r['f'])
        for r in expected]
    assert all(len(e['hostId']) == 56 for e in action['events'] if e['host'])


def test_deleted_server_actions_are_visible_from_2_21(api, sql):
    uuid = sql('SELECT uuid FROM `{db}`.instances WHERE deleted != 0 '
               'ORDER BY uuid LIMIT 1')[0]['uuid']
    token, _ = login(api)
    path = f'/servers/{uuid}/os-instance-actions'
    assert compute(api, token, path, '2.20').status_code == 404
    assert compute(api, token, path, '2.21').status_code == 200


def test_unknown_server_is_404(api):
    token, _ = login(api)
    uuid = '00000000-0000-4000-8000-0000000000aa'
    response = compute(api, token, f'/servers/{uuid}/os-instance-actions',
                       '2.58')
    assert response.status_code == 404
    assert response.json() == {'itemNotFound': {
        'code': 404, 'message': f'Instance {uuid} could not be found.'}}


# -- faults -------------------------------------------------------------------

def test_revoked_tokens_are_refused(api):
    token, _ = login(api)
    assert compute(api, token, '/servers/detail').status_code == 200
    api.revoke_tokens()
    response = compute(api, token, '/servers/detail')
    assert response.status_code == 401
    assert response.json() == AUTH_REQUIRED


def test_expired_tokens_are_refused(api):
    api.identity.token_ttl_s = 0.5
    token, _ = login(api)
    assert compute(api, token, '/servers/detail').status_code == 200
    time.sleep(0.6)
    assert compute(api, token, '/servers/detail').status_code == 401


def test_rate_limit_burst(api):
    token, _ = login(api)
    api.faults.rate_limit_burst = (2, 7)
    for _ in range(2):
        response = compute(api, token, '/servers/detail')
        assert response.status_code == 429
        assert response.headers['Retry-After'] == '7'
        assert response.json() == {'overLimit': {
            'code': 429, 'message': 'This request was rate-limited.',
            'retryAfter': '7'}}
    assert compute(api, token, '/servers/detail').status_code == 200


def test_poisoned_marker_answers_500(api, sql):
    marker = sql('SELECT uuid FROM `{db}`.instances WHERE deleted = 0 '
                 'ORDER BY uuid LIMIT 1')[0]['uuid']
    token, _ = login(api)
    api.faults.poisoned_marker = marker
    response = compute(api, token, '/servers/detail', all_tenants='1',
                       marker=marker)
    assert response.status_code == 500
    assert response.json()['computeFault']['code'] == 500
    assert compute(api, token, '/servers/detail',
                   all_tenants='1').status_code == 200


def test_deleted_on_fetch_answers_404_on_actions(api, busiest):
    uuid, request_ids = busiest
    token, _ = login(api)
    api.faults.deleted_on_fetch = {uuid}
    for path in (f'/servers/{uuid}/os-instance-actions',
                 f'/servers/{uuid}/os-instance-actions/{request_ids[0]}'):
        assert compute(api, token, path, '2.58').status_code == 404
    listed = all_pages(api, token, '/servers/detail', '2.1', 'servers',
                       'servers_links', all_tenants='1')
    assert uuid in {s['id'] for s in listed}


def test_error_500_rate_is_seeded(api):
    token, _ = login(api)

    def statuses():
        return [compute(api, token, '/servers/detail', limit='1').status_code
                for _ in range(20)]

    api.faults = Faults(error_500_rate=0.5, seed=3)
    first = statuses()
    api.faults = Faults(error_500_rate=0.5, seed=3)
    assert statuses() == first
    assert set(first) == {200, 500}
    api.faults = Faults(error_500_rate=1.0)
    assert set(statuses()) == {500}
    assert requests.get(
        f'http://127.0.0.1:{api.port}/compute/').status_code == 200


def test_latency_is_added_to_every_request(api):
    api.latency_s = 0.3
    started = time.monotonic()
    response = requests.get(f'http://127.0.0.1:{api.port}/compute/')
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_requests_are_counted_by_route_and_status(api):
    token, _ = login(api)
    key = ('GET', '/servers/{id}/os-instance-actions', 404)
    before = api.requests[key]
    compute(api, token, '/servers/not-a-server/os-instance-actions')
    assert api.requests[key] == before + 1


# -- a server over hand-written rows ------------------------------------------

# Two cells whose instances share created_at and id: only the uuid tells
# them apart in Nova's order.
U1, U2, U3 = ('11111111-0000-4000-8000-000000000001',
              '22222222-0000-4000-8000-000000000002',
              '33333333-0000-4000-8000-000000000003')
HAND_INSTANCES = [
    dict(db='cell1', id=1, uuid=U1, project_id='p1', user_id='u1',
         display_name='web-1', vcpus=2, memory_mb=4096, root_gb=40,
         instance_type_id=3, vm_state='active', deleted=0,
         created_at='2024-03-04 13:00:00', updated_at='2024-03-04 13:00:35'),
    dict(db='cell0', id=1, uuid=U2, project_id='p1', user_id='u1',
         display_name='web-2', vcpus=2, memory_mb=4096, root_gb=40,
         instance_type_id=3, vm_state='error', deleted=0,
         created_at='2024-03-04 13:00:00', updated_at='2024-03-04 13:00:02'),
    dict(db='cell1', id=2, uuid=U3, project_id='p1', user_id='u1',
         display_name='web-3', vcpus=1, memory_mb=512, root_gb=1,
         instance_type_id=1, vm_state='active', deleted=0,
         created_at='2024-03-05 09:00:00', updated_at='2024-03-05 09:00:30'),
]
HAND_ACTIONS = [
    dict(db='cell1', id=7, action='create', instance_uuid=U1,
         request_id='req-7', user_id='u1', project_id='p1',
         created_at='2024-03-04 12:59:59', updated_at='2024-03-04 13:00:33',
         start_time='2024-03-04 12:59:59'),
]
HAND_EVENTS = [
    dict(db='cell1', id=9, action_id=7, event='compute__do_build',
         created_at='2024-03-04 13:00:01', start_time='2024-03-04 13:00:01',
         finish_time='2024-03-04 13:00:33', result='Success',
         host='compute-01'),
]


@pytest.fixture
def hand():
    with NovaApiServer(HAND_INSTANCES, HAND_ACTIONS, HAND_EVENTS,
                       max_limit=2) as server:
        yield server


def test_hand_rows_page_across_cells_and_cap_at_max_limit(hand):
    token, _ = login(hand)
    first = compute(hand, token, '/servers/detail', all_tenants='1').json()
    assert [s['id'] for s in first['servers']] == [U3, U2]   # max_limit 2
    assert 'servers_links' in first
    servers = all_pages(hand, token, '/servers/detail', '2.1', 'servers',
                        'servers_links', all_tenants='1', limit='1')
    assert [s['id'] for s in servers] == [U3, U2, U1]
    assert servers[2]['created'] == '2024-03-04T13:00:00Z'
    assert servers[2]['updated'] == '2024-03-04T13:00:35Z'


def test_hand_rows_action_and_event_times(hand):
    token, _ = login(hand)
    action = compute(hand, token, f'/servers/{U1}/os-instance-actions/req-7',
                     '2.58').json()['instanceAction']
    assert (action['start_time'], action['updated_at']) == (
        '2024-03-04T12:59:59.000000', '2024-03-04T13:00:33.000000')
    assert action['events'] == [{
        'event': 'compute__do_build', 'result': 'Success',
        'start_time': '2024-03-04T13:00:01.000000',
        'finish_time': '2024-03-04T13:00:33.000000', 'traceback': None}]


def test_stopped_server_refuses_connections_and_comes_back(hand):
    token, _ = login(hand)
    session = requests.Session()     # a pooled keep-alive connection
    url = f'http://127.0.0.1:{hand.port}/compute/v2.1/servers/detail'
    assert session.get(url, headers={'X-Auth-Token': token}).ok
    port = hand.port
    hand.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, headers={'X-Auth-Token': token})
    hand.start()
    assert hand.port == port
    assert session.get(url, headers={'X-Auth-Token': token}).ok
