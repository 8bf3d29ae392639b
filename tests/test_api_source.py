"""``starcompactor instances --api``: the trace through the Nova compute API
(the loopback Keystone + Nova of ``tests/nova_api``, serving the live tables
of a synthetic two-cell cloud in MariaDB) equals the trace of the same
databases read directly (``--no-archived``: archived rows are invisible
through the API), row for row and count for count, whatever the
credentials and the faults on the way."""
import hashlib
import json
import os
import threading
import time

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import READER, drop_databases, grant_reader
from helpers import api_command, read_csv, run_job, write_key_file
from job_graph import pipeline_proto_text
from nova_api import NovaApiServer
from starcompactor import synth
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.instances import InstancesJob
from starcompactor.pipeline.sources.nova_api import credentials, rows, versions
from starcompactor.pipeline.sources.nova_api.client import ApiError
from starcompactor.pipeline.sources.nova_api.source import (
    DELETED, LIVE, list_servers)
from starcompactor.pipeline.summary import Summary
from starcompactor.transforms.schema import SOURCE_TABLES

CELLS = ('api_cell0', 'api_cell1')
INSTANCES = 400
MASK_KEY = b'api-trace-test-key-0123456789abcdef'
EPOCH = '2015-09-01T00:00:00Z'
START = '2015-12-01T00:00:00Z'
# The CSV columns the sizes come from (MEMORY_MB, DISK_GB, VCPUS) and the
# instance uuid (kept raw by default).
SIZE_COLUMNS, UUID_COLUMN = (8, 9, 10), 0


# -- the cloud, and its trace read from the databases -------------------------

@pytest.fixture(scope='module')
def cloud(mariadb):
    with mariadb.admin() as admin:
        synth.load_mysql(admin, INSTANCES, seed=11, cells=CELLS, days=120)
    with mariadb.admin() as admin, admin.cursor() as cursor:
        for cell in CELLS:
            grant_reader(cursor, cell)
    yield CELLS
    drop_databases(mariadb, CELLS)


@pytest.fixture(scope='module')
def key_file(tmp_path_factory):
    return write_key_file(tmp_path_factory.mktemp('key'), MASK_KEY)


def common_args(key_file, *extra):
    return ['--formats', 'csv', '--mask-key-file', key_file,
            '--epoch', EPOCH, *extra]


def database_trace(mariadb, password_file, key_file, folder, *extra):
    summary = run_job([
        '--mysql-host', mariadb.host, '--mysql-port', str(mariadb.port),
        '--mysql-user', READER, '--mysql-password-file', password_file,
        '--databases', ','.join(CELLS), '--no-archived',
        '--output', str(folder / 'db'), *common_args(key_file, *extra)])
    return summary, read_csv(folder / 'db')[1]


@pytest.fixture(scope='module')
def reference(mariadb, cloud, password_file, key_file, tmp_path_factory):
    """The database trace of the live tables: (summary, sorted CSV rows)."""
    return database_trace(mariadb, password_file, key_file,
                          tmp_path_factory.mktemp('reference'))


@pytest.fixture(scope='module')
def reference_from_start(mariadb, cloud, password_file, key_file,
                         tmp_path_factory):
    return database_trace(mariadb, password_file, key_file,
                          tmp_path_factory.mktemp('reference-start'),
                          '--start', START)


@pytest.fixture(scope='module')
def live_servers(mariadb, cloud):
    """Instances in the live tables, counted by SQL."""
    with mariadb.admin() as admin, admin.cursor() as cursor:
        return sum(cursor.execute(f'SELECT id FROM `{cell}`.instances')
                   for cell in cloud)


@pytest.fixture
def nova(mariadb, cloud, request):
    """The loopback cloud over the cells' live tables; options of the
    server by indirect parametrization (``older_cloud``)."""
    with mariadb.admin() as admin:
        server = NovaApiServer.from_mysql(admin, list(cloud),
                                          **getattr(request, 'param', {}))
    server.start()
    yield server
    server.stop()


def api_trace(folder, *extra, key_file):
    summary = run_job(['--api', '--output', str(folder / 'api'),
                       *common_args(key_file, *extra)])
    return summary, read_csv(folder / 'api')[1]


def assert_same_counts(summary, expected):
    for table in SOURCE_TABLES:
        assert summary.tables[table] == expected.tables[table], table
        assert summary.tables[table].balanced, table


# -- the trace through the API ------------------------------------------------

starcompactor = api_command


def test_the_command_reads_the_same_trace_through_the_api(
        nova, reference, live_servers, key_file, tmp_path):
    env = nova.admin_env()
    out = tmp_path / 'api'
    run = starcompactor('instances', '--api', '--output', str(out),
                        *common_args(key_file), env=env)
    assert run.returncode == 0, run.stderr
    expected, expected_rows = reference
    assert len(expected_rows) > 1000
    assert read_csv(out)[1] == expected_rows
    manifest = json.loads((tmp_path / 'api.manifest.json').read_text())
    for table in SOURCE_TABLES:
        count = expected.tables[table]
        assert manifest['source_rows'][table] == {
            'read': count.read, 'in_trace': count.in_trace,
            'left_out': expected.rejects(table)}, table
    assert manifest['source_rows']['instances']['read'] == live_servers
    assert manifest['source']['kind'] == 'nova-api'
    assert 'api        requests' in run.stdout
    # The password is in the child's environment only.
    password = env['OS_PASSWORD']
    written = [p for p in tmp_path.iterdir() if p.is_file()]
    for text in [run.stdout, run.stderr] + [p.read_text() for p in written]:
        assert password not in text
    assert nova.requests['POST', '/identity/v3/auth/tokens', 201] >= 1
    verify = starcompactor('verify', str(out), '--api', '--mask-key-file',
                           key_file, env=env)
    assert verify.returncode == 0, verify.stderr
    assert 'no raw identity and no key found' in verify.stdout


def test_application_credential_and_the_start_window(
        nova, reference_from_start, key_file, os_env, tmp_path):
    os_env(nova.app_credential_env())
    summary, trace = api_trace(tmp_path, '--start', START, key_file=key_file)
    expected, expected_rows = reference_from_start
    assert trace == expected_rows
    # Events before --start are never read, as the database source skips
    # them in SQL; changes-since leaves out servers unchanged since then.
    assert summary.tables['events'] == expected.tables['events']
    assert summary.tables['instances'].read < expected.tables['instances'].read
    assert summary.tables['instances'].balanced
    listed = [k for k in nova.requests if k[1] == '/servers/detail']
    assert listed and all(status == 200 for _, _, status in listed)


def test_credentials_from_an_openrc_file(nova, reference, key_file, os_env,
                                         tmp_path):
    env = nova.admin_env()
    openrc = tmp_path / 'admin-openrc.sh'
    openrc.write_text(
        '#!/usr/bin/env bash\n'
        + ''.join(f'export {name}="{value}"\n' for name, value in env.items()
                  if name != 'OS_PASSWORD')
        + 'echo "Please enter your OpenStack Password: "\n'
        + 'read -sr OS_PASSWORD_INPUT\n'
        + 'export OS_PASSWORD=$OS_PASSWORD_INPUT\n'
        + f"export OS_PASSWORD='{env['OS_PASSWORD']}'\n")
    os_env({'OS_AUTH_URL': 'http://127.0.0.1:1/not-this-one'})
    summary, trace = api_trace(tmp_path, '--osrc', str(openrc),
                               key_file=key_file)
    assert trace == reference[1]
    assert_same_counts(summary, reference[0])


def test_credentials_from_clouds_yaml(nova, reference, key_file, os_env,
                                      tmp_path):
    env = nova.admin_env()
    clouds = tmp_path / 'clouds.yaml'
    secure = tmp_path / 'secure.yaml'
    clouds.write_text(yaml.safe_dump({'clouds': {'loopback': {
        'auth': {'auth_url': env['OS_AUTH_URL'],
                 'username': env['OS_USERNAME'],
                 'project_name': env['OS_PROJECT_NAME'],
                 'user_domain_name': 'Default',
                 'project_domain_name': 'Default'},
        'region_name': env['OS_REGION_NAME'], 'interface': 'public',
        'identity_api_version': 3}}}))
    secure.write_text(yaml.safe_dump({'clouds': {'loopback': {
        'auth': {'password': env['OS_PASSWORD']}}}}))
    os_env({'OS_CLIENT_CONFIG_FILE': str(clouds),
            'OS_CLIENT_SECURE_FILE': str(secure)})
    summary, trace = api_trace(tmp_path, '--os-cloud', 'loopback',
                               key_file=key_file)
    assert trace == reference[1]
    assert_same_counts(summary, reference[0])


@pytest.mark.parametrize('nova', [{'max_microversion': '2.21'}],
                         indirect=True)
def test_an_older_cloud_gives_sizes_through_flavors(nova, reference,
                                                    key_file, os_env,
                                                    tmp_path):
    """At 2.21 servers name their flavor only (each read once) and actions
    are not paged; a flavor deleted since leaves its servers' sizes empty,
    counted."""
    gone = sorted(nova.data.flavors)[0]
    del nova.data.flavors[gone]
    orphans = {uuid for uuid, i in nova.data.instances.items()
               if i['flavor']['flavorid'] == gone}
    os_env(nova.admin_env())
    summary, trace = api_trace(tmp_path, key_file=key_file)

    expected_rows = sorted(
        tuple('' if column in SIZE_COLUMNS and row[UUID_COLUMN] in orphans
              else value for column, value in enumerate(row))
        for row in reference[1])
    assert trace == expected_rows
    assert_same_counts(summary, reference[0])
    flavor_reads = [n for (_, route, _), n in nova.requests.items()
                    if route == '/flavors/{id}']
    assert sum(flavor_reads) == len(nova.data.flavors) + 1
    assert summary.api['sizes_unknown'] == len(orphans) > 0


def test_the_job_graph_says_where_credentials_are_never_what(
        nova, os_env, tmp_path):
    env = nova.app_credential_env()
    os_env(env)
    options = PipelineOptions(['--api', '--output', str(tmp_path / 't')])
    pipeline = beam.Pipeline(options=options)
    InstancesJob(options).build(pipeline)
    graph = pipeline_proto_text(pipeline)
    assert b'ApiReading' in graph and b'CredentialSource' in graph
    assert env['OS_APPLICATION_CREDENTIAL_SECRET'].encode() not in graph
    assert env['OS_APPLICATION_CREDENTIAL_ID'].encode() not in graph


# -- faults -------------------------------------------------------------------

def mid_run(server, requests, fault):
    """Call ``fault()`` once ``requests`` calls were answered."""
    def watch():
        while sum(server.requests.values()) < requests:
            time.sleep(0.01)
        fault()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_revoked_tokens_429_bursts_and_500s_are_ridden_out(
        nova, reference, key_file, os_env, tmp_path):
    nova.faults.error_500_rate = 0.03

    def faults():
        nova.revoke_tokens()
        nova.faults.rate_limit_burst = (12, 1)
    os_env(nova.admin_env())
    watcher = mid_run(nova, 300, faults)
    summary, trace = api_trace(tmp_path, key_file=key_file)
    watcher.join(timeout=1)

    assert trace == reference[1]
    assert_same_counts(summary, reference[0])
    statuses = {status for (_, _, status) in nova.requests}
    assert {401, 429, 500} <= statuses
    assert nova.requests['POST', '/identity/v3/auth/tokens', 201] >= 2
    retries = sum(n for (_, _, status), n in nova.requests.items()
                  if status in (429, 500))
    # The plan's requests, before the run, are not the run's.
    assert 0 < summary.api['requests_retried'] <= retries
    assert summary.api.get('requests_failed', 0) == 0


def test_a_poisoned_marker_and_a_server_gone_before_its_actions(
        nova, reference, live_servers, key_file, os_env, tmp_path):
    """The listing steps back over the marker Nova cannot use; the server
    that went between listing and fetching is left out, counted."""
    page = 40
    newest_first_live = [i['uuid'] for i in nova.data.newest_first
                         if not i.get('deleted')]
    nova.faults.poisoned_marker = newest_first_live[page - 1]
    in_trace = sorted({row[UUID_COLUMN] for row in reference[1]})
    gone = in_trace[len(in_trace) // 2]
    nova.faults.deleted_on_fetch = {gone}
    os_env(nova.admin_env())
    summary, trace = api_trace(tmp_path, '--api-page-size', str(page),
                               key_file=key_file)

    assert trace == [row for row in reference[1] if row[UUID_COLUMN] != gone]
    assert nova.requests['GET', '/servers/detail', 500] >= 1
    instances = summary.tables['instances']
    assert instances.read == live_servers
    assert instances.left_out['gone'] == 1
    assert instances.balanced
    assert summary.tables['events'].balanced


# -- errors: one line, exit 1, no secret --------------------------------------

def fails_with(run, *phrases):
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert 'Traceback' not in run.stderr
    assert lines[-1].startswith('starcompactor: error: '), run.stderr
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]


def test_a_wrong_password_is_one_line(nova, key_file, tmp_path):
    env = dict(nova.admin_env(), OS_PASSWORD='not-the-Pa55word-at-all')
    run = starcompactor('instances', '--api', '--output',
                        str(tmp_path / 't'), *common_args(key_file), env=env)
    fails_with(run, 'refused', "'admin'", 'wrong password')
    assert 'not-the-Pa55word-at-all' not in run.stdout + run.stderr
    assert not list(tmp_path.iterdir())


def test_an_unreachable_keystone_is_one_line(nova, key_file, tmp_path):
    env = dict(nova.admin_env())
    nova.stop()
    run = starcompactor('instances', '--api', '--output',
                        str(tmp_path / 't'), *common_args(key_file), env=env)
    nova.start()
    fails_with(run, 'cannot reach Keystone at', env['OS_AUTH_URL'])


@pytest.mark.parametrize('nova', [{'max_microversion': '2.20'}],
                         indirect=True)
def test_a_cloud_before_microversion_2_21_is_refused(nova, key_file,
                                                     tmp_path):
    run = starcompactor('instances', '--api', '--output',
                        str(tmp_path / 't'), *common_args(key_file),
                        env=nova.admin_env())
    fails_with(run, 'up to 2.20', 'needs 2.21')


def test_member_credentials_are_refused(nova, key_file, tmp_path):
    run = starcompactor('instances', '--api', '--output',
                        str(tmp_path / 't'), *common_args(key_file),
                        env=nova.member_env())
    fails_with(run, 'HTTP 403', 'admin credentials')


def test_api_options_need_api_and_one_credential_source(tmp_path):
    run = starcompactor('instances', '--osrc', 'x', '--output',
                        str(tmp_path / 't'), env={})
    fails_with(run, 'add --api')
    run = starcompactor('instances', '--api', '--osrc', 'x', '--os-cloud',
                        'y', '--output', str(tmp_path / 't'), env={})
    fails_with(run, 'either --osrc or --os-cloud')
    run = starcompactor('instances', '--api', '--api-concurrency', '0',
                        '--output', str(tmp_path / 't'), env={})
    assert run.returncode == 2 and '--api-concurrency' in run.stderr


# -- the pieces: credentials, microversions, ids, paging ----------------------

def test_an_openrc_is_read_as_the_shell_would_without_running_it(tmp_path):
    openrc = tmp_path / 'openrc'
    openrc.write_text(
        '# comment\n'
        'export OS_AUTH_URL=https://keystone.example.org:5000/v3\n'
        'export OS_USERNAME="ad min"  # trailing comment\n'
        "export OS_PASSWORD='pa$$ \"word'\n"
        'OS_PROJECT_NAME=proj\n'
        'export OS_USER_DOMAIN_NAME="${OS_PROJECT_NAME}-domain"\n'
        'unset OS_TENANT_NAME\n'
        'export OS_REGION_NAME=$(hostname)\n'
        'echo "export OS_INTERFACE=nope"\n'
        'touch should-not-exist\n')
    variables = credentials.read_openrc(
        str(openrc), {'OS_TENANT_NAME': 'old', 'OS_REGION_NAME': 'env-region',
                      'PATH': '/bin'})
    assert variables == {
        'OS_AUTH_URL': 'https://keystone.example.org:5000/v3',
        'OS_USERNAME': 'ad min', 'OS_PASSWORD': 'pa$$ "word',
        'OS_PROJECT_NAME': 'proj', 'OS_USER_DOMAIN_NAME': 'proj-domain',
        'OS_REGION_NAME': 'env-region'}
    assert not (tmp_path / 'should-not-exist').exists()


def test_settings_from_variables_pick_the_auth_type():
    password = credentials.settings_from_variables({
        'OS_AUTH_URL': 'http://k/v3', 'OS_USERNAME': 'u',
        'OS_PASSWORD': 'secret-1', 'OS_TENANT_NAME': 't',
        'OS_REGION_NAME': 'R', 'OS_ENDPOINT_TYPE': 'internal'}, 'env')
    assert (password.auth_type, password.region_name, password.interface) == \
        ('password', 'R', 'internal')
    assert password.auth == {'auth_url': 'http://k/v3', 'username': 'u',
                             'password': 'secret-1', 'project_name': 't'}
    assert 'secret-1' not in repr(password)
    app = credentials.settings_from_variables({
        'OS_AUTH_URL': 'http://k/v3', 'OS_APPLICATION_CREDENTIAL_ID': 'id',
        'OS_APPLICATION_CREDENTIAL_SECRET': 'secret-2'}, 'env')
    assert app.auth_type == 'v3applicationcredential'
    assert app.interface == 'public'
    with pytest.raises(UserError, match='lacks password for password'):
        credentials.settings_from_variables(
            {'OS_AUTH_URL': 'http://k/v3', 'OS_USERNAME': 'u'}, 'env').plugin()
    with pytest.raises(UserError, match='no OS_AUTH_URL'):
        credentials.settings_from_variables({'OS_USERNAME': 'u'}, 'env')
    with pytest.raises(UserError, match="unsupported auth type 'token'"):
        credentials.settings_from_variables({'OS_AUTH_URL': 'http://k',
                                             'OS_AUTH_TYPE': 'token'}, 'env')
    bare = credentials.settings_from_variables(
        {'OS_AUTH_URL': 'http://k/v3', 'OS_AUTH_TYPE':
         'v3applicationcredential', 'OS_APPLICATION_CREDENTIAL_ID': 'id'},
        'the OS_* environment')
    with pytest.raises(UserError, match='the OS_. environment lacks '
                                        'application_credential_secret'):
        bare.plugin()


def test_clouds_yaml_is_found_where_openstack_clients_look(tmp_path,
                                                          monkeypatch):
    home = tmp_path / 'home'
    config = home / '.config' / 'openstack'
    config.mkdir(parents=True)
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.chdir(tmp_path)   # no ./clouds.yaml here
    cloud = credentials.CredentialSource(credentials.CLOUD, 'prod')
    if not os.path.exists('/etc/openstack/clouds.yaml'):
        with pytest.raises(UserError, match='no clouds.yaml'):
            cloud.settings({})
    (config / 'clouds.yaml').write_text(yaml.safe_dump({'clouds': {
        'prod': {'auth': {'auth_url': 'https://k/v3',
                          'application_credential_id': 'ac'},
                 'auth_type': 'v3applicationcredential',
                 'region_name': 'East', 'verify': False}}}))
    (config / 'secure.yaml').write_text(yaml.safe_dump({'clouds': {
        'prod': {'auth': {'application_credential_secret': 's3'}}}}))
    settings = cloud.settings({})
    assert settings.auth == {'auth_url': 'https://k/v3',
                             'application_credential_id': 'ac',
                             'application_credential_secret': 's3'}
    assert (settings.auth_type, settings.region_name, settings.verify) == \
        ('v3applicationcredential', 'East', False)
    with pytest.raises(UserError, match="no cloud 'test' .*it has: prod"):
        credentials.CredentialSource(credentials.CLOUD, 'test').settings({})
    (tmp_path / 'clouds.yaml').write_text('clouds: [unclosed\n')
    with pytest.raises(UserError, match=f'^{tmp_path}/clouds.yaml line 2 is '
                                        f'not valid YAML$'):
        cloud.settings({})


VERSIONED = {'version': {'id': 'v2.1', 'status': 'CURRENT',
                         'version': '2.96', 'min_version': '2.1'}}
ROOT = {'versions': [{'id': 'v2.0', 'status': 'SUPPORTED', 'version': '',
                      'min_version': ''},
                     {'id': 'v2.1', 'status': 'CURRENT', 'version': '2.60',
                      'min_version': '2.1'}]}


def test_the_microversion_is_the_highest_both_sides_know():
    assert versions.negotiate(VERSIONED, 'x') == '2.96'
    assert versions.negotiate(ROOT, 'x') == '2.60'
    newer = {'version': dict(VERSIONED['version'], version='2.120')}
    assert versions.negotiate(newer, 'x') == '2.96'
    assert versions.negotiate(
        {'version': dict(VERSIONED['version'], version='2.21')}, 'x') == '2.21'
    with pytest.raises(UserError, match=r'up to 2\.20; .*needs 2\.21'):
        versions.negotiate(
            {'version': dict(VERSIONED['version'], version='2.20')}, 'x')
    with pytest.raises(UserError, match='no microversions'):
        versions.negotiate({'versions': [ROOT['versions'][0]]}, 'x')
    with pytest.raises(UserError, match='requires microversion 2.97'):
        versions.negotiate({'version': dict(
            VERSIONED['version'], min_version='2.97', version='2.99')}, 'x')
    assert versions.at_least('2.58', versions.PAGED_ACTIONS)
    assert not versions.at_least('2.9', versions.EMBEDDED_FLAVOR)


def test_synthesized_ids_are_stable_63_bit_and_distinct():
    uuid = '0b1e9cf2-61d6-4f62-9a1f-5b6a5bd8a0a1'
    ids = [rows.row_id(uuid), rows.row_id(uuid, 'req-1'),
           rows.row_id(uuid, 'req-2'), rows.row_id(uuid, 'req-1', 'e', 't')]
    assert len(set(ids)) == len(ids)
    assert all(0 <= i < 2 ** 63 for i in ids)
    assert rows.row_id(uuid, 'req-1') == int.from_bytes(
        hashlib.blake2b(f'{uuid}\0req-1'.encode(), digest_size=8).digest(),
        'big') >> 1


def test_api_times_become_nova_text():
    assert rows.nova_time('2016-03-01T12:00:05.000000') == \
        '2016-03-01 12:00:05'
    assert rows.nova_time('2016-03-01T12:00:05Z') == '2016-03-01 12:00:05'
    assert rows.nova_time('2016-03-01T12:00:05+00:00') == \
        '2016-03-01 12:00:05'
    assert rows.nova_time('0000-00-00 00:00:00') == '0000-00-00 00:00:00'
    assert rows.nova_time('yesterday') == 'yesterday'
    assert rows.nova_time(None) is None
    window = ('2016-01-01 00:00:00', '2016-02-01 00:00:00')
    assert rows.in_window('2016-01-01 00:00:00', window)
    assert not rows.in_window('2016-02-01 00:00:00', window)
    assert not rows.in_window(None, window)
    assert rows.in_window(None, (None, None))


class PagedServers:
    """A fake client over ``uuids`` (newest first): pages of ``limit`` with a
    next link when full; ``refuse`` maps a marker to the status it gets."""

    def __init__(self, uuids, refuse=None):
        self.uuids, self.refuse = uuids, refuse or {}
        self.markers = []

    def get(self, path, params):
        marker = params.get('marker')
        self.markers.append(marker)
        if marker in self.refuse:
            raise ApiError(self.refuse[marker], path)
        start = self.uuids.index(marker) + 1 if marker else 0
        page = self.uuids[start:start + params['limit']]
        body = {'servers': [{'id': u} for u in page]}
        if len(page) == params['limit']:
            body['servers_links'] = [{'rel': 'next', 'href': '...'}]
        return body


def test_listing_steps_back_over_a_refused_marker():
    uuids = [f'u{i:02d}' for i in range(10)]
    client = PagedServers(uuids, refuse={'u03': 500, 'u02': 400})
    pages = list(list_servers(client, LIVE, 4))
    assert [s.uuid for page in pages for s in page] == uuids
    # u03 refused, then u02; u01 works and u02, u03 are not listed twice.
    assert client.markers == [None, 'u03', 'u02', 'u01', 'u05', 'u09']
    refused = PagedServers(uuids, refuse={'u03': 500, 'u02': 500,
                                          'u01': 500, 'u00': 500})
    with pytest.raises(UserError, match='failed listing deleted servers'):
        list(list_servers(refused, DELETED, 4))


def test_summary_reports_the_api_requests():
    summary = Summary.from_counters({
        'read.instances': 2, 'in_trace.instances': 1,
        'rejected.instances.gone': 1, 'api.requests_made': 1234,
        'api.requests_retried': 5, 'api.requests_failed': 1})
    assert summary.tables['instances'].balanced
    assert '  api        requests 1,234  retried 5  failed 1' in \
        '\n'.join(summary.lines())
