"""The history model: a synthetic, deterministic Nova history, the cell
databases real Nova (34.0.0, cells v2) would leave behind.

``generate(instances, seed=...)`` streams the rows of ``instances``,
``instance_actions``, ``instance_actions_events`` and their ``shadow_``
copies, per cell database, as tuples over ``tables.COLUMNS[table]``, then
the ``compute_nodes`` and ``services`` of the hosts (``hosts.py``). The
same arguments (and seed) always give the same rows.

The model (what real Nova writes: /work/shared/nova-schema/README.md):

* Arrivals: create requests over ``days`` from ``start`` with a daily cycle
  (peak around 10-16 UTC, trough at night), a weekly one (weekends ~40% of a
  weekday), +60% growth over the span, day-to-day noise and bursts (~5% of
  days have 1-3 hours at 3-8x the rate). ~8% of requests are multi-creates
  of 2-20 instances (same request_id and reservation_id, launch_index 0..k-1).
* ~400 users in ~150 projects, Zipf-skewed activity (the top user makes
  ~10% of the instances); an admin user runs the live-migrations. Flavors
  m1.tiny/small/medium/large/xlarge (ids 1-5) in a 10/35/30/17/8% mix.
  Hosts compute-0001, ... (each cell its own range, about one host per 1,500
  instances, 8 to 400 a cell); conductors controller-01..03.
* Lifecycle: ``create`` (conductor_schedule_and_build_instances on a
  conductor, compute__do_build_and_run_instance on the compute host; the
  action starts 1-2 s before instances.created_at), then operations at
  random times while the instance lives: reboot, stop/start, resize followed
  by confirmResize (85%) or revertResize, live-migration (by the admin),
  shelve (+ a later shelveOffload for 30% of them) / unshelve, rebuild; then
  ``delete`` (compute_terminate_instance; no event when the instance has no
  host). Lifetimes: 30% hours, 35% days, 35% months; an instance still alive
  at the end of the span is not deleted. Actions of one instance never
  overlap; event names are unique within an action.
* Failures: 3% of instances fail scheduling: they live in the first cell
  (``cells[0]``, "cell0") with host/node/launched_at NULL, vm_state 'error'
  and one conductor_schedule_and_build_instances event with result 'Error'
  (most are deleted later, by a ``delete`` action without events). 2% of
  builds fail on the compute host (vm_state 'error', launched_at NULL, host
  NULL half the time). Other actions fail at 0.5-5% by kind. A failed event
  has result 'Error', a traceback and details; its action gets message
  'Error' and stops there.
* In flight: ~20% of the actions started in the last 2 days (or the last
  quarter of a shorter span) are stuck in one compute event (finish_time
  and result NULL, updated_at NULL, task_state set); nothing happens to the
  instance afterwards. An event still running at the end of the span is
  unfinished too. Older events are all finished.
* Soft delete as Nova does it: deleted = id, deleted_at, terminated_at,
  vm_state 'deleted', cleaned 1. Instances deleted before
  ``start + archive_fraction * days`` are moved, with their actions and
  events (same ids), into the shadow_ tables, as
  ``nova-manage db archive_deleted_rows --before`` does.
* ids start at 1 in every database and grow with time (instances by
  created_at, actions by start_time, events by action then start_time);
  they collide across cells. instance_actions.finish_time is always NULL.

Measured proportions (seed 0, 100,000 instances, 365 days, two cells; the
tests check them within tolerances):

* instances deleted: ~83%; of the deleted, archived into shadow_: ~41%
  with archive_fraction 0.5 (arrivals grow over the span)
* instances in cell0 (scheduling failures): ~3%
* actions per instance: ~2.9; events per action: ~1.66; events per
  instance: ~4.8 (``EVENTS_PER_INSTANCE``; ``instances_for_events``
  measures it for given arguments: 414,212 instances give 1,985,723 events)
* events with result 'Error': ~1.5%; unfinished events: ~0.1% (only
  in the last 2 days)
* action kinds (share of actions): create 34.5%, delete 28.9%, reboot 9.2%,
  stop 6.0%, live-migration 4.5%, start 3.6%, resize 3.3%, confirmResize
  2.7%, shelve 2.5%, rebuild 2.4%, unshelve 1.7%, revertResize 0.45%,
  shelveOffload 0.27%
"""
import bisect
import datetime as dt
import functools
import gc
import heapq
import itertools
import math
import random
import re

from starcompactor.pipeline.errors import UserError
from starcompactor.synth.tables import (
    HOST_TABLES, LIVE_TABLES, SHADOW_PREFIX, TABLES)

DEFAULT_CELLS = ('nova_cell0', 'nova_cell1')
EVENTS_PER_INSTANCE = 4.8      # about; see instances_for_events

# -- model parameters --------------------------------------------------------

FLAVORS = (  # id, name, vcpus, memory_mb, root_gb, ephemeral_gb, weight
    (1, 'm1.tiny', 1, 512, 1, 0, 10),
    (2, 'm1.small', 1, 2048, 20, 0, 35),
    (3, 'm1.medium', 2, 4096, 40, 0, 30),
    (4, 'm1.large', 4, 8192, 80, 0, 17),
    (5, 'm1.xlarge', 8, 16384, 160, 0, 8),
)
N_USERS, N_PROJECTS = 400, 150
CONTROLLERS = ('controller-01', 'controller-02', 'controller-03')
P_SCHED_FAIL = 0.03
P_BUILD_FAIL = 0.02
P_BATCH = 0.08
BATCH_SIZES = (2, 2, 2, 3, 3, 4, 5, 6, 8, 10, 12, 16, 20)
# (share, median seconds, sigma) of lifetimes
LIFETIMES = ((0.30, 3 * 3600, 1.0), (0.35, 4 * 86400, 1.0),
             (0.35, 120 * 86400, 0.8))
OPS_PER_DAY = 0.02             # median per instance; lognormal, sigma 0.8
MAX_OPS = 60
P_DELETE_ERROR_INSTANCE = 0.85
P_REVERT = 0.15
P_SEPARATE_OFFLOAD = 0.3
RECENT = 2 * 86400
P_STUCK = 0.2
OPS_BY_STATE = {
    'active': (('reboot', 30), ('stop', 20), ('live-migration', 15),
               ('resize', 10), ('rebuild', 8), ('shelve', 7)),
    'stopped': (('start', 85), ('shelve', 10), ('resize', 5)),
    'shelved': (('unshelve', 50), ('shelveOffload', 50)),
    'shelved_offloaded': (('unshelve', 100),),
}
_OPS_TOTAL = {state: sum(w for _, w in ops)
              for state, ops in OPS_BY_STATE.items()}
_N_NORMALS = 4096   # standard normal draws reused for durations
P_FAIL = {'reboot': 0.01, 'stop': 0.005, 'start': 0.01, 'resize': 0.04,
          'confirmResize': 0.01, 'revertResize': 0.02,
          'live-migration': 0.05, 'shelve': 0.02, 'shelveOffload': 0.01,
          'unshelve': 0.03, 'rebuild': 0.02, 'delete': 0.005}
# A failure of these leaves the instance in ERROR.
ERROR_AFTER_FAILURE = {'confirmResize', 'revertResize', 'rebuild', 'unshelve',
                       'delete'}
TASK_STATES = {'create': 'spawning', 'reboot': 'rebooting',
               'stop': 'powering-off', 'start': 'powering-on',
               'resize': 'resize_migrating', 'confirmResize': None,
               'revertResize': 'resize_reverting',
               'live-migration': 'migrating', 'shelve': 'shelving',
               'shelveOffload': 'shelving_offloading',
               'unshelve': 'spawning', 'rebuild': 'rebuilding',
               'delete': 'deleting'}
POWER = {'active': 1, 'stopped': 4, 'shelved': 4, 'shelved_offloaded': 4,
         'resized': 1, 'deleted': 0, 'building': 0}
NAME_PREFIXES = ('web', 'db', 'worker', 'test', 'jupyter', 'k8s-node', 'gpu',
                 'dev', 'ci-runner', 'build', 'analysis', 'my-instance',
                 'ubuntu', 'centos', 'node', 'vm', 'experiment', 'lab')
ODD_NAMES = ("Bob's test VM", 'tëst "quoted" server', 'back\\slash box',
             'Ünïcode demo')
P_ODD_NAME = 0.005

_TB_HEAD = ('Traceback (most recent call last):\n'
            '  File "/usr/lib/python3/dist-packages/nova/compute/utils.py", '
            'line 1439, in decorated_function\n'
            '    return function(self, context, *args, **kwargs)\n')
_NO_VALID_HOST = ('No valid host was found. There are not enough hosts '
                  'available.')
_NO_VALID_HOST_TB = (
    'Traceback (most recent call last):\n'
    '  File "/usr/lib/python3/dist-packages/nova/conductor/manager.py", '
    'line 1580, in schedule_and_build_instances\n'
    '    host_lists = self._schedule_instances(context, request_specs[0],\n'
    '  File "/usr/lib/python3/dist-packages/nova/scheduler/client/query.py",'
    ' line 41, in select_destinations\n'
    '    return self.scheduler_rpcapi.select_destinations(context, spec_obj,\n'
    'nova.exception.NoValidHost: ' + _NO_VALID_HOST + '\n')
_FAILURES = {   # event -> (details, traceback)
    'compute__do_build_and_run_instance': (
        "Build of instance was re-scheduled: Timed out waiting for a reply "
        "to message ID 'c3f1'",
        'nova.exception.RescheduledException'),
    'compute_live_migration': (
        'Live migration failed: operation failed: migration job: '
        'unexpectedly failed', 'libvirt.libvirtError'),
    'compute_check_can_live_migrate_destination': (
        'Unacceptable CPU info: CPU doesn\'t have compatibility.',
        'nova.exception.MigrationPreCheckError'),
    'compute_resize_instance': (
        'Resize error: disk size is smaller than the flavor\'s',
        'nova.exception.ResizeError'),
    'compute_prep_resize': (
        'Insufficient compute resources: Free vcpu 0.00 VCPU < requested 2',
        'nova.exception.ComputeResourcesUnavailable'),
}
_DEFAULT_FAILURE = ('Unexpected error while running command.\n'
                    'Stderr: \'error: "virsh" returned 1\\r\\n\'',
                    'oslo_concurrency.processutils.ProcessExecutionError')


@functools.cache
def _failure_of(event):
    """(details, traceback) of a failed ``event``."""
    details, exc = _FAILURES.get(event, _DEFAULT_FAILURE)
    return details, f'{_TB_HEAD}{exc}: {details}\n'


# -- times ------------------------------------------------------------------

@functools.cache
def _times_of_day():
    """'HH:MM:SS' of every second of a day, by second."""
    return [f'{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}'
            for s in range(86400)]


def _parse_start(start):
    """``start`` (ISO date or naive datetime, or a datetime) as a datetime."""
    if isinstance(start, dt.datetime):
        return start.replace(tzinfo=None, microsecond=0)
    if isinstance(start, dt.date):
        return dt.datetime(start.year, start.month, start.day)
    try:
        value = dt.datetime.fromisoformat(str(start).strip().rstrip('Z'))
    except ValueError:
        raise UserError(f'bad start {start!r}: want an ISO date such as '
                        f'2015-09-01 or 2015-09-01T00:00:00')
    return value.replace(tzinfo=None, microsecond=0)


def _check_cells(cells):
    cells = tuple(cells)
    if not cells:
        raise UserError('no cell databases given')
    for name in cells:
        if not re.fullmatch(r'[A-Za-z0-9_$]{1,64}', name):
            raise UserError(f'bad cell database name {name!r}: use letters, '
                            f'digits and _')
    if len(set(cells)) != len(cells):
        raise UserError('a cell database is named twice')
    return cells


def _poisson(rng, lam):
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _uuid4(rng):
    n = rng.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = '%032x' % n
    return f'{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}'


def _hostname(name):
    name = name.lower().replace(' ', '-').replace('_', '-')
    name = name.encode('ascii', 'ignore').decode('ascii')
    return re.sub(r'[^a-z0-9.-]', '', name).strip('-.') or 'server'


# -- the generator -----------------------------------------------------------

_DAILY = (0.30, 0.25, 0.20, 0.20, 0.20, 0.25, 0.35, 0.50, 0.75, 0.95, 1.0,
          1.0, 0.95, 1.0, 1.0, 0.95, 0.90, 0.80, 0.65, 0.55, 0.50, 0.45,
          0.40, 0.35)
_WEEKLY = (1.0, 1.0, 1.0, 1.0, 0.95, 0.45, 0.40)


class History:
    """One synthetic history.

    ``instances``: how many instances are created over the span (``days``
    days from ``start``, an ISO date/datetime, naive UTC; the end of the
    span is "now"). ``cells``: the cell databases; the first is cell0 (where
    instances failing scheduling go) unless it is the only one. Instances
    deleted before ``start + archive_fraction * days`` are in the shadow_
    tables.

    ``rows()`` streams the history, once, as ``(database, table, rows)``
    chunks: ``table`` is one of ``TABLES``, ``rows`` a list of about
    ``chunk_rows`` tuples over ``COLUMNS[table]`` (one action's events are
    never split). Each database's rows of a table come in id order.
    Deterministic: the same arguments give the same chunks. Meanwhile
    ``counts`` holds the rows streamed so far per (database, table).
    """

    def __init__(self, instances, seed=0, start='2015-09-01', days=365,
                 cells=DEFAULT_CELLS, archive_fraction=0.5, chunk_rows=5000):
        if instances < 0:
            raise UserError('the number of instances must be >= 0')
        if not days > 0:
            raise UserError('days must be > 0')
        if not 0 <= archive_fraction <= 1:
            raise UserError('archive_fraction must be within 0..1')
        self.n = int(instances)
        self.seed = seed
        self.start = _parse_start(start)
        self.days = days
        self.cells = _check_cells(cells)
        self.archive_fraction = archive_fraction
        self.chunk_rows = max(1, int(chunk_rows))
        self.rng = random.Random(f'starcompactor-synth:{seed}')
        base = dt.datetime(self.start.year, self.start.month, self.start.day)
        self.s0 = int((self.start - base).total_seconds())
        self.now = self.s0 + int(round(days * 86400))
        self.base = base
        self.day_text = [(base + dt.timedelta(days=i)).strftime('%Y-%m-%d ')
                         for i in range(self.now // 86400 + 3)]
        self.archive_before = self.s0 + int(archive_fraction * days * 86400)
        self.recent = min(RECENT, (self.now - self.s0) // 4)
        self.times_of_day = _times_of_day()
        self.normals = [self.rng.gauss(0, 1) for _ in range(_N_NORMALS)]
        self._setup_world()

    def time_text(self, t):
        """Second ``t`` of the span as Nova's time text."""
        return self.day_text[t // 86400] + self.times_of_day[t % 86400]

    def _setup_world(self):
        rng = random.Random(f'starcompactor-synth-world:{self.seed}')
        self.projects = [_uuid4(rng).replace('-', '') for _ in range(N_PROJECTS)]
        self.users = []
        for i in range(N_USERS):
            project = self.projects[min(N_PROJECTS - 1,
                                        int(rng.paretovariate(1.2)) - 1)
                                    if i % 3 else i % N_PROJECTS]
            self.users.append((_uuid4(rng).replace('-', ''), project,
                               rng.choice(NAME_PREFIXES),
                               f'key-{i}' if rng.random() < 0.7 else None))
        rng.shuffle(self.users)
        self.user_cum = list(itertools.accumulate(
            1.0 / (i + 1) ** 1.1 for i in range(N_USERS)))
        self.admin = (_uuid4(rng).replace('-', ''), _uuid4(rng).replace('-', ''))
        self.images = [_uuid4(rng) for _ in range(12)]
        self.flavor_cum = list(itertools.accumulate(f[6] for f in FLAVORS))
        per_cell = min(400, max(8, self.n // 1500))
        self.hosts = {}
        live_cells = self.cells[1:] if len(self.cells) > 1 else self.cells
        for k, cell in enumerate(live_cells):
            self.hosts[cell] = [f'compute-{k * per_cell + j + 1:04d}'
                                for j in range(per_cell)]
        self.live_cells = live_cells

    # arrivals ---------------------------------------------------------------

    def _hour_weights(self):
        rng = random.Random(f'starcompactor-synth-arrivals:{self.seed}')
        first = self.s0 // 3600
        hours = max(1, -(-(self.now - first * 3600) // 3600))
        n_days = hours // 24 + 2
        day_noise = [math.exp(rng.gauss(0, 0.2)) for _ in range(n_days)]
        bursts = {}
        for d in range(n_days):
            if rng.random() < 0.05:
                h = d * 24 + rng.randint(8, 18)
                factor = rng.uniform(3, 8)
                for j in range(rng.randint(1, 3)):
                    bursts[h + j] = factor
        weights = []
        weekday0 = self.base.weekday()
        for i in range(hours):
            h = first + i
            day, hod = divmod(h, 24)
            frac = i / hours
            w = (_DAILY[hod] * _WEEKLY[(weekday0 + day) % 7] * day_noise[day]
                 * (1 + 0.6 * frac) * bursts.get(h, 1.0))
            weights.append(w)
        return first, weights

    def _requests(self):
        """(time, batch size) of create requests, in time order."""
        rng = self.rng
        first, weights = self._hour_weights()
        total = sum(weights)
        cum, done = 0.0, 0
        lo, hi = self.s0 + 5, self.now - 60
        for i, w in enumerate(weights):
            cum += w
            quota = int(round(cum / total * self.n)) - done
            if quota <= 0:
                continue
            done += quota
            hour = (first + i) * 3600
            batch = []
            while quota > 0:
                k = 1
                if rng.random() < P_BATCH:
                    k = min(quota, rng.choice(BATCH_SIZES))
                quota -= k
                t = min(hi, max(lo, hour + int(rng.random() * 3600)))
                batch.append((t, k))
            batch.sort()
            yield from batch

    # lifecycles -------------------------------------------------------------

    def _duration(self, median, sigma, low=1):
        """A lognormal duration in whole seconds, at least ``low``."""
        z = self.normals[int(self.rng.random() * _N_NORMALS)]
        return max(low, int(median * math.exp(sigma * z)))

    def _other_host(self, cell, host):
        hosts = self.hosts[cell]
        if len(hosts) == 1:
            return hosts[0]
        while True:
            h = hosts[int(self.rng.random() * len(hosts))]
            if h != host:
                return h

    def _op_events(self, kind, t, src, dst, old):
        """[name, start, finish, host] of one action's events, by start."""
        d, ctl = self._duration, CONTROLLERS[int(self.rng.random() * 3)]
        s = t + 1
        if kind == 'reboot':
            return [['compute_reboot_instance', s, s + d(40, .7), src]]
        if kind == 'stop':
            return [['compute_stop_instance', s, s + d(10, .8), src]]
        if kind == 'start':
            return [['compute_start_instance', s, s + d(8, .6), src]]
        if kind == 'rebuild':
            return [['compute_rebuild_instance', s, s + d(45, .6), src]]
        if kind == 'delete':
            return [['compute_terminate_instance', s, s + d(4, .7), src]] \
                if src else []
        if kind == 'shelve':
            return [['compute_shelve_instance', s, s + d(90, .7), src]]
        if kind == 'shelveOffload':
            return [['compute_shelve_offload_instance', s, s + d(8, .6), src]]
        if kind == 'confirmResize':
            return [['compute_confirm_resize', s, s + d(5, .6), old]]
        if kind == 'revertResize':
            r = s + d(10, .6)
            return [['compute_revert_resize', s, r, src],
                    ['compute_finish_revert_resize', r + 1,
                     r + 1 + d(15, .6), old]]
        if kind == 'resize':
            p = s + 1
            pe = p + d(2, .5)
            r = pe + 1
            re_ = r + d(60, .8, 5)
            return [['conductor_migrate_server', s, pe + 1, ctl],
                    ['compute_prep_resize', p, pe, dst],
                    ['compute_resize_instance', r, re_, src],
                    ['compute_finish_resize', re_ + 1,
                     re_ + 1 + d(15, .6), dst]]
        if kind == 'live-migration':
            cd = s + 1
            cde = cd + d(3, .4, 2)
            lm = cde + 1
            lme = lm + d(90, .9, 12)
            return [['conductor_live_migrate_instance', s, lm, ctl],
                    ['compute_check_can_live_migrate_destination', cd, cde,
                     dst],
                    ['compute_check_can_live_migrate_source', cd + 1,
                     cd + 1, src],
                    ['compute_live_migration', lm, lme, src],
                    ['compute_pre_live_migration', lm + 1,
                     lm + 1 + d(4, .5), dst],
                    ['compute_post_live_migration_at_destination', lme - 4,
                     lme - 2, dst]]
        if kind == 'unshelve':
            ce = s + d(3, .5)
            return [['conductor_unshelve_instance', s, ce, ctl],
                    ['compute_unshelve_instance', ce + 1,
                     ce + 1 + d(40, .7, 5), dst]]
        raise AssertionError(kind)

    def _finish_action(self, kind, start, events, fail_p):
        """Apply failures, stuck events and the end of the span to one
        action's events; return (event rows, message, state) with state
        'ok', 'error' or 'running'."""
        rng, now = self.rng, self.now
        out, message, state = [], None, 'ok'
        fail_at = stuck_at = -1
        if events:
            if start >= now - self.recent and rng.random() < P_STUCK:
                compute = [i for i, e in enumerate(events)
                           if e[0].startswith('compute_')]
                if compute:
                    stuck_at = compute[int(rng.random() * len(compute))]
            elif rng.random() < fail_p:
                fail_at = int(rng.random() * len(events))
        for i, (name, s, f, host) in enumerate(events):
            if s >= now:
                state = 'running'
                break
            if i == stuck_at or f > now:
                out.append((name, s, None, None, None, host, None))
                state = 'running'
                break
            if i == fail_at:
                details, tb = _failure_of(name)
                out.append((name, s, f, 'Error', tb, host, details))
                message, state = 'Error', 'error'
                break
            out.append((name, s, f, 'Success', None, host, None))
        return out, message, state

    def _take_action(self, actions, info, kind, start, who, raw_events):
        """One action on an instance (failures and stuck events applied),
        recorded in ``actions``; returns its state, 'ok', 'error' or
        'running' (then the instance is left in the action's task state)."""
        events, message, state = self._finish_action(kind, start, raw_events,
                                                     P_FAIL[kind])
        actions.append((start, kind, who[0], who[1], 'req-' + _uuid4(self.rng),
                        message, events))
        info['last'] = max([e[2] or e[1] for e in events] + [start])
        if state == 'running':
            info['task_state'] = TASK_STATES[kind]
        return state

    def _lifecycle(self, t, index, cell0, request_id):
        """The actions of one instance, and its final columns."""
        rng, d = self.rng, self._duration
        user = self.users[bisect.bisect(self.user_cum,
                                        rng.random() * self.user_cum[-1])]
        flavor = FLAVORS[bisect.bisect(self.flavor_cum,
                                       rng.random() * self.flavor_cum[-1])]
        cell = self.cells[0] if cell0 else \
            self.live_cells[int(rng.random() * len(self.live_cells))]
        uid, pid = user[0], user[1]
        actions = []   # (start, kind, user, project, request_id, msg, events)
        act_start = t
        created = t + 1 + index // 20
        ctl = CONTROLLERS[int(rng.random() * 3)]
        cs = created + (rng.random() < 0.5)
        ce = cs + d(2, .6)
        info = {'host': None, 'launched_at': None, 'launched_on': None,
                'vm_state': 'error', 'task_state': None, 'deleted_at': None,
                'flavor': flavor, 'last': ce}
        if cell0:
            tb = _NO_VALID_HOST_TB
            events = [('conductor_schedule_and_build_instances', cs, ce,
                       'Error', tb, ctl, _NO_VALID_HOST)]
            actions.append((act_start, 'create', uid, pid, request_id,
                            'Error', events))
            if rng.random() < P_DELETE_ERROR_INSTANCE:
                when = ce + self._duration(6 * 3600, 1.5, 60)
                if when < self.now:
                    actions.append((when, 'delete', uid, pid,
                                    'req-' + _uuid4(rng), None, []))
                    info['deleted_at'] = when + 1
                    info['last'] = when + 1
            return cell, user, info, actions
        host = self.hosts[cell][int(rng.random() * len(self.hosts[cell]))]
        bs = ce + 1
        be = bs + d(25, .6, 5)
        raw = [['conductor_schedule_and_build_instances', cs, ce, ctl],
               ['compute__do_build_and_run_instance', bs, be, host]]
        events, message, st = self._finish_action('create', act_start, raw,
                                                  P_BUILD_FAIL)
        if len(events) == 1 and st == 'error':
            # The conductor event failed: keep it a build failure on compute
            # instead (cell0 is for scheduling failures).
            events = [('conductor_schedule_and_build_instances', cs, ce,
                       'Success', None, ctl, None)]
            details, tb = _failure_of('compute__do_build_and_run_instance')
            events.append(('compute__do_build_and_run_instance', bs, be,
                           'Error', tb, host, details))
        actions.append((act_start, 'create', uid, pid, request_id, message,
                        events))
        if len(events) == 2:
            info['launched_on'] = host
        if st == 'running':
            info.update(vm_state='building', task_state='spawning',
                        host=host if len(events) == 2 else None,
                        last=events[-1][1])
            return cell, user, info, actions
        if st == 'error':
            info.update(host=host if rng.random() < 0.5 else None,
                        last=be)
            state = 'error'
            end = be + self._duration(6 * 3600, 1.5, 60) \
                if rng.random() < P_DELETE_ERROR_INSTANCE else self.now
        else:
            info.update(host=host, launched_at=be, vm_state='active', last=be)
            state = 'active'
            r = rng.random()
            for share, median, sigma in LIFETIMES:
                if r < share:
                    break
                r -= share
            life = self._duration(median, sigma, 60)
            end = be + life
            rate = OPS_PER_DAY * math.exp(0.8 * rng.gauss(0, 1))
            n_ops = min(MAX_OPS, _poisson(
                rng, rate * (min(end, self.now) - be) / 86400))
            span = max(1, min(end, self.now) - be - 1)
            op_times = sorted(be + 1 + int(rng.random() * span)
                              for _ in range(n_ops))
            cur, old_host, old_flavor = be, None, None
            for op_t in op_times:
                if state not in OPS_BY_STATE:
                    break
                start = max(op_t, cur + 1)
                if start >= min(end, self.now):
                    break
                choices = OPS_BY_STATE[state]
                r = int(rng.random() * _OPS_TOTAL[state])
                for kind, w in choices:
                    if r < w:
                        break
                    r -= w
                host = info['host']
                dst = None
                if kind in ('resize', 'live-migration'):
                    dst = self._other_host(cell, host)
                elif kind == 'unshelve':
                    dst = host or self.hosts[cell][
                        int(rng.random() * len(self.hosts[cell]))]
                who = self.admin if kind == 'live-migration' else (uid, pid)
                st = self._take_action(
                    actions, info, kind, start, who,
                    self._op_events(kind, start, host, dst, None))
                cur = info['last']
                if st == 'running':
                    info['vm_state'], state = state, 'running'
                    break
                if st == 'error':
                    if kind in ERROR_AFTER_FAILURE:
                        state = 'error'
                        if kind == 'unshelve':
                            info['host'] = None
                    continue
                if kind == 'reboot' or kind == 'rebuild' or kind == 'start':
                    state = 'active'
                elif kind == 'stop':
                    state = 'stopped'
                elif kind == 'live-migration':
                    info['host'] = dst
                elif kind == 'shelve':
                    if rng.random() < P_SEPARATE_OFFLOAD:
                        state = 'shelved'
                    else:
                        state, info['host'] = 'shelved_offloaded', None
                elif kind == 'shelveOffload':
                    state, info['host'] = 'shelved_offloaded', None
                elif kind == 'unshelve':
                    state, info['host'] = 'active', dst
                elif kind == 'resize':
                    old_host, old_flavor = host, info['flavor']
                    new = FLAVORS[bisect.bisect(
                        self.flavor_cum, rng.random() * self.flavor_cum[-1])]
                    if new is old_flavor:
                        new = FLAVORS[(FLAVORS.index(new) + 1) % len(FLAVORS)]
                    info['host'], info['flavor'] = dst, new
                    state = 'resized'
                    # confirm or revert, a while later
                    follow_kind = ('revertResize' if rng.random() < P_REVERT
                                   else 'confirmResize')
                    ft = cur + self._duration(1200, 1.5, 30)
                    if ft >= min(end, self.now):
                        continue
                    st = self._take_action(
                        actions, info, follow_kind, ft, (uid, pid),
                        self._op_events(follow_kind, ft, dst, None, old_host))
                    cur = info['last']
                    if st == 'running':
                        info['vm_state'], state = state, 'running'
                        break
                    if st == 'error':
                        state = 'error'
                        continue
                    state = 'active'
                    if follow_kind == 'revertResize':
                        info['host'], info['flavor'] = old_host, old_flavor
            if state != 'running':
                end = max(end, cur + 1)
        if state == 'running':
            return cell, user, info, actions
        if end >= self.now:
            info['vm_state'] = state
            return cell, user, info, actions
        raw = self._op_events('delete', end, info['host'], None, None)
        events, message, st = self._finish_action('delete', end, raw,
                                                  P_FAIL['delete'])
        actions.append((end, 'delete', uid, pid, 'req-' + _uuid4(rng),
                        message, events))
        info['last'] = max([e[2] or e[1] for e in events] + [end + 1])
        if st == 'ok':
            info['deleted_at'] = info['last']
            info['vm_state'] = 'deleted'
        elif st == 'running':
            info['task_state'] = 'deleting'
            info['vm_state'] = state
        else:
            info['vm_state'] = 'error'
        return cell, user, info, actions

    def _instance_row(self, iid, uuid, t, index, reservation, cell, user,
                      info):
        ts, rng = self.time_text, self.rng
        flavor = info['flavor']
        if rng.random() < P_ODD_NAME:
            name = ODD_NAMES[int(rng.random() * len(ODD_NAMES))]
        else:
            name = f'{user[2]}-{rng.randrange(1, 1000)}'
        deleted_at = info['deleted_at']
        vm_state = info['vm_state']
        if deleted_at is not None:
            vm_state = 'deleted'
        power = POWER.get(vm_state, 1 if info['launched_at'] else 0)
        host = info['host']
        hosts = self.hosts.get(cell)
        compute_id = (int(host[8:]) - int(hosts[0][8:]) + 1) \
            if host and hosts else None
        launched_at = info['launched_at']
        return (
            ts(t + 1 + index // 20), ts(info['last']),
            ts(deleted_at) if deleted_at is not None else None,
            iid, user[0], user[1],
            self.images[int(rng.random() * len(self.images))], index, user[3],
            power, vm_state, flavor[3], flavor[2],
            _hostname(name) if name in ODD_NAMES else name, host,
            reservation,
            ts(launched_at) if launched_at is not None else None,
            ts(deleted_at - 1) if deleted_at is not None else None,
            name, 'nova' if info['launched_on'] else None, 0,
            info['launched_on'], flavor[0], uuid, '/dev/vda', '',
            info['task_state'], 0, 0, 0, 0, flavor[4], flavor[5],
            host, iid if deleted_at is not None else 0,
            1 if deleted_at is not None else 0, 0, compute_id)

    # the stream -------------------------------------------------------------

    def rows(self):
        # Nothing here makes reference cycles, and the collector's passes
        # over the many live tuples would cost more than the generation.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield from self._rows()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _rows(self):
        rng = self.rng
        day_text, tod = self.day_text, self.times_of_day

        def ts(t):
            return day_text[t // 86400] + tod[t % 86400]
        cells = self.cells
        # per cell: next instance, action and event id
        next_id = {c: [1, 1, 1] for c in cells}
        # per (cell, archived): the keys of its instance/action/event buffers
        keys = {(c, a): tuple((c, (SHADOW_PREFIX if a else '') + t)
                              for t in LIVE_TABLES)
                for c in cells for a in (False, True)}
        buffers = {(c, t): [] for c in cells for t in TABLES}
        chunk = self.chunk_rows
        heap, seq = [], 0
        archive_before = self.archive_before
        self.counts = {(c, t): 0 for c in cells for t in TABLES + HOST_TABLES}

        def emit_action(item):
            """Give one action (and its events) its ids and rows; the keys
            of buffers now full."""
            _, _, ids, (_, akey, ekey), uuid, action = item
            start, kind, uid, pid, request_id, message, events = action
            aid = ids[1]
            ids[1] = aid + 1
            updated = start
            start_text = ts(start)
            full = ()
            if events:
                ebuf = buffers[ekey]
                eid = ids[2]
                for name, s, f, result, tb, host, details in events:
                    st = ts(s)
                    if f is not None:
                        ft = ts(f)
                        if f > updated:
                            updated = f
                    else:
                        ft = None
                        if s > updated:
                            updated = s
                    ebuf.append((st, ft, None, eid, name, aid, st, ft, result,
                                 tb, 0, host, details))
                    eid += 1
                ids[2] = eid
                if len(ebuf) >= chunk:
                    full = (ekey,)
            abuf = buffers[akey]
            abuf.append((start_text, ts(updated), None, aid, kind, uuid,
                         request_id, uid, pid, start_text, None, message, 0))
            if len(abuf) >= chunk:
                full += (akey,)
            return full

        def drain(key):
            rows = buffers[key]
            buffers[key] = []
            self.counts[key] += len(rows)
            return key[0], key[1], rows

        heappush, heappop = heapq.heappush, heapq.heappop
        for t, k in self._requests():
            while heap and heap[0][0] <= t:
                for key in emit_action(heappop(heap)):
                    yield drain(key)
            request_id = 'req-' + _uuid4(rng)
            reservation = 'r-' + '%08x' % rng.getrandbits(32)
            cell0 = len(cells) > 1 and rng.random() < P_SCHED_FAIL
            for index in range(k):
                cell, user, info, actions = self._lifecycle(
                    t, index, cell0, request_id)
                uuid = _uuid4(rng)
                ids = next_id[cell]
                iid = ids[0]
                ids[0] = iid + 1
                deleted_at = info['deleted_at']
                archived = deleted_at is not None and deleted_at < archive_before
                row = self._instance_row(iid, uuid, t, index, reservation,
                                         cell, user, info)
                slot = keys[cell, archived]
                buffers[slot[0]].append(row)
                if len(buffers[slot[0]]) >= chunk:
                    yield drain(slot[0])
                for action in actions:
                    seq += 1
                    heappush(heap, (action[0], seq, ids, slot, uuid, action))
        while heap:
            for key in emit_action(heappop(heap)):
                yield drain(key)
        for key in list(buffers):
            if buffers[key]:
                yield drain(key)
        # hosts.py builds on this module, so it is imported here
        from starcompactor.synth.hosts import host_rows
        for db, table, rows in host_rows(self):
            self.counts[db, table] = len(rows)
            yield db, table, rows


def generate(instances, **options):
    """Stream a synthetic Nova history as ``(database, table, rows)`` chunks:
    ``History(instances, **options).rows()``."""
    return History(instances, **options).rows()


def instances_for_events(events, pilot=20000, **options):
    """How many instances give about ``events`` events (live + shadow) with
    these ``generate`` options: measured on a pilot run of up to ``pilot``
    instances (events per instance does not depend on the count; the result
    is within a few percent)."""
    if events <= 0:
        return 0
    n = max(1000, min(pilot, int(events / EVENTS_PER_INSTANCE)))
    got = sum(len(rows) for _, table, rows in generate(n, **options)
              if table.endswith('instance_actions_events'))
    return max(1, int(round(events * n / max(1, got))))
