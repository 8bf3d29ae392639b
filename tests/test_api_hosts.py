"""``starcompactor hosts --api``: the host table through the Nova compute
API (and Placement), from the loopback Keystone + Nova + Placement of
``tests/nova_api`` serving hand-written ``compute_nodes`` and ``services``
of two cells in MariaDB. Expected rows are written out by hand; the state
they describe is checked against the database's own host table."""
import datetime as dt
import threading
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import READER, NovaDatabases
from helpers import (
    api_command, insert, node_row, ran_job, read_csv, service_row,
    write_key_file)
from nova_api import Faults, NovaApiServer
from starcompactor.pipeline import cli, sources
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.hosts import HostsJob
from starcompactor.pipeline.sources.nova_api import hosts, versions
from starcompactor.transforms.schema import HOST_SOURCE_TABLES, HOST_TRACE

UTC = dt.timezone.utc
CUT = dt.datetime(2024, 3, 2, tzinfo=UTC)
EPOCH = dt.datetime(2024, 1, 1, tzinfo=UTC)
COMMON = ['--mask-method', 'none', '--epoch', '2024-01-01T00:00:00Z',
          '--rack-regex', r'^(r\d+)-', '--formats', 'csv']
DETAIL = ('GET', '/os-hypervisors/detail', 200)
SERVICES = ('GET', '/os-services', 200)
INVENTORIES = ('GET', '/resource_providers/{uuid}/inventories', 200)


# -- two cells as Nova keeps them ---------------------------------------------

def node(id_, host, created, capacity, deleted_at=None):
    return node_row(id_, host, created, capacity, updated=created,
                    deleted_at=deleted_at)


service = service_row


CELL1 = {
    'compute_nodes': [
        node(1, 'r01-c01', '2024-01-01 00:00:00', (32, 128000, 1000)),
        node(2, 'r01-c02', '2024-01-02 00:00:00', (16, 64000, 500)),
        # r02-c01's first node, replaced by node 4
        node(3, 'r02-c01', '2024-01-01 00:00:00', (32, 128000, 1000),
             deleted_at='2024-01-03 00:00:00'),
        node(4, 'r02-c01', '2024-01-03 00:00:00', (64, 256000, 2000)),
        # its service was deleted, its node row left behind: Nova's
        # os-hypervisors skips such a node
        node(5, 'r09-c01', '2023-11-01 00:00:00', (8, 16000, 100))],
    'services': [
        service(1, 'r01-c01', '2024-03-01 10:00:00'),
        service(2, 'r01-c02', '2024-02-20 08:00:00', disabled=1,
                reason='disk replacement'),
        service(3, 'r02-c01', '2024-03-01 10:00:05'),
        service(4, 'ctl1', '2024-03-01 10:00:01', binary='nova-conductor'),
        service(5, 'r09-c01', '2023-12-01 00:00:00',
                deleted_at='2023-12-01 00:00:00')],
}
CELL2 = {
    'compute_nodes': [   # its id unique across cells, as before 2.53
        node(7, 'r03-c01', '2024-02-01 00:00:00', (8, 32000, 200))],
    'services': [service(1, 'r03-c01', None)],     # it never reported
    'shadow_compute_nodes': [
        node(1, 'r04-c01', '2023-10-01 00:00:00', (8, 32000, 200),
             deleted_at='2023-12-01 00:00:00')],
}


def at(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def row(time, host, rack, event, capacity):
    """A CSV row of the host table; seconds from EPOCH."""
    when = at(time) if isinstance(time, str) else time
    return (when.strftime('%Y-%m-%dT%H:%M:%SZ'),
            str(int((when - EPOCH).total_seconds())), host, str(rack), event,
            *map(str, capacity))


# What the API shows at the cut: each live node with a service, created at
# its service's last report (else the cut), and the disabled host.
API_ROWS = sorted([
    row('2024-03-01 10:00:00', 'r01-c01', 0, 'CREATE', (32, 128000, 1000)),
    row('2024-02-20 08:00:00', 'r01-c02', 0, 'CREATE', (16, 64000, 500)),
    row('2024-02-20 08:00:00', 'r01-c02', 0, 'DISABLE', (16, 64000, 500)),
    row('2024-03-01 10:00:05', 'r02-c01', 1, 'CREATE', (64, 256000, 2000)),
    row(CUT, 'r03-c01', 2, 'CREATE', (8, 32000, 200)),
])


@pytest.fixture(scope='module')
def cells(mariadb):
    databases = NovaDatabases(mariadb)
    names = [databases('apihosts'), databases('apihosts')]
    with mariadb.admin() as admin:
        for name, tables in zip(names, (CELL1, CELL2)):
            for table, rows in tables.items():
                insert(admin, name, table, rows)
    yield names
    databases.drop()


@pytest.fixture
def nova(mariadb, cells, request):
    """The loopback cloud over the cells' live tables; server options by
    indirect parametrization."""
    with mariadb.admin() as admin:
        server = NovaApiServer.from_mysql(admin, cells,
                                          **getattr(request, 'param', {}))
    with server:
        yield server


def run_hosts(args):
    """The hosts job on the TestPipeline, its cut at CUT: (job, summary)."""
    job = ran_job(args, HostsJob, CUT)
    return job, job.summarize(0.0)


def api_hosts(nova, os_env, folder, *extra):
    """(job, summary, sorted CSV rows) of ``hosts --api``."""
    os_env(nova.admin_env())
    job, summary = run_hosts(['--api', '--output', str(folder / 'api'),
                              *COMMON, *extra])
    return job, summary, read_csv(folder / 'api')[1]


def counts(summary, table):
    count = summary.tables[table]
    assert count.balanced, table
    return count.read, count.in_trace, count.left_out


def latest(rows):
    """Each host's capacities and whether it is disabled, after all its
    events (in time order; within a second a replaced node goes first)."""
    order = {'DELETE': 0, 'CREATE': 1}
    state = {}
    for _, _, host, _, event, *capacity in sorted(
            rows, key=lambda r: (int(r[1]), order.get(r[4], 2))):
        _, disabled = state.get(host, (None, False))
        if event in ('DISABLE', 'ENABLE'):
            disabled = event == 'DISABLE'
        state[host] = (None if event == 'DELETE' else tuple(capacity),
                       disabled)
    return state


@pytest.fixture(scope='module')
def database_rows(mariadb, cells, password_file, tmp_path_factory):
    """The host table of the live tables, read from the database."""
    folder = tmp_path_factory.mktemp('db')
    run_hosts(['--mysql-host', mariadb.host, '--mysql-port',
               str(mariadb.port), '--mysql-user', READER,
               '--mysql-password-file', password_file, '--databases',
               ','.join(cells), '--no-archived', '--output',
               str(folder / 'db'), *COMMON])
    return read_csv(folder / 'db')[1]


# -- the host table through the API -------------------------------------------

def test_the_api_shows_the_database_state_at_the_cut(
        nova, database_rows, os_env, tmp_path):
    job, summary, rows = api_hosts(nova, os_env, tmp_path)
    assert rows == API_ROWS
    assert read_csv(tmp_path / 'api')[0] == {tuple(HOST_TRACE.csv_header)}
    # Nova lists live nova-compute services and live nodes with a service
    assert counts(summary, 'services') == (4, 4, {})
    assert counts(summary, 'compute_nodes') == (4, 4, {})
    assert counts(summary, 'host_events') == (5, 5, {})
    assert summary.trace_rows == 5
    # the same state as the database's: capacities, the disabled host and
    # when it was disabled; but not the history before the cut (r02-c01's
    # first node) nor the node whose service is gone (r09-c01)
    expected = latest(database_rows)
    assert expected.pop('r09-c01') == (('8', '16000', '100'), False)
    assert latest(rows) == expected
    assert [r for r in rows if r[4] != 'CREATE'] == \
        [r for r in database_rows if r[4] == 'DISABLE']
    assert job.source.describe()['microversion'] == '2.87'
    assert job.source.describe()['capacities'] == 'os-hypervisors'
    assert nova.requests[SERVICES] == 1
    assert nova.requests[DETAIL] == 2          # a page, then an empty one
    assert summary.api['requests_made'] >= 3
    assert 'requests_failed' not in summary.api


@pytest.mark.parametrize('nova, microversion, detail_requests', [
    # no paging before 2.33; ids as markers to 2.52; uuids from 2.53
    ({'max_microversion': '2.30'}, '2.30', 1),
    ({'max_microversion': '2.52', 'max_limit': 2}, '2.52', 4),
    ({'max_limit': 2}, '2.87', 4),
], indirect=['nova'])
def test_hypervisors_are_paged_as_each_microversion_pages_them(
        nova, microversion, detail_requests, os_env, tmp_path):
    """Pages of 2 over the nodes of cell1 (1, 2, 4, 5) then cell2 (7): the
    second page loses r09-c01 (no service) after the cut, a short page
    that is not the last."""
    job, summary, rows = api_hosts(nova, os_env, tmp_path,
                                   '--api-page-size', '2')
    assert rows == API_ROWS
    assert counts(summary, 'compute_nodes') == (4, 4, {})
    assert job.source.describe()['microversion'] == microversion
    assert nova.requests[DETAIL] == detail_requests
    assert not [key for key in nova.requests if key[2] >= 400]


@pytest.mark.parametrize('nova', [{'min_microversion': '2.88'}],
                         indirect=True)
def test_a_cloud_that_requires_2_88_gives_capacities_through_placement(
        nova, os_env, tmp_path):
    job, summary, rows = api_hosts(nova, os_env, tmp_path)
    assert rows == API_ROWS
    assert job.source.describe()['microversion'] == '2.96'
    assert job.source.describe()['capacities'] == 'placement'
    assert job.source.describe()['placement'] == \
        f'http://127.0.0.1:{nova.port}/placement'
    assert nova.requests[INVENTORIES] == 4


@pytest.mark.parametrize('nova', [{'min_microversion': '2.88'}],
                         indirect=True)
def test_a_hypervisor_without_a_resource_provider_is_counted_not_written(
        nova, os_env, tmp_path):
    gone, = [n['uuid'] for n in nova.host_data.nodes
             if n['host'] == 'r01-c01']
    del nova.host_data.providers[gone]
    _, summary, rows = api_hosts(nova, os_env, tmp_path)
    assert rows == [r for r in API_ROWS if r[2] != 'r01-c01']
    assert counts(summary, 'compute_nodes') == (
        4, 3, {hosts.NO_RESOURCE_PROVIDER: 1})
    assert counts(summary, 'services') == (4, 4, {})   # r01-c01's too
    assert nova.requests['GET', '/resource_providers/{uuid}/inventories',
                         404] == 1


@pytest.mark.parametrize('nova', [{
    'min_microversion': '2.88', 'max_limit': 2,
    'faults': Faults(error_500_rate=0.3, seed=5, rate_limit_burst=(3, 0))}],
    indirect=True)
def test_429s_and_500s_of_nova_and_placement_are_ridden_out(
        nova, os_env, tmp_path):
    _, summary, rows = api_hosts(nova, os_env, tmp_path)
    assert rows == API_ROWS
    assert counts(summary, 'compute_nodes') == (4, 4, {})
    statuses = {status for _, _, status in nova.requests}
    assert {429, 500} <= statuses
    assert summary.api['requests_retried'] >= 1
    assert 'requests_failed' not in summary.api


@pytest.mark.parametrize('nova', [{'latency_s': 0.2}], indirect=True)
def test_a_token_revoked_mid_run_is_renewed(nova, os_env, tmp_path):
    """Tokens revoked once the services are listed: the next request meets
    a 401, gets a new token and is sent again."""
    def revoke_after_services():
        while not nova.requests[SERVICES]:
            time.sleep(0.01)
        nova.revoke_tokens()
    watcher = threading.Thread(target=revoke_after_services, daemon=True)
    watcher.start()
    _, summary, rows = api_hosts(nova, os_env, tmp_path)
    watcher.join(timeout=1)
    assert rows == API_ROWS
    assert nova.requests['GET', '/os-hypervisors/detail', 401] == 1
    assert counts(summary, 'compute_nodes') == (4, 4, {})


# -- the command, its failures, verify ----------------------------------------

starcompactor = api_command


def test_the_command_writes_the_masked_table_and_verify_finds_no_host(
        nova, os_env, tmp_path, capsys):
    key_file = write_key_file(tmp_path / 'key',
                              b'api-hosts-test-key-0123456789abcdef')
    env = nova.admin_env()
    out = str(tmp_path / 'hosts')
    run = starcompactor('hosts', '--api', '--output', out, '--formats',
                        'csv', '--mask-key-file', key_file, env=env)
    assert run.returncode == 0, run.stderr
    assert 'compute_nodes' in run.stdout and 'host_events' in run.stdout
    assert env['OS_PASSWORD'] not in run.stdout + run.stderr
    rows = read_csv(out)[1]
    assert len(rows) == len(API_ROWS)
    raw = {'r01-c01', 'r01-c02', 'r02-c01', 'r03-c01'}
    assert not raw & {value for r in rows for value in r}
    os_env(env)
    assert cli.main(['verify', out, '--api', '--mask-key-file',
                     key_file]) == 0
    assert 'no raw identity and no key found' in capsys.readouterr().out
    run_hosts(['--api', '--output', str(tmp_path / 'raw'), *COMMON])
    assert cli.main(['verify', str(tmp_path / 'raw'), '--api']) == 1
    # each of the 5 rows holds one raw host
    assert capsys.readouterr().err.strip().endswith('5 leaks in 1 files')


def test_member_credentials_are_refused_in_one_line(nova, tmp_path):
    run = starcompactor('hosts', '--api', '--output', str(tmp_path / 'h'),
                        env=nova.member_env())
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert 'Traceback' not in run.stderr
    assert last.startswith('starcompactor: error: ')
    assert 'HTTP 403' in last and 'admin credentials are needed to list ' \
                                  'hypervisors' in last
    assert not list(tmp_path.iterdir())


# -- the pieces ---------------------------------------------------------------

def _document(low, high):
    return {'version': {'id': 'v2.1', 'status': 'CURRENT', 'version': high,
                        'min_version': low}}


def test_hosts_are_read_below_2_88_unless_the_cloud_requires_more():
    assert versions.negotiate_hosts(_document('2.1', '2.96'), 'x') == \
        ('2.87', False)
    assert versions.negotiate_hosts(_document('2.1', '2.60'), 'x') == \
        ('2.60', False)
    assert versions.negotiate_hosts(_document('2.1', '2.12'), 'x') == \
        ('2.12', False)      # older than servers need: hosts do not care
    assert versions.negotiate_hosts(_document('2.87', '2.96'), 'x') == \
        ('2.87', False)
    assert versions.negotiate_hosts(_document('2.88', '2.96'), 'x') == \
        ('2.96', True)
    assert versions.negotiate_hosts(_document('2.90', '2.120'), 'x') == \
        ('2.96', True)
    with pytest.raises(UserError, match='requires microversion 2.97'):
        versions.negotiate_hosts(_document('2.97', '2.99'), 'x')
    with pytest.raises(UserError, match='no microversions'):
        versions.negotiate_hosts({'versions': []}, 'x')


def test_hypervisor_ids_repeating_across_cells_before_2_53_fail_in_one_line(
        os_env):
    """Before 2.53 the marker is an id, and Nova pages on from the first
    cell holding it: with the same id in two cells the listing loops."""
    cells = [(cell, dict(node(1, host, '2024-01-01 00:00:00', (8, 8, 8)),
                         db=cell),
              dict(service(1, host, '2024-01-01 00:00:00'), db=cell))
             for cell, host in (('c1', 'h1'), ('c2', 'h2'))]
    with NovaApiServer(compute_nodes=[n for _, n, _ in cells],
                       services=[s for _, _, s in cells],
                       max_microversion='2.52') as server:
        os_env(server.admin_env())
        source = sources.nova_source(PipelineOptions(['--api']),
                                     HOST_SOURCE_TABLES)
        with pytest.raises(UserError, match='in a loop .marker 1 again'):
            source.raw_identities()


def test_capacities_from_inventories_and_services_of_unknown_status():
    assert hosts.inventory_capacity({
        'VCPU': {'total': 16}, 'PCPU': {'total': 8},
        'MEMORY_MB': {'total': 64000}}) == (24, 64000, None)
    assert hosts.inventory_capacity({}) == (None, None, None)
    batch, unknown = hosts.services_table([
        {'id': 'u1', 'host': 'h1', 'binary': 'nova-compute',
         'status': 'disabled', 'updated_at': '2024-03-01T10:00:00.000000'},
        # a service of a cell that is down (2.69+): a partial record
        {'binary': 'nova-compute', 'host': 'h2', 'status': 'UNKNOWN'}])
    assert unknown == 1
    assert batch.select(['host', 'updated_at', 'disabled']).to_pylist() == [
        {'host': 'h1', 'updated_at': '2024-03-01 10:00:00', 'disabled': 1}]
    created = hosts.creation_times([
        {'host': 'h1', 'updated_at': '2024-03-01T10:00:00.000000'},
        {'host': 'h1', 'updated_at': '2024-02-01T10:00:00.000000'},
        {'host': 'h2', 'updated_at': None}], '2024-03-02 00:00:00')
    assert [created(h) for h in ('h1', 'h2', 'h3')] == [
        '2024-02-01 10:00:00', '2024-03-02 00:00:00', '2024-03-02 00:00:00']
