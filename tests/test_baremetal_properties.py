"""The figures of a bare-metal instance's node in its v0.3 PROPERTIES
(``--ironic-database``): the node's capabilities as the host table
publishes them (the rack an index), in place of the flavor's; the flavor's
kept, and counted, for a node Ironic no longer has."""
import json

import pytest

from helpers import job_args, read_csv, write_key_file

from starcompactor.pipeline import cli
from starcompactor.pipeline.errors import UserError
from test_baremetal import (  # noqa: F401 (service_db: a fixture)
    B1, B2, B3, B4, B5, EPOCH, GPU_R1, INSTANCES, KEY, N1_TYPE, VM1,
    first_inventory, nova_history, properties_by_instance, run_instances,
    service_db)

# The first inventory's N3 (rack R3), retired: gone from Ironic. The racks
# of the nodes left are R1 and R2, indexes 0 and 1 (N1_TYPE, GPU_R1).
NODE_FIGURES = {B1: N1_TYPE, B2: N1_TYPE, B3: N1_TYPE, B4: GPU_R1}


def flavor(uuid):
    memory, disk, vcpus = INSTANCES[uuid][2]
    return {'memory_mb': memory, 'disk_gb': disk, 'vcpus': vcpus}


def retire_n3(admin, ironic):
    with admin.cursor() as cursor:
        cursor.execute(f'DELETE FROM `{ironic}`.nodes WHERE id = 3')


@pytest.fixture
def bare_metal_cloud(mariadb, nova_db, service_db):
    cell, ironic = nova_db('bm'), service_db('ironic')
    blazar = service_db('blazar', chameleon=True)
    with mariadb.admin() as admin:
        nova_history(admin, cell)
        first_inventory(admin, ironic, blazar)
        retire_n3(admin, ironic)
    return cell, ironic, blazar


def test_bare_metal_properties_hold_their_nodes_figures(
        mariadb, bare_metal_cloud, password_file, tmp_path):
    cell, ironic, blazar = bare_metal_cloud
    summary = run_instances(mariadb, password_file, [cell],
                            tmp_path / 'trace', '--instance-type', 'auto',
                            '--trace-format', 'v0.3', '--ironic-database',
                            ironic, '--blazar-database', blazar)
    expected = {uuid: [NODE_FIGURES.get(uuid) or flavor(uuid)] * len(events)
                for uuid, (_, _, _, events) in INSTANCES.items()}
    assert expected[VM1] == [flavor(VM1)] and expected[B5] == [flavor(B5)]
    assert properties_by_instance(tmp_path / 'trace') == expected
    assert summary.linked == {
        # (Blazar holds no lease here: zero counts are not kept)
        'ironic_nodes': 3, 'baremetal_instances': 5,
        'baremetal_instances_without_lease': 5,
        'baremetal_instances_without_node': 1}
    # Ironic's and Blazar's rows are looked at, not counted: the instance
    # table counts Nova's tables only, and balances.
    assert set(summary.tables) == {'instances', 'actions', 'events'}
    assert all(table.balanced for table in summary.tables.values())


def test_properties_choose_the_node_figures(
        mariadb, bare_metal_cloud, password_file, tmp_path):
    """``--properties`` names them; Ironic's own keys (cpus, ...) count when
    Blazar has no such capability."""
    cell, ironic, blazar = bare_metal_cloud
    run_instances(mariadb, password_file, [cell], tmp_path / 'trace',
                  '--instance-type', 'baremetal', '--trace-format', 'v0.3',
                  '--ironic-database', ironic, '--blazar-database', blazar,
                  '--properties', 'cpus,placement.rack')
    found = properties_by_instance(tmp_path / 'trace')
    # N2's cpus are the text '24' in Ironic's JSON; VM1's node is no
    # Ironic node; B5's was retired.
    assert found[B1][0] == {'cpus': 48, 'rack': 1}
    assert found[B4][0] == {'cpus': '24', 'rack': 0}
    assert found[VM1][0] == flavor(VM1) and found[B5][0] == flavor(B5)


def test_trace_gives_instances_the_figures_of_their_hosts_in_the_host_table(
        mariadb, bare_metal_cloud, password_file, tmp_path):
    """One run, both tables: a bare-metal instance's PROPERTIES are the
    latest figures its (masked) host has in the host table."""
    cell, ironic, blazar = bare_metal_cloud
    key = write_key_file(tmp_path / 'key', KEY)
    out = tmp_path / 'trace'
    assert cli.main(['trace', *job_args(
        mariadb, password_file, [cell], out, '--mask-key-file', key,
        '--epoch', EPOCH, '--formats', 'csv', '--instance-type', 'auto',
        '--trace-format', 'v0.3', '--ironic-database', ironic,
        '--blazar-database', blazar)]) == 0
    (host_header,), host_rows = read_csv(f'{out}-hosts')
    latest = {}
    for row in sorted(host_rows):   # by event time
        latest[row[host_header.index('HOST_NAME (PHYSICAL)')]] = json.loads(
            row[host_header.index('PROPERTIES')])
    (header,), rows = read_csv(f'{out}-instances')
    host, properties = (header.index(name) for name in
                        ('HOST_NAME (PHYSICAL)', 'PROPERTIES'))
    on_nodes = {row[0]: (latest[row[host]], json.loads(row[properties]))
                for row in rows if row[0] in NODE_FIGURES}
    assert set(on_nodes) == set(NODE_FIGURES)
    for in_host_table, in_instance_table in on_nodes.values():
        assert in_instance_table == in_host_table


@pytest.mark.parametrize('extra, message', [
    (['--trace-format', 'v0.3'], 'add --instance-type baremetal'),
    (['--instance-type', 'baremetal'], 'add --instance-type baremetal'),
])
def test_ironic_without_bare_metal_v03_is_refused(
        mariadb, bare_metal_cloud, password_file, tmp_path, extra, message):
    cell, ironic, _ = bare_metal_cloud
    with pytest.raises(UserError, match=message):
        run_instances(mariadb, password_file, [cell], tmp_path / 'trace',
                      '--ironic-database', ironic, *extra)

