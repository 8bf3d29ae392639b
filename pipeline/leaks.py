"""Leak checks: does any output file hold a raw identity or the key?

Every field value of every shard is compared with the set of raw values the
source holds (users, projects, instance names, hosts); masking replaces a
whole field, so a leak is a whole field, or a whole member of a JSON object
field (v0.3 PROPERTIES, which holds a bare-metal instance's masked lease
id). The key, when one was supplied, is looked for as bytes anywhere in the
text formats and in every decoded value.
"""
import functools
import json
from dataclasses import dataclass

from starcompactor.pipeline.shards import (
    TEXT_FORMATS, field_values, file_format)


@dataclass(frozen=True)
class Leak:
    file: str
    row: int
    what: str

    def __str__(self):
        return f'{self.file} row {self.row}: {self.what}'


def _file_contains(path, needle, block=1 << 20):
    with open(path, 'rb') as f:
        tail = b''
        for chunk in iter(lambda: f.read(block), b''):
            if needle in tail + chunk:
                return True
            tail = chunk[-(len(needle) - 1):] if len(needle) > 1 else b''
    return False


@functools.lru_cache(maxsize=1 << 16)
def _members(text):
    """The values of a JSON object's members, as text (PROPERTIES values
    repeat: each is parsed once)."""
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(value, dict):
        return ()
    return tuple(str(v) for v in value.values() if v is not None)


def _texts(value):
    """A field value as text, and for a JSON object its members' too: each
    is a whole masked value, or a leak."""
    text = str(value)
    return (text, *_members(text)) if text.startswith('{') else (text,)


def find_leaks(paths, raw_values, key=None, rows_per_file=None):
    """All leaks in ``paths``; ``rows_per_file`` limits the check to a
    sample (the fields of the first rows of each shard; without it, text
    files are also searched for the key's bytes anywhere)."""
    raw_values = {v for v in raw_values if v}
    key_text = key.decode('utf-8', 'replace') if key else None
    leaks = []
    for path in paths:
        if key and rows_per_file is None and \
                file_format(path) in TEXT_FORMATS and \
                _file_contains(path, key):
            leaks.append(Leak(path, 0, 'the masking key'))
        for n, values in enumerate(field_values(path, rows_per_file), start=1):
            for value in values:
                text, *members = _texts(value)
                if text in raw_values or not raw_values.isdisjoint(members):
                    leaks.append(Leak(path, n, 'a raw identity in a field'))
                elif key_text and key_text in text:
                    leaks.append(Leak(path, n, 'the masking key'))
    return leaks


SAMPLE_ROWS = 1_000


def check(paths, source, key=None, rows_per_file=None):
    """Leaks of a trace read from ``source``, masked with ``key`` (bytes; a
    drawn key is gone: then only raw identities are looked for).
    A sample (``rows_per_file``) asks the source about its own values only,
    not for every raw identity."""
    among = None
    if rows_per_file is not None:
        among = {text for path in paths
                 for values in field_values(path, rows_per_file)
                 for value in values for text in _texts(value)}
    return find_leaks(paths, source.raw_identities(among), key, rows_per_file)
