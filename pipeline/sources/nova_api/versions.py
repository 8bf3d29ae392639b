"""Compute API microversions: which one a run asks for, and what it brings.

Nova announces the range it serves in its version document; a run uses the
highest version both sides know. Below 2.21 Nova hides the actions of
deleted servers, so a trace would silently lose most of its history: such a
cloud is refused. Hosts are read at the highest version below 2.88, where
hypervisors still carry their capacities; from 2.88 those live in
Placement only.
"""
from starcompactor.pipeline.errors import UserError

MINIMUM = (2, 21)        # actions (and events) of deleted servers
EMBEDDED_FLAVOR = (2, 47)  # servers carry vcpus, ram and disk themselves
PAGED_ACTIONS = (2, 58)    # limit/marker and changes-since on actions
# os-hypervisors: paged from 2.33; from 2.88 without vcpus, memory_mb and
# local_gb, which Placement's inventories hold.
PAGED_HYPERVISORS = (2, 33)
LAST_WITH_CAPACITIES = (2, 87)
HOSTS_MINIMUM = (2, 1)
# The newest version this reader knows the responses of (2.69+ lists
# servers of a cell that is down as partial records; their actions then
# fail and are counted).
NEWEST = (2, 96)


def parse(text):
    """``'2.47'`` -> ``(2, 47)``; ``None`` for what is no microversion (a
    legacy v2.0 entry announces ``''``)."""
    try:
        major, minor = str(text).split('.')
        return int(major), int(minor)
    except ValueError:
        return None


def text(version):
    return f'{version[0]}.{version[1]}'


def compute_range(document):
    """``(min, max)`` microversions from Nova's version document: the one a
    versioned endpoint answers (``{"version": {...}}``) or the root list
    (``{"versions": [...]}``, whose v2.1 entry counts). ``None`` when the
    document announces no microversions."""
    if isinstance(document.get('version'), dict):
        entries = [document['version']]
    else:
        entries = [entry for entry in document.get('versions') or ()
                   if isinstance(entry, dict) and entry.get('id') == 'v2.1']
    for entry in entries:
        low = parse(entry.get('min_version'))
        high = parse(entry.get('version'))
        if low and high:
            return low, high
    return None


def negotiate(document, where, minimum=MINIMUM):
    """The microversion to use with the compute API described by
    ``document``; ``UserError`` when there is none that works."""
    announced = compute_range(document)
    if announced is None:
        raise UserError(f'the compute API at {where} announces no '
                        f'microversions (a legacy v2.0 endpoint?); '
                        f'starcompactor needs {text(minimum)} or later')
    low, high = announced
    chosen = min(high, NEWEST)
    if chosen < minimum:
        raise UserError(f'the compute API at {where} supports microversions '
                        f'up to {text(high)}; starcompactor needs '
                        f'{text(minimum)} or later, where the actions of '
                        f'deleted servers are visible')
    if chosen < low:
        raise UserError(f'the compute API at {where} requires microversion '
                        f'{text(low)} or later; starcompactor knows up to '
                        f'{text(NEWEST)}')
    return text(chosen)


def negotiate_hosts(document, where):
    """``(microversion, capacities from Placement)`` for reading hosts from
    the compute API ``document`` describes: below 2.88 whenever the cloud
    allows it, so that hypervisors carry their own capacities."""
    version = negotiate(document, where, minimum=HOSTS_MINIMUM)
    if parse(version) <= LAST_WITH_CAPACITIES:
        return version, False
    low, _ = compute_range(document)
    if low <= LAST_WITH_CAPACITIES:
        return text(LAST_WITH_CAPACITIES), False
    return version, True


def at_least(version, feature):
    """Whether microversion ``version`` (text) has ``feature`` (a tuple)."""
    return parse(version) >= feature
