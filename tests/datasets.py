"""Nova datasets shared by test modules, and databases for fixtures wider
than one test (conftest's ``nova_db`` lives as long as one test)."""
from conftest import NovaDatabases  # noqa: F401  (shared here)
from helpers import insert

def cells_with_archive(mariadb, nova_db):
    """cell0 holds a failed build; cell1 a live instance and an archived one.
    Ids collide across cells, as in real Nova."""
    cell0, cell1 = nova_db('cell0'), nova_db('cell1')
    failed = 'c0c0c0c0-0000-4000-8000-000000000001'
    live = 'c1c1c1c1-0000-4000-8000-000000000001'
    archived = 'c1c1c1c1-0000-4000-8000-000000000002'
    with mariadb.admin() as admin:
        insert(admin, cell0, 'instances', [dict(
            id=1, uuid=failed, user_id='u0', project_id='p0', hostname='f',
            host=None, memory_mb=512, root_gb=1, vcpus=1, deleted=0,
            vm_state='error')])
        insert(admin, cell0, 'instance_actions', [dict(
            id=1, action='create', instance_uuid=failed, message='Error')])
        insert(admin, cell0, 'instance_actions_events', [dict(
            id=1, action_id=1, event='conductor_schedule_and_build_instances',
            start_time='2020-01-01 00:00:01', finish_time='2020-01-01 00:00:02',
            result='Error')])
        insert(admin, cell1, 'instances', [dict(
            id=1, uuid=live, user_id='u1', project_id='p1', hostname='l',
            host='cmp-1', memory_mb=2048, root_gb=20, vcpus=2, deleted=0)])
        insert(admin, cell1, 'instance_actions', [dict(
            id=1, action='create', instance_uuid=live)])
        insert(admin, cell1, 'instance_actions_events', [dict(
            id=1, action_id=1, event='compute__do_build_and_run_instance',
            start_time='2020-01-01 00:00:03', finish_time='2020-01-01 00:00:10',
            result='Success')])
        insert(admin, cell1, 'shadow_instances', [dict(
            id=2, uuid=archived, user_id='u1', project_id='p1', hostname='a',
            host='cmp-2', memory_mb=4096, root_gb=40, vcpus=4, deleted=2,
            deleted_at='2020-01-02 00:00:00')])
        insert(admin, cell1, 'shadow_instance_actions', [
            dict(id=2, action='create', instance_uuid=archived),
            dict(id=3, action='delete', instance_uuid=archived)])
        insert(admin, cell1, 'shadow_instance_actions_events', [
            dict(id=2, action_id=2, event='compute__do_build_and_run_instance',
                 start_time='2020-01-01 00:00:00',
                 finish_time='2020-01-01 00:00:30', result='Success'),
            dict(id=3, action_id=3, event='compute_terminate_instance',
                 start_time='2020-01-01 23:59:50',
                 finish_time='2020-01-02 00:00:00', result='Success')])
    return [cell0, cell1], failed, live, archived
