"""A small hand-written Nova history and the trace it must give.

Expected rows are written out by hand: masks are HMAC-SHA256 of the raw
values under GOLDEN_KEY (computed once with the standard library, outside
starcompactor), seconds count from the earliest start in the trace
(event 100, 2016-03-01 12:00:01).
"""
GOLDEN_KEY = b'golden-test-key-0123456789abcdef'

U1 = 'aaaaaaaa-0000-4000-8000-000000000001'
U2 = 'aaaaaaaa-0000-4000-8000-000000000002'
U3 = 'aaaaaaaa-0000-4000-8000-000000000003'
U_MISSING = 'aaaaaaaa-0000-4000-8000-000000000099'

INSTANCES = [
    dict(id=1, uuid=U1, user_id='alice', project_id='proj-physics',
         hostname='vm-alpha', host='compute-01', memory_mb=2048, root_gb=20,
         vcpus=1, created_at='2016-03-01 12:00:10', deleted=0,
         vm_state='active'),
    # Deleted the way Nova marks it: deleted = id.
    dict(id=2, uuid=U2, user_id='bob', project_id='proj-bio',
         hostname='vm-beta', host='compute-02', memory_mb=4096, root_gb=40,
         vcpus=2, created_at='2016-03-01 13:00:05', deleted=2,
         deleted_at='2016-03-04 09:00:06', vm_state='deleted'),
    # Nothing ever happened to it: not in the trace.
    dict(id=3, uuid=U3, user_id='carol', project_id='proj-bio',
         hostname='vm-gamma', host=None, memory_mb=2048, root_gb=20,
         vcpus=1, created_at='2016-03-01 14:00:00', deleted=0),
]

ACTIONS = [
    dict(id=10, action='create', instance_uuid=U1,
         start_time='2016-03-01 12:00:00'),
    dict(id=11, action='reboot', instance_uuid=U1,
         start_time='2016-03-02 08:00:00'),
    dict(id=12, action='stop', instance_uuid=U1,      # no events at all
         start_time='2016-03-03 08:00:00'),
    dict(id=13, action='create', instance_uuid=U2,
         start_time='2016-03-01 13:00:00', message='Error'),
    dict(id=14, action='delete', instance_uuid=U2,
         start_time='2016-03-04 09:00:00'),
    dict(id=15, action='create', instance_uuid=U_MISSING,  # orphan action
         start_time='2016-03-01 11:00:00'),
    dict(id=16, action='resize', instance_uuid=U1,
         start_time='2016-03-05 10:00:00'),
]

EVENTS = [
    dict(id=100, action_id=10, event='conductor_schedule_and_build_instances',
         start_time='2016-03-01 12:00:01', finish_time='2016-03-01 12:00:04',
         result='Success', host='controller-1'),
    dict(id=101, action_id=10, event='compute__do_build_and_run_instance',
         start_time='2016-03-01 12:00:05', finish_time='2016-03-01 12:00:35',
         result='Success', host='compute-01'),
    dict(id=102, action_id=11, event='compute_reboot_instance',
         start_time='2016-03-02 08:00:01', finish_time='2016-03-02 08:00:31',
         result='Success', host='compute-01'),
    dict(id=103, action_id=13, event='conductor_schedule_and_build_instances',
         start_time='2016-03-01 13:00:01', finish_time='2016-03-01 13:00:02',
         result='Success', host='controller-1'),
    dict(id=104, action_id=13, event='compute__do_build_and_run_instance',
         start_time='2016-03-01 13:00:03', finish_time='2016-03-01 13:01:03',
         result='Error', host='compute-02', traceback='Traceback: boom'),
    dict(id=105, action_id=14, event='compute_terminate_instance',
         start_time='2016-03-04 09:00:01', finish_time='2016-03-04 09:00:06',
         result='Success', host='compute-02'),
    dict(id=106, action_id=16, event='compute_prep_resize',
         start_time='2016-03-05 10:00:01', finish_time='2016-03-05 10:00:03',
         result='Success', host='compute-01'),
    # Still running: no finish time, no result.
    dict(id=107, action_id=16, event='compute_resize_instance',
         start_time='2016-03-05 10:00:04', finish_time=None, result=None,
         host='compute-01'),
    # Its action does not exist.
    dict(id=108, action_id=99, event='compute_reboot_instance',
         start_time='2016-03-02 09:00:00', finish_time='2016-03-02 09:00:10',
         result='Success', host='compute-01'),
    # Its action's instance does not exist; earliest of all, yet not the
    # epoch, because it is not in the trace.
    dict(id=109, action_id=15, event='conductor_schedule_and_build_instances',
         start_time='2016-03-01 11:00:00', finish_time='2016-03-01 11:00:02',
         result='Success', host='controller-1'),
]

ALICE = 'f9efe4f84b1ab50e9b3595b2aa2e83ae'
BOB = 'f539a232081cc1794fb00b616c585dff'
PHYSICS = 'dd4c00a6e9ff5396527d6bdbe06f0118'
BIO = '242d83e56ba66418f620769c04832d46'
VM_ALPHA = '28b864ef8f05f3f7edcfbc1f63e3cf70'
VM_BETA = '0bbf3a10b9143ad554a570f11c3a8097'
COMPUTE_01 = '1ab5b1f6164ed93a197980172dfd99f1'
COMPUTE_02 = 'cb9bdef0471a6fd8e3bf6633a2f102fa'

A = (U1,)
B = (U2,)
ALPHA = ('2048', '20', '1', VM_ALPHA, ALICE, PHYSICS, COMPUTE_01)
BETA = ('4096', '40', '2', VM_BETA, BOB, BIO, COMPUTE_02)

# CSV rows, in CSV column order, sorted.
EXPECTED_CSV = sorted([
    A + ('conductor_schedule_and_build_instances', '2016-03-01T12:00:01Z',
         '0', '2016-03-01T12:00:04Z', '3', '3', 'Success') + ALPHA,
    A + ('compute__do_build_and_run_instance', '2016-03-01T12:00:05Z', '4',
         '2016-03-01T12:00:35Z', '34', '30', 'Success') + ALPHA,
    A + ('compute_reboot_instance', '2016-03-02T08:00:01Z', '72000',
         '2016-03-02T08:00:31Z', '72030', '30', 'Success') + ALPHA,
    A + ('compute_prep_resize', '2016-03-05T10:00:01Z', '338400',
         '2016-03-05T10:00:03Z', '338402', '2', 'Success') + ALPHA,
    B + ('conductor_schedule_and_build_instances', '2016-03-01T13:00:01Z',
         '3600', '2016-03-01T13:00:02Z', '3601', '1', 'Success') + BETA,
    B + ('compute__do_build_and_run_instance', '2016-03-01T13:00:03Z',
         '3602', '2016-03-01T13:01:03Z', '3662', '60', 'Error') + BETA,
    B + ('compute_terminate_instance', '2016-03-04T09:00:01Z', '248400',
         '2016-03-04T09:00:06Z', '248405', '5', 'Success') + BETA,
])

# read / in trace / left out by reason, per table.
EXPECTED_COUNTS = {
    'events': (10, 7, {'unfinished': 1, 'no_action': 1, 'no_instance': 1}),
    'actions': (7, 5, {'no_finished_events': 1, 'no_instance': 1}),
    'instances': (3, 2, {'no_finished_events': 1}),
}

RAW_IDENTITIES = ('alice', 'bob', 'proj-physics', 'proj-bio', 'vm-alpha',
                  'vm-beta', 'compute-01', 'compute-02')


def load(connection, database, prefix=''):
    """Write the golden history into ``database`` (tables ``prefix``...)."""
    from helpers import insert
    insert(connection, database, prefix + 'instances', INSTANCES)
    insert(connection, database, prefix + 'instance_actions', ACTIONS)
    insert(connection, database, prefix + 'instance_actions_events', EVENTS)
