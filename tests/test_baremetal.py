"""Bare-metal clouds and the trace format v0.3, against real MariaDB.

Nova's real cell schema, and the real Ironic 39 and Blazar 18 schemas
(``synth/sql/ironic.sql``, ``synth/sql/blazar.sql``, dumped from the
projects' own migrations): v0.2 against v0.3 columns, the physical host of
a bare-metal instance (its Ironic node, masked as in the host table), the
lease link, the host table of Ironic nodes and Blazar capabilities (rack
indexes, a node retired across a dump series), Chameleon-style
soft-deleted Blazar rows. Expected values are written out by hand, masks
computed here with the standard library.
"""
import datetime as dt
import gzip
import hashlib
import hmac
import json

import pyarrow.parquet as pq
import pytest

import golden
from conftest import READER, drop_databases
from helpers import (
    dump_state, insert, job_args, node_row, read_avro, read_csv, read_jsonl,
    run_job, write_key_file)
from apache_beam.options.pipeline_options import PipelineOptions

from starcompactor.pipeline import cli, shards
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.hosts import HostsJob
from starcompactor.pipeline.instances import InstancesJob
from starcompactor.pipeline.sources import mysql
from starcompactor.synth import main as synth_main
from starcompactor.synth.baremetal import BareMetalHistory
from starcompactor.synth.baremetal_schema import (
    create_blazar_database, create_ironic_database)
from starcompactor.synth.baremetal_writer import (
    load_baremetal_mysql, write_baremetal_dump)
from test_hosts import COMMON, FIRST_STATE_EVENTS, _first_state, run_hosts

KEY = b'bare-metal-test-key-0123456789ab'
DAY = 86_400


def masked(value):
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:32]


V02_INSTANCE_HEADER = (
    'INSTANCE_UUID', 'EVENT', 'START_TIME', 'START_SEC', 'FINISH_TIME',
    'FINISH_SEC', 'EVENT_DURATION', 'RESULT', 'MEMORY_MB', 'DISK_GB',
    'VCPUS', 'INSTANCE_NAME', 'USER_ID', 'PROJECT_ID', 'HOST_NAME (PHYSICAL)')
V03_INSTANCE_HEADER = (
    'INSTANCE_UUID', 'EVENT', 'START_TIME', 'START_SEC', 'FINISH_TIME',
    'FINISH_SEC', 'EVENT_DURATION', 'RESULT', 'PROPERTIES', 'INSTANCE_NAME',
    'USER_ID', 'PROJECT_ID', 'HOST_NAME (PHYSICAL)')
V03_HOST_HEADER = ('EVENT_TIME', 'EVENT_TIME_SEC', 'HOST_NAME (PHYSICAL)',
                   'EVENT', 'PROPERTIES')


# -- the format: v0.2 against v0.3 ------------------------------------------

def test_v03_instance_table_holds_the_flavor_figures_in_properties(
        mariadb, password_file, golden_db, tmp_path):
    key = write_key_file(tmp_path / 'key', golden.GOLDEN_KEY)
    tables = {}
    for version in ('v0.2', 'v0.3'):
        run_job(job_args(mariadb, password_file, [golden_db],
                         tmp_path / version, '--mask-key-file', key,
                         '--trace-format', version, '--formats', 'csv'))
        tables[version] = read_csv(tmp_path / version)
    (v02_header,), v02_rows = tables['v0.2']
    (v03_header,), v03_rows = tables['v0.3']
    assert v02_header == V02_INSTANCE_HEADER
    assert v03_header == V03_INSTANCE_HEADER
    assert v02_rows == golden.EXPECTED_CSV
    sizes = {i['uuid']: {'memory_mb': i['memory_mb'],
                         'disk_gb': i['root_gb'], 'vcpus': i['vcpus']}
             for i in golden.INSTANCES}
    assert len(v03_rows) == len(v02_rows)
    for v02, v03 in zip(v02_rows, v03_rows):
        properties = json.loads(v03[8])
        assert properties == sizes[v03[0]]
        assert list(properties) == ['memory_mb', 'disk_gb', 'vcpus']
        assert v03[:8] + v03[9:] == v02[:8] + v02[11:]


def _v03_host_row(row):
    """A v0.2 host row -> the v0.3 row: RACK and the capacities become
    PROPERTIES, under their v0.2 field names."""
    time, seconds, host, rack, event, vcpus, memory, disk = row
    return (time, seconds, host, event, json.dumps(
        {'rack': int(rack), 'vcpu_capacity': int(vcpus),
         'memory_capacity_mb': int(memory), 'disk_capacity_gb': int(disk)},
        separators=(',', ':')))


def test_v03_host_table_holds_rack_and_capacities_in_properties(
        mariadb, nova_db, password_file, tmp_path):
    cells = [nova_db('cell1'), nova_db('cell2')]
    with mariadb.admin() as admin:
        _first_state(admin, *cells)
    run_hosts(job_args(mariadb, password_file, cells, tmp_path / 'hosts',
                       *COMMON, '--trace-format', 'v0.3'))
    (header,), rows = read_csv(tmp_path / 'hosts')
    assert header == V03_HOST_HEADER
    assert rows == sorted(map(_v03_host_row, FIRST_STATE_EVENTS))


# -- a bare-metal cloud: Nova with Ironic beside a KVM host -----------------
#
# Ironic nodes N1, N2, N3 (N3 retired: its compute node deleted), driven
# by the nova-compute service on 'ironic-compute'; a KVM host 'kvm-01'.
# Instances: VM1 on kvm-01; B1..B3 on N1, B4 on N2, B5 on N3. Leases (see
# the Blazar history below): B1 in L1; B2 starts in L2 and runs on into L3,
# which overlaps L2; B3 starts where both cover it; B4 in none; B5 in L4,
# soft-deleted as Chameleon's Blazar does; B4 after L6 was deleted early.

N1 = '11111111-aaaa-4bbb-8ccc-000000000001'
N2 = '11111111-aaaa-4bbb-8ccc-000000000002'
N3 = '11111111-aaaa-4bbb-8ccc-000000000003'
VM1, B1, B2, B3, B4, B5 = (f'bbbbbbbb-0000-4000-8000-00000000000{i}'
                           for i in range(1, 7))
BM_SIZES = (196608, 200, 48)          # memory_mb, root_gb, vcpus
VM_SIZES = (2048, 20, 1)
# instance -> (host, node, sizes, [(event, start, seconds), ...])
INSTANCES = {
    VM1: ('kvm-01', 'kvm-01.example', VM_SIZES,
          [('compute__do_build_and_run_instance', '2024-01-02 10:00:00', 30)]),
    B1: ('ironic-compute', N1, BM_SIZES,
         [('compute__do_build_and_run_instance', '2024-01-01 01:00:00', 600),
          ('compute_terminate_instance', '2024-01-04 23:00:00', 20)]),
    B2: ('ironic-compute', N1, BM_SIZES,
         [('compute__do_build_and_run_instance', '2024-01-10 00:00:00', 600),
          ('compute_reboot_instance', '2024-01-16 00:00:00', 300)]),
    B3: ('ironic-compute', N1, BM_SIZES,
         [('compute__do_build_and_run_instance', '2024-01-14 12:00:00',
           600)]),
    B4: ('ironic-compute', N2, BM_SIZES,
         [('compute__do_build_and_run_instance', '2024-01-10 00:00:00',
           600)]),
    B5: ('ironic-compute', N3, BM_SIZES,
         [('compute__do_build_and_run_instance', '2024-01-03 00:00:00',
           600)]),
}
BAREMETAL = (B1, B2, B3, B4, B5)
EPOCH = '2023-12-31T00:00:00Z'


def _finish(start, seconds):
    return (dt.datetime.fromisoformat(start) +
            dt.timedelta(seconds=seconds)).isoformat(' ')


def nova_history(admin, cell):
    """The instances, their actions and events, and the compute nodes."""
    rows, actions, events = [], [], []
    for i, (uuid, (host, node, (memory, disk, vcpus), evs)) in enumerate(
            INSTANCES.items(), 1):
        rows.append({'id': i, 'uuid': uuid, 'user_id': f'user-{i}',
                     'project_id': 'project-bm', 'hostname': f'server-{i}',
                     'host': host, 'node': node, 'memory_mb': memory,
                     'root_gb': disk, 'vcpus': vcpus, 'deleted': 0,
                     'created_at': evs[0][1]})
        actions.append({'id': i, 'action': 'create', 'instance_uuid': uuid,
                        'start_time': evs[0][1]})
        for j, (event, start, seconds) in enumerate(evs):
            events.append({'id': 10 * i + j, 'action_id': i, 'event': event,
                           'start_time': start,
                           'finish_time': _finish(start, seconds),
                           'result': 'Success', 'host': host})
    insert(admin, cell, 'instances', rows)
    insert(admin, cell, 'instance_actions', actions)
    insert(admin, cell, 'instance_actions_events', events)
    kvm = node_row(1, 'kvm-01', '2023-12-01 00:00:00', (32, 128000, 1000))
    ironic = []
    for id_, node in ((2, N1), (3, N2), (4, N3)):
        row = node_row(id_, 'ironic-compute', '2023-12-01 00:00:00',
                       (48, 196608, 200),
                       deleted_at='2024-01-20 00:00:00' if node == N3
                       else None)
        row.update(hypervisor_hostname=node, hypervisor_type='ironic')
        ironic.append(row)
    insert(admin, cell, 'compute_nodes', [kvm] + ironic)


def run_instances(mariadb, password_file, databases, output, *extra):
    key = write_key_file(output.parent / 'key', KEY)
    return run_job(job_args(mariadb, password_file, databases, output,
                            '--mask-key-file', key, '--epoch', EPOCH,
                            '--formats', 'csv', *extra))


def hosts_by_instance(prefix):
    """instance uuid -> the set of its rows' HOST_NAME (PHYSICAL)."""
    (header,), rows = read_csv(prefix)
    column = header.index('HOST_NAME (PHYSICAL)')
    found = {}
    for row in rows:
        found.setdefault(row[0], set()).add(row[column])
    return found


@pytest.mark.parametrize('instance_type', ['vm', 'baremetal', 'auto'])
def test_the_physical_host_by_instance_type(mariadb, nova_db, password_file,
                                            tmp_path, instance_type):
    cell = nova_db('bm')
    with mariadb.admin() as admin:
        nova_history(admin, cell)
    summary = run_instances(mariadb, password_file, [cell],
                            tmp_path / 'trace', '--instance-type',
                            instance_type)
    host, node = ({uuid: {masked(row[i])} for uuid, row in INSTANCES.items()}
                  for i in (0, 1))
    expected = {'vm': host,
                'baremetal': node,
                # VM1's compute node is QEMU's: its host stays
                'auto': {**node, VM1: host[VM1]}}[instance_type]
    assert hosts_by_instance(tmp_path / 'trace') == expected
    assert summary.linked == {
        'vm': {},
        'baremetal': {'baremetal_instances': 6},
        'auto': {'ironic_nodes': 3, 'baremetal_instances': 5},
    }[instance_type]


# -- Blazar: leases of nodes -------------------------------------------------

L1, L2, L3, L4, L5, L6 = (f'1ea5e000-0000-4000-8000-00000000000{i}'
                          for i in range(1, 7))
# lease -> (node, start, end, when soft-deleted)
LEASES = {
    L1: (N1, '2024-01-01 00:00:00', '2024-01-05 00:00:00', None),
    L2: (N1, '2024-01-08 00:00:00', '2024-01-15 00:00:00', None),
    L3: (N1, '2024-01-14 00:00:00', '2024-01-20 00:00:00', None),  # ∩ L2
    L4: (N3, '2024-01-02 00:00:00', '2024-01-06 00:00:00',
         '2024-01-06 00:00:00'),
    L5: (N2, '2024-01-20 00:00:00', '2024-01-25 00:00:00', None),
    # deleted early: over before B4 starts on Jan 10, its end_date kept
    L6: (N2, '2024-01-05 00:00:00', '2024-01-12 00:00:00',
         '2024-01-08 00:00:00'),
}
COMPUTEHOSTS = {N1: 'c0ffee00-0000-4000-8000-000000000001',
                N2: 'c0ffee00-0000-4000-8000-000000000002',
                N3: 'c0ffee00-0000-4000-8000-000000000003'}
# What each instance's PROPERTIES must say of its lease: (lease, start and
# end in days from the epoch, 2023-12-31).
INSTANCE_LEASES = {B1: (L1, 1, 5),
                   B2: (L2, 8, 15),    # its first event, not its last
                   B3: (L3, 14, 20),   # both cover it: L3 began last
                   B5: (L4, 2, 6)}     # Chameleon: soft-deleted rows


def computehost_row(node, created='2023-12-01 00:00:00', **extra):
    return {'id': HOST_IDS[node], 'hypervisor_hostname': node,
            'vcpus': 48, 'cpu_info': '{}', 'hypervisor_type': 'ironic',
            'hypervisor_version': 1, 'memory_mb': 196608, 'local_gb': 200,
            'trust_id': 'trust', 'availability_zone': 'nova',
            'created_at': created, 'updated_at': created, **extra}


def blazar_leases(admin, blazar):
    """Hosts, leases and their reservations and allocations; N3's host and
    L4's rows soft-deleted as Chameleon's Blazar does."""
    deleted = {'deleted': None}
    insert(admin, blazar, 'computehosts', [
        computehost_row(N1, **deleted), computehost_row(N2, **deleted),
        computehost_row(N3, deleted=COMPUTEHOSTS[N3],
                        deleted_at='2024-01-20 00:00:00')])
    leases, reservations, allocations = [], [], []
    for i, (lease, (node, start, end, gone)) in enumerate(LEASES.items(), 1):
        soft = ({'deleted': lease, 'deleted_at': gone} if gone
                else {'deleted': None})
        leases.append({'id': lease, 'name': f'lease-{i}', 'start_date': start,
                       'end_date': end, 'user_id': 'user', 'status':
                       'TERMINATED', 'project_id': 'project-bm', **soft})
        reservation = f'5e5e0000-0000-4000-8000-00000000000{i}'
        reservations.append({'id': reservation, 'lease_id': lease,
                             'resource_type': 'physical:host',
                             'status': 'deleted', **soft})
        allocations.append({'id': f'a110c000-0000-4000-8000-00000000000{i}',
                            'compute_host_id': COMPUTEHOSTS[node],
                            'reservation_id': reservation, **soft})
    insert(admin, blazar, 'leases', leases)
    insert(admin, blazar, 'reservations', reservations)
    insert(admin, blazar, 'computehost_allocations', allocations)


# The tables the reader may SELECT (README: what the database user needs).
IRONIC_GRANTS = ('nodes',)
BLAZAR_GRANTS = ('computehosts', 'computehost_extra_capabilities',
                 'resource_properties', 'computehost_allocations',
                 'reservations', 'leases')


class ServiceDatabases:
    """Factory of fresh Ironic and Blazar databases with the real schemas,
    readable by the trace reader with SELECT on the tables read."""

    def __init__(self, server):
        self.server = server
        self.created = []

    def __call__(self, kind, name=None, **options):
        name = name or f'{kind}_{len(self.created)}_{id(self)}'
        create, grants = {'ironic': (create_ironic_database, IRONIC_GRANTS),
                          'blazar': (create_blazar_database, BLAZAR_GRANTS)
                          }[kind]
        with self.server.admin() as admin:
            create(admin, name, drop=True, **options)
            with admin.cursor() as cursor:
                for table in grants:
                    cursor.execute(f"GRANT SELECT ON `{name}`.`{table}` "
                                   f"TO '{READER}'@'%'")
        self.created.append(name)
        return name


@pytest.fixture
def service_db(mariadb):
    databases = ServiceDatabases(mariadb)
    yield databases
    drop_databases(mariadb, databases.created)


def leased_cloud(mariadb, nova_db, service_db):
    """A bare-metal cloud in three databases: Nova's (``nova_history``),
    Ironic's nodes N1..N3 and Blazar's leases and the nodes'
    capabilities; (cell, ironic, blazar)."""
    cell, ironic = nova_db('bm'), service_db('ironic')
    blazar = service_db('blazar', chameleon=True)
    with mariadb.admin() as admin:
        nova_history(admin, cell)
        blazar_leases(admin, blazar)
        ironic_inventory(admin, ironic)
        blazar_capabilities(admin, blazar, {
            node: CAPABILITIES[node] for node in (N1, N2, N3)})
    return cell, ironic, blazar


def expected_properties(uuid):
    """The PROPERTIES an instance's rows must hold, written out."""
    memory, disk, vcpus = INSTANCES[uuid][2]
    properties = {'memory_mb': memory, 'disk_gb': disk, 'vcpus': vcpus}
    if uuid in INSTANCE_LEASES:
        lease, start, end = INSTANCE_LEASES[uuid]
        properties.update(lease_id=masked(lease), lease_start_sec=start * DAY,
                          lease_end_sec=end * DAY)
    return properties


def properties_by_instance(prefix):
    (header,), rows = read_csv(prefix)
    column = header.index('PROPERTIES')
    found = {}
    for row in rows:
        found.setdefault(row[0], []).append(json.loads(row[column]))
    return found


@pytest.mark.parametrize('source', ['server', 'server in chunks', 'dump'])
def test_each_bare_metal_instance_gets_the_lease_it_ran_in(
        mariadb, nova_db, service_db, password_file, tmp_path, source,
        monkeypatch):
    if source == 'server in chunks':
        # Blazar's uuid ids are read after the last one read, two rows a
        # query here.
        monkeypatch.setattr(mysql, 'CHUNK_IDS', 2)
    cell, blazar = nova_db('bm'), service_db('blazar', chameleon=True)
    with mariadb.admin() as admin:
        nova_history(admin, cell)
        blazar_leases(admin, blazar)
    args = ['--instance-type', 'auto', '--trace-format', 'v0.3',
            '--blazar-database', blazar]
    if source != 'dump':
        summary = run_instances(mariadb, password_file, [cell],
                                tmp_path / 'trace', *args)
    else:   # one dump of both databases
        dump_state(mariadb, [cell, blazar], tmp_path / 'all.sql',
                   '2024-02-01 00:00:00')
        key = write_key_file(tmp_path / 'key', KEY)
        summary = run_job(['--dump', str(tmp_path / 'all.sql'),
                           '--databases', cell, '--output',
                           str(tmp_path / 'trace'), '--mask-key-file', key,
                           '--epoch', EPOCH, '--formats', 'csv', *args])
    found = properties_by_instance(tmp_path / 'trace')
    assert found == {uuid: [expected_properties(uuid)] * len(events)
                     for uuid, (_, _, _, events) in INSTANCES.items()}
    assert summary.linked == {'ironic_nodes': 3, 'baremetal_instances': 5,
                              'node_leases': 6,
                              'baremetal_instances_without_lease': 1}


def test_the_command_on_bare_metal_writes_properties_in_every_format(
        mariadb, nova_db, service_db, password_file, tmp_path, capsys):
    """Through the command line: every format's PROPERTIES parse as the
    same JSON objects; the leak check (raw node uuids, lease ids, the key)
    passes; the summary and the manifest say what the link found."""
    cell, blazar = nova_db('bm'), service_db('blazar', chameleon=True)
    with mariadb.admin() as admin:
        nova_history(admin, cell)
        blazar_leases(admin, blazar)
    key = write_key_file(tmp_path / 'secrets', KEY)
    out = tmp_path / 'out' / 'trace'
    assert cli.main(['instances', *job_args(
        mariadb, password_file, [cell], out, '--mask-key-file', key,
        '--epoch', EPOCH, '--instance-type', 'baremetal', '--trace-format',
        'v0.3', '--blazar-database', blazar,
        '--formats', 'csv,avro,jsonl,parquet')]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert ('  bare-metal instances 6, without a lease 2 (their rows are in '
            'the trace; leases of nodes 6)') in printed
    # --instance-type baremetal: VM1 too, on a node Blazar has no lease of
    expected = sorted((uuid, json.dumps(expected_properties(uuid),
                                        sort_keys=True))
                      for uuid, (_, _, _, events) in INSTANCES.items()
                      for _ in events)
    parquet = [r for path in shards.find(str(out), ('parquet',))
               for r in pq.read_table(path).to_pylist()]
    for records in (read_avro(out), read_jsonl(out), parquet):
        assert sorted((r['instance_uuid'], json.dumps(
            json.loads(r['properties']), sort_keys=True))
            for r in records) == expected
        assert all('memory_mb' not in r for r in records)
    manifest = json.loads((out.parent / 'trace.manifest.json').read_text())
    assert manifest['baremetal'] == {
        'instance_type': 'baremetal', 'instances': 6,
        'instances_node_unknown': 0, 'node_leases': 6,
        'instances_without_lease': 2}
    assert manifest['masking']['fields'] == [
        'user_id', 'project_id', 'hostname', 'host', 'lease_id']


# -- the host table of Ironic nodes and Blazar capabilities ------------------
#
# Three states (nightly dumps of Jan 10, 20 and 30): N1 gets a new node
# type (Jan 15) and is made unreservable in Blazar (Jan 25); N2 leaves
# maintenance (Jan 12); N3 gets more cpus in Ironic (Jan 16) and is retired:
# gone from Ironic, its Blazar host soft-deleted, by the third dump; N4 is
# added (Jan 18). Racks R1, R2, R3 are indexes 0, 1, 2.

N4 = '11111111-aaaa-4bbb-8ccc-000000000004'
NOT_A_NODE = '11111111-aaaa-4bbb-8ccc-000000000099'
HOST_IDS = {**COMPUTEHOSTS, N4: 'c0ffee00-0000-4000-8000-000000000004',
            NOT_A_NODE: 'c0ffee00-0000-4000-8000-000000000099'}
OLD_N2_HOST = 'c0ffee00-0000-4000-8000-000000000022'   # soft-deleted
PROPERTY_IDS = {'node_type': 'b0b0b0b0-0000-4000-8000-000000000001',
                'placement.rack': 'b0b0b0b0-0000-4000-8000-000000000002',
                'architecture.platform_type':
                    'b0b0b0b0-0000-4000-8000-000000000003',
                'gpu.count': 'b0b0b0b0-0000-4000-8000-000000000004'}
# node -> {capability: value}, as the first state has them
CAPABILITIES = {
    N1: {'node_type': 'compute_skylake', 'placement.rack': 'R2',
         'architecture.platform_type': 'x86_64', 'gpu.count': '0'},
    N2: {'node_type': 'gpu_rtx', 'placement.rack': 'R1'},
    N3: {'node_type': 'compute_skylake', 'placement.rack': 'R3'},
    NOT_A_NODE: {'node_type': 'compute_skylake'},
}


def ironic_node(id_, uuid, created, updated, cpus=48, maintenance=0,
                state='available'):
    return {'id': id_, 'uuid': uuid, 'name': f'node-{id_}',
            'created_at': created, 'updated_at': updated,
            'maintenance': maintenance, 'provision_state': state,
            'driver': 'ipmi', 'conductor_group': '', 'retired': 0,
            'properties': json.dumps({'cpus': cpus, 'memory_mb': 196608,
                                      'local_gb': 200, 'cpu_arch': 'x86_64'})}


def capability_rows(node, capabilities, older=False, start=0):
    """``computehost_extra_capabilities`` rows of a node: named by
    ``resource_properties``, or (``older`` Blazar) by their own column."""
    rows = []
    for i, (name, value) in enumerate(capabilities.items(), start):
        row = {'id': f'cab00000-0000-4000-8000-{i:012d}',
               'computehost_id': HOST_IDS[node], 'capability_value': value,
               'created_at': '2023-12-01 00:00:00'}
        if older:
            row['capability_name'] = name
        else:
            row['property_id'] = PROPERTY_IDS[name]
        rows.append(row)
    return rows


def first_inventory(admin, ironic, blazar, older=False, chameleon=True):
    """The first state; ``older``: Blazar's older capability layout;
    ``chameleon``: with a soft-deleted Blazar host."""
    ironic_inventory(admin, ironic)
    soft = {'deleted': None} if chameleon else {}
    insert(admin, blazar, 'computehosts', [
        computehost_row(N1, **soft), computehost_row(N2, **soft),
        computehost_row(N3, **soft),
        {**computehost_row(N1, **soft), 'id': HOST_IDS[NOT_A_NODE],
         'hypervisor_hostname': NOT_A_NODE}] + ([
            {**computehost_row(N2), 'id': OLD_N2_HOST,
             'deleted': OLD_N2_HOST}] if chameleon else []))
    blazar_capabilities(admin, blazar, CAPABILITIES, older)


def ironic_inventory(admin, ironic):
    insert(admin, ironic, 'nodes', [
        ironic_node(1, N1, '2023-11-01 00:00:00', '2024-01-05 00:00:00'),
        ironic_node(2, N2, '2023-11-02 00:00:00', '2024-01-06 00:00:00',
                    cpus='24', maintenance=1),
        ironic_node(3, N3, '2023-11-03 00:00:00', '2024-01-03 00:00:00')])


def blazar_capabilities(admin, blazar, capabilities, older=False):
    if not older:
        insert(admin, blazar, 'resource_properties', [
            {'id': id_, 'resource_type': 'physical:host',
             'property_name': name, 'private': 0}
            for name, id_ in PROPERTY_IDS.items()])
    rows, start = [], 0
    for node, named in capabilities.items():
        rows += capability_rows(node, named, older, start)
        start += len(named)
    insert(admin, blazar, 'computehost_extra_capabilities', rows)


def second_inventory(admin, ironic, blazar):
    with admin.cursor() as cursor:
        cursor.execute(
            f"UPDATE `{blazar}`.computehost_extra_capabilities SET "
            f"capability_value = 'compute_cascadelake', updated_at = "
            f"'2024-01-15 00:00:00' WHERE computehost_id = '{HOST_IDS[N1]}' "
            f"AND property_id = '{PROPERTY_IDS['node_type']}'")
        cursor.execute(f"UPDATE `{ironic}`.nodes SET maintenance = 0, "
                       f"updated_at = '2024-01-12 00:00:00' WHERE id = 2")
        more_cpus = {'cpus': 64, 'memory_mb': 196608, 'local_gb': 200}
        cursor.execute(
            f"UPDATE `{ironic}`.nodes SET properties = "
            f"'{json.dumps(more_cpus)}', updated_at = "
            f"'2024-01-16 00:00:00' WHERE id = 3")
    insert(admin, ironic, 'nodes', [
        ironic_node(4, N4, '2024-01-18 00:00:00', '2024-01-18 00:00:00')])
    insert(admin, blazar, 'computehosts', [
        computehost_row(N4, '2024-01-18 00:00:00', deleted=None)])
    insert(admin, blazar, 'computehost_extra_capabilities', capability_rows(
        N4, {'node_type': 'gpu_rtx', 'placement.rack': 'R1'}, start=100))


def third_inventory(admin, ironic, blazar):
    with admin.cursor() as cursor:
        cursor.execute(f'DELETE FROM `{ironic}`.nodes WHERE id = 3')
        cursor.execute(f"UPDATE `{blazar}`.computehosts SET deleted = id, "
                       f"deleted_at = '2024-01-29 00:00:00' WHERE id = "
                       f"'{HOST_IDS[N3]}'")
        cursor.execute(f"UPDATE `{blazar}`.computehosts SET reservable = 0, "
                       f"updated_at = '2024-01-25 00:00:00' WHERE id = "
                       f"'{HOST_IDS[N1]}'")


def _sec(day):
    """Seconds from the epoch 2023-12-31 of a day ('2024-01-15'); -1
    before it."""
    return max(-1, (dt.date.fromisoformat(day) - dt.date(2023, 12, 31)).days
               * DAY)


def v03_row(day, node, event, properties):
    return (f'{day}T00:00:00Z', str(_sec(day)), masked(node), event,
            json.dumps(properties, separators=(',', ':')))


def v02_row(day, node, event, rack, cpus):
    return (f'{day}T00:00:00Z', str(_sec(day)), masked(node), str(rack),
            event, str(cpus), '196608', '200')


N1_TYPE = {'node_type': 'compute_skylake', 'rack': 1,
           'architecture.platform_type': 'x86_64'}
N1_NEW = {**N1_TYPE, 'node_type': 'compute_cascadelake'}
GPU_R1 = {'node_type': 'gpu_rtx', 'rack': 0}
SKYLAKE_R3 = {'node_type': 'compute_skylake', 'rack': 2}
SERIES_V03 = sorted([
    v03_row('2023-11-01', N1, 'CREATE', N1_TYPE),
    v03_row('2024-01-15', N1, 'UPDATE', N1_NEW),
    v03_row('2024-01-25', N1, 'DISABLE', N1_NEW),
    v03_row('2023-11-02', N2, 'CREATE', GPU_R1),
    v03_row('2024-01-06', N2, 'DISABLE', GPU_R1),
    v03_row('2024-01-12', N2, 'ENABLE', GPU_R1),
    v03_row('2023-11-03', N3, 'CREATE', SKYLAKE_R3),
    v03_row('2024-01-30', N3, 'DELETE', SKYLAKE_R3),
    v03_row('2024-01-18', N4, 'CREATE', GPU_R1),
])
SERIES_V02 = sorted([
    v02_row('2023-11-01', N1, 'CREATE', 1, 48),
    v02_row('2024-01-25', N1, 'DISABLE', 1, 48),
    v02_row('2023-11-02', N2, 'CREATE', 0, 24),
    v02_row('2024-01-06', N2, 'DISABLE', 0, 24),
    v02_row('2024-01-12', N2, 'ENABLE', 0, 24),
    v02_row('2023-11-03', N3, 'CREATE', 2, 48),
    v02_row('2024-01-16', N3, 'UPDATE', 2, 64),
    v02_row('2024-01-30', N3, 'DELETE', 2, 64),
    v02_row('2024-01-18', N4, 'CREATE', 0, 48),
])


def nightly_dumps(mariadb, ironic, blazar, folder):
    """The three states, dumped (named against their order)."""
    folder.mkdir()
    states = ((first_inventory, '2024-01-10 00:00:00'),
              (second_inventory, '2024-01-20 00:00:00'),
              (third_inventory, '2024-01-30 00:00:00'))
    for (change, completed), name in zip(states, ('c.sql', 'b.sql', 'a.sql')):
        with mariadb.admin() as admin:
            change(admin, ironic, blazar)
        dump_state(mariadb, [ironic, blazar], folder / name, completed)


@pytest.mark.parametrize('version', ['v0.2', 'v0.3'])
def test_a_series_of_dumps_gives_node_events_and_a_retired_node_delete(
        mariadb, service_db, tmp_path, version):
    ironic, blazar = (service_db('ironic'),
                      service_db('blazar', chameleon=True))
    nightly_dumps(mariadb, ironic, blazar, tmp_path / 'nightly')
    key = write_key_file(tmp_path / 'key', KEY)
    summary = run_hosts(['--dump', str(tmp_path / 'nightly'),
                         '--ironic-database', ironic, '--blazar-database',
                         blazar, '--output', str(tmp_path / 'hosts'),
                         '--mask-key-file', key, '--epoch', EPOCH,
                         '--trace-format', version, '--formats', 'csv'])
    (header,), rows = read_csv(tmp_path / 'hosts')
    if version == 'v0.3':
        assert header == V03_HOST_HEADER
        assert rows == SERIES_V03
    else:
        assert rows == SERIES_V02
    events = summary.tables['host_events']
    assert (events.read, events.in_trace) == (9, 9)
    nodes, hosts = summary.tables['ironic_nodes'], summary.tables[
        'blazar_hosts']
    assert (nodes.read, nodes.in_trace) == (3 + 4 + 3, 3 + 4 + 3)
    # each state: the host of no node; the old N2 host (and, last, N3's)
    # soft-deleted
    assert (hosts.read, hosts.in_trace) == (5 + 6 + 6, 3 + 4 + 3)
    assert hosts.left_out == {'no_ironic_node': 3, 'deleted': 4}
    capabilities = summary.tables['blazar_capabilities']
    # NOT_A_NODE's, each state; N3's, of its soft-deleted host, the last
    assert capabilities.left_out['no_host'] == 3 + 2
    for table in summary.tables.values():
        assert table.balanced


def older_blazar(admin, blazar):
    """Blazar's older layout: each capability row names itself, and there
    is no resource_properties."""
    with admin.cursor() as cursor:
        cursor.execute(
            f'ALTER TABLE `{blazar}`.computehost_extra_capabilities '
            f'DROP FOREIGN KEY computehost_resource_property_id_fk, '
            f'DROP COLUMN property_id, '
            f'ADD COLUMN capability_name varchar(64) NOT NULL')
        cursor.execute(f'DROP TABLE `{blazar}`.resource_properties')


@pytest.mark.parametrize('layout', ['current', 'older'])
def test_one_state_from_the_server_in_either_blazar_layout(
        mariadb, service_db, password_file, tmp_path, layout):
    ironic, blazar = service_db('ironic'), service_db('blazar')
    with mariadb.admin() as admin:
        if layout == 'older':
            older_blazar(admin, blazar)
        first_inventory(admin, ironic, blazar, older=layout == 'older',
                        chameleon=False)
    key = write_key_file(tmp_path / 'key', KEY)
    summary = run_hosts(job_args(
        mariadb, password_file, ['nova'], tmp_path / 'hosts',
        '--ironic-database', ironic, '--blazar-database', blazar,
        '--mask-key-file', key, '--epoch', EPOCH, '--trace-format', 'v0.3',
        '--formats', 'csv'))
    _, rows = read_csv(tmp_path / 'hosts')
    assert rows == sorted([
        v03_row('2023-11-01', N1, 'CREATE', N1_TYPE),
        v03_row('2023-11-02', N2, 'CREATE', GPU_R1),
        v03_row('2024-01-06', N2, 'DISABLE', GPU_R1),
        v03_row('2023-11-03', N3, 'CREATE', SKYLAKE_R3)])
    capabilities = summary.tables['blazar_capabilities']
    # gpu.count is not listed; NOT_A_NODE's host is no Ironic node
    assert capabilities.left_out == {'not_listed': 1, 'no_host': 1}
    assert capabilities.in_trace == 7


def test_the_trace_command_masks_an_instance_node_as_the_host_table_does(
        mariadb, nova_db, service_db, password_file, tmp_path, capsys):
    """Both tables in one run, under the run's random key: each bare-metal
    instance's host is a node the host table creates; the VM's host is
    not in it, and counted."""
    cell, ironic = nova_db('bm'), service_db('ironic')
    blazar = service_db('blazar', chameleon=True)
    with mariadb.admin() as admin:
        nova_history(admin, cell)
        blazar_leases(admin, blazar)        # N3's Blazar host: deleted
        ironic_inventory(admin, ironic)
        blazar_capabilities(admin, blazar, {
            node: CAPABILITIES[node] for node in (N1, N2, N3)})
    out = tmp_path / 'out' / 'trace'
    assert cli.main(['trace', *job_args(
        mariadb, password_file, [cell], out, '--epoch', EPOCH,
        '--instance-type', 'auto', '--trace-format', 'v0.3',
        '--ironic-database', ironic, '--blazar-database', blazar,
        '--formats', 'csv')]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert ('  hosts of instance events 4, without a compute node row 1 '
            '(their instance rows are in the trace)') in printed
    (header,), instance_rows = read_csv(f'{out}-instances')
    _, host_rows = read_csv(f'{out}-hosts')
    host = header.index('HOST_NAME (PHYSICAL)')
    created = {row[2]: json.loads(row[4]) for row in host_rows
               if row[3] == 'CREATE'}
    nodes = {row[0]: row[host] for row in instance_rows}
    # the same node, the same mask: the host table knows B1..B5's nodes
    assert {uuid: created.get(masked_node) for uuid, masked_node
            in nodes.items()} == {
        VM1: None, B1: N1_TYPE, B2: N1_TYPE, B3: N1_TYPE, B4: GPU_R1,
        B5: {}}     # N3's Blazar host is deleted: no capabilities
    assert len({nodes[B1], nodes[B4], nodes[B5], nodes[VM1]}) == 4
    # the masks of a random key are not those of the test key
    assert nodes[B1] != masked(N1)


# -- the synthetic bare-metal cloud -----------------------------------------
#
# Its own model (synth/baremetal.py) says what the tables must hold; the
# expected events and leases are computed here from the model's objects.

SYNTH = dict(seed=4, start='2024-01-01', days=90)
SYNTH_EPOCH = '2023-12-01T00:00:00Z'
SYNTH_EPOCH_SEC = 1701388800    # 2023-12-01, seconds since 1970
START_SEC = 1704067200          # 2024-01-01


def _synth(**names):
    return BareMetalHistory(600, **SYNTH, **names)


def expected_node_events(history, times):
    """(masked node, event, seconds from the synth epoch) of each node
    over the states at ``times`` (seconds of the history), from the model:
    CREATE when first seen (at its creation), DISABLE and ENABLE as its
    maintenance shows at the states (at the window's start and end, when
    Ironic's updated_at moved), DELETE at the first state without it."""
    events = set()
    for node in history.nodes:
        seen, disabled = False, False
        for t in times:
            window = node.maintenance
            maintained = window is not None and window[0] <= t < window[1]
            if node.alive(t):
                if not seen:
                    seen = True
                    events.add((node.uuid, 'CREATE', node.created))
                if maintained != disabled:
                    events.add((node.uuid, 'DISABLE' if maintained
                                else 'ENABLE', window[0 if maintained
                                                      else 1]))
                    disabled = maintained
            elif seen:
                events.add((node.uuid, 'DELETE', t))
                break
    return {(masked(uuid), event, max(-1, START_SEC + t - SYNTH_EPOCH_SEC))
            for uuid, event, t in events}


def test_synth_baremetal_dump_series_shows_nodes_added_maintained_retired(
        tmp_path):
    history = _synth()
    times = [int(history.span * 0.4), int(history.span * 0.7), history.span]
    retired = [n for n in history.nodes if n.retired is not None and
               n.created <= times[0] <= n.retired < times[-1]]
    added = [n for n in history.nodes if times[0] < n.created <= times[-1]]
    assert len(retired) == 3 and len(added) == 3     # the model's seed 4
    folder = tmp_path / 'nightly'
    folder.mkdir()
    for i, at in enumerate(times):
        write_baremetal_dump(folder / f'state-{i}.sql.gz', history, at)
    key = write_key_file(tmp_path / 'key', KEY)
    summary = run_hosts(['--dump', str(folder), '--ironic-database',
                         'ironic', '--blazar-database', 'blazar',
                         '--output', str(tmp_path / 'hosts'),
                         '--mask-key-file', key, '--epoch', SYNTH_EPOCH,
                         '--trace-format', 'v0.3', '--formats', 'csv'])
    _, rows = read_csv(tmp_path / 'hosts')
    assert {(host, event, int(sec)) for _, sec, host, event, _ in rows} == \
        expected_node_events(history, times)
    assert len(rows) == summary.trace_rows
    deleted = {host for _, _, host, event, _ in rows if event == 'DELETE'}
    assert deleted == {masked(n.uuid) for n in retired}
    racks = sorted({n.rack for n in history.nodes
                    if any(n.alive(t) for t in times)})
    for _, _, host, event, properties in rows:
        node, = (n for n in history.nodes if masked(n.uuid) == host)
        properties = json.loads(properties)
        assert properties['node_type'] == node.node_type
        assert properties['rack'] == racks.index(node.rack)


def test_synth_baremetal_instances_get_the_leases_the_model_gave_them(
        mariadb, password_file, tmp_path):
    suffix = f'{id(tmp_path) % 10**6}'
    cells = (f'bm_cell0_{suffix}', f'bm_cell1_{suffix}')
    history = _synth(cells=cells, ironic=f'bm_ironic_{suffix}',
                     blazar=f'bm_blazar_{suffix}')
    overlapping = [(a, b) for a in history.leases for b in history.leases
                   if a.node is b.node and a.deleted is not None
                   and a.start < b.start < a.end]
    assert overlapping           # planned spans overlap on a node
    with mariadb.admin() as admin:
        load_baremetal_mysql(admin, history)
        with admin.cursor() as cursor:
            for db in history.databases:
                cursor.execute(f"GRANT SELECT ON `{db}`.* TO '{READER}'@'%'")
    try:
        key = write_key_file(tmp_path / 'key', KEY)
        summary = run_job(job_args(
            mariadb, password_file, cells, tmp_path / 'trace',
            '--mask-key-file', key, '--epoch', SYNTH_EPOCH,
            '--instance-type', 'auto', '--trace-format', 'v0.3',
            '--blazar-database', history.blazar, '--formats', 'csv'))
    finally:
        drop_databases(mariadb, history.databases)
    found = properties_by_instance(tmp_path / 'trace')
    model = {i.uuid: i for i in history.instances}
    without = 0
    for uuid, rows in found.items():
        lease = model[uuid].lease
        # a lease ends when deleted, if that came first and by the end
        ends = lease and (lease.ends if lease.ends <= history.span
                          else lease.end)
        expected = {} if lease is None else {
            'lease_id': masked(lease.id),
            'lease_start_sec': START_SEC + lease.start - SYNTH_EPOCH_SEC,
            'lease_end_sec': START_SEC + ends - SYNTH_EPOCH_SEC}
        without += lease is None
        for properties in rows:
            assert {k: v for k, v in properties.items()
                    if k.startswith('lease')} == expected, uuid
    assert 0 < without < len(found)
    assert summary.linked['baremetal_instances_without_lease'] == without
    assert summary.linked['baremetal_instances'] == len(found)


def test_synth_command_writes_a_bare_metal_dump(tmp_path, capsys):
    path = tmp_path / 'bm.sql.gz'
    synth_main(['--baremetal', '--instances', '100', '--seed', '1',
                '--start', '2024-01-01', '--days', '30', '--dump',
                str(path)])
    printed = capsys.readouterr().out
    assert printed.startswith('synth: wrote ')
    assert 'into blazar, ironic, nova_cell1 at ' in printed
    text = gzip.decompress(path.read_bytes()).decode()
    for db in ('nova_cell0', 'nova_cell1', 'ironic', 'blazar'):
        assert f'USE `{db}`;' in text
    assert '-- Dump completed on 2024-01-31 00:00:00' in text
    with pytest.raises(UserError, match='audit exports hold Nova tables'):
        synth_main(['--baremetal', '--instances', '10', '--audit-dir',
                    str(tmp_path / 'audit')])


@pytest.mark.parametrize('job, args, message', [
    (InstancesJob, ['--blazar-database', 'blazar'],
     '--blazar-database gives bare-metal instances their leases, which '
     'v0.3 PROPERTIES hold: add --instance-type baremetal (or auto) and '
     '--trace-format v0.3'),
    (InstancesJob, ['--instance-type', 'auto', '--audit-dir', 'exports'],
     '--instance-type auto tells bare metal by the compute nodes, which '
     'audit exports do not hold: give --instance-type baremetal or vm'),
    (InstancesJob, ['--instance-type', 'baremetal', '--api'],
     '--instance-type baremetal reads instances.node from the databases or '
     'dumps; the compute API source traces virtual machines'),
    (HostsJob, ['--instance-type', 'baremetal'],
     '--instance-type tells instances apart; the host table of Ironic '
     'nodes comes with --ironic-database'),
    (HostsJob, ['--blazar-database', 'blazar'],
     '--blazar-database gives Ironic nodes their capabilities: add '
     '--ironic-database'),
    (HostsJob, ['--ironic-database', 'ironic', '--properties', 'node_type'],
     '--properties chooses what v0.3 PROPERTIES hold; v0.2 has RACK and '
     'capacities: add --trace-format v0.3'),
    (HostsJob, ['--ironic-database', 'ironic', '--rack-regex', 'r(.)'],
     '--rack-regex tells racks from host names; Ironic nodes have theirs '
     'in Blazar (placement.rack)'),
    (HostsJob, ['--properties', 'node_type'],
     '--properties names figures of Ironic nodes: add --ironic-database'),
    (InstancesJob, ['--properties', 'node_type'],
     '--properties names figures of Ironic nodes: add --ironic-database'),
    (InstancesJob, ['--ironic-database', 'ironic'],
     "--ironic-database gives bare-metal instances their node's figures, "
     'which v0.3 PROPERTIES hold: add --instance-type baremetal (or auto) '
     'and --trace-format v0.3'),
])
def test_bare_metal_options_that_do_not_fit_are_one_line_errors(
        tmp_path, job, args, message):
    with pytest.raises(UserError) as error:
        job(PipelineOptions(['--output', str(tmp_path / 'out'), *args]))
    assert str(error.value) == message
