"""Compute API microversions: which one a run asks for, and what it brings.

Nova announces the range it serves in its version document; a run uses the
highest version both sides know. Below 2.21 Nova hides the actions of
deleted servers, so a trace would silently lose most of its history: such a
cloud is refused.
"""
from starcompactor.pipeline.errors import UserError

MINIMUM = (2, 21)        # actions (and events) of deleted servers
EMBEDDED_FLAVOR = (2, 47)  # servers carry vcpus, ram and disk themselves
PAGED_ACTIONS = (2, 58)    # limit/marker and changes-since on actions
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


def negotiate(document, where):
    """The microversion to use with the compute API described by
    ``document``; ``UserError`` when there is none that works."""
    announced = compute_range(document)
    if announced is None:
        raise UserError(f'the compute API at {where} announces no '
                        f'microversions (a legacy v2.0 endpoint?); '
                        f'starcompactor needs {text(MINIMUM)} or later')
    low, high = announced
    chosen = min(high, NEWEST)
    if chosen < MINIMUM:
        raise UserError(f'the compute API at {where} supports microversions '
                        f'up to {text(high)}; starcompactor needs '
                        f'{text(MINIMUM)} or later, where the actions of '
                        f'deleted servers are visible')
    if chosen < low:
        raise UserError(f'the compute API at {where} requires microversion '
                        f'{text(low)} or later; starcompactor knows up to '
                        f'{text(NEWEST)}')
    return text(chosen)


def at_least(version, feature):
    """Whether microversion ``version`` (text) has ``feature`` (a tuple)."""
    return parse(version) >= feature
