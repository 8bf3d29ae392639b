"""``starcompactor verify`` on a bare-metal trace, against real MariaDB:
with ``--ironic-database`` and ``--blazar-database`` it also looks for the
raw Ironic node uuids (the hosts of both tables) and Blazar lease ids (in
v0.3 PROPERTIES, a JSON object field). The cloud is ``test_baremetal``'s:
Nova with Ironic nodes N1..N3, Blazar leases L1..L6."""
import pytest

import test_baremetal as bm
from helpers import job_args, write_key_file
from starcompactor.pipeline import cli, shards
from test_baremetal import service_db  # noqa: F401 (a fixture)


@pytest.fixture
def bare_metal_trace(mariadb, nova_db, service_db,  # noqa: F811
                     password_file, tmp_path):
    """A v0.3 ``trace`` of the bare-metal cloud, masked with ``bm.KEY``;
    (its prefix, the source options verify needs)."""
    cell, ironic, blazar = bm.leased_cloud(mariadb, nova_db, service_db)
    key = write_key_file(tmp_path / 'secrets', bm.KEY)
    out = tmp_path / 'trace'
    assert cli.main(['trace', *job_args(
        mariadb, password_file, [cell], out, '--mask-key-file', key,
        '--epoch', bm.EPOCH, '--instance-type', 'baremetal',
        '--trace-format', 'v0.3', '--ironic-database', ironic,
        '--blazar-database', blazar, '--formats', 'csv')]) == 0
    # the source options: job_args without its --output
    source = job_args(mariadb, password_file, [cell], 'unused')[:-2] + [
        '--ironic-database', ironic, '--blazar-database', blazar,
        '--mask-key-file', key]
    return str(out), source


def plant(prefix, masked, raw):
    """Replace the first masked value in the table's CSV shard with the
    raw one; the shard."""
    shard, = shards.find(prefix, ('csv',))
    with open(shard, encoding='utf-8') as f:
        text = f.read()
    assert masked in text
    with open(shard, 'w', encoding='utf-8') as f:
        f.write(text.replace(masked, raw, 1))
    return shard


def test_a_bare_metal_trace_verifies_clean(bare_metal_trace, capsys):
    out, source = bare_metal_trace
    for table in ('instances', 'hosts'):
        assert cli.main(['verify', f'{out}-{table}', *source]) == 0
        assert 'no raw identity and no key found' in capsys.readouterr().out


def test_a_raw_node_uuid_or_lease_id_in_a_bare_metal_trace_is_a_leak(
        bare_metal_trace, capsys):
    out, source = bare_metal_trace
    capsys.readouterr()
    # the host table: a node's uuid raw, where its mask belongs
    hosts = plant(f'{out}-hosts', bm.masked(bm.N1), bm.N1)
    assert cli.main(['verify', f'{out}-hosts', *source]) == 1
    printed = capsys.readouterr()
    assert printed.err.strip() == 'starcompactor: error: 1 leaks in 1 files'
    assert f'LEAK {hosts} row ' in printed.out
    assert 'a raw identity in a field' in printed.out
    # the instance table: B4's node as its host, and B1's lease (L1)
    # inside PROPERTIES
    plant(f'{out}-instances', bm.masked(bm.N2), bm.N2)
    instances = plant(f'{out}-instances', bm.masked(bm.L1), bm.L1)
    assert cli.main(['verify', f'{out}-instances', *source]) == 1
    printed = capsys.readouterr()
    assert printed.err.strip() == 'starcompactor: error: 2 leaks in 1 files'
    assert printed.out.count(f'LEAK {instances} row ') == 2
    for raw in (bm.N1, bm.N2, bm.L1):     # never echoed
        assert raw not in printed.out + printed.err


def test_a_database_that_holds_no_identity_is_an_error(
        bare_metal_trace, capsys):
    """A misspelled or empty --blazar-database would find nothing to look
    for, and verify would pass: it says so instead."""
    out, source = bare_metal_trace
    blazar = source.index('--blazar-database') + 1
    source[blazar] = 'no_such_blazar'
    assert cli.main(['verify', f'{out}-instances', *source]) == 1
    err = capsys.readouterr().err
    assert 'no_such_blazar' in err and err.count('\n') == 1
