"""Masking identities with a keyed hash (HMAC-SHA256).

The key never enters the pipeline graph: ``MaskKey`` produces it at run time,
inside the pipeline, as a one-element PCollection that ``MaskIdentities``
takes as a side input. Runners store and display submitted graphs; a key
drawn or read at construction time would be stored with them.
"""
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa

from starcompactor.transforms.buckets import dictionary_encoded
from starcompactor.transforms.schema import (
    BLAZAR_HOSTS, BLAZAR_LEASES, COMPUTE_NODES, INSTANCES, IRONIC_NODES,
    SERVICES)

HMAC_SHA256 = 'hmac-sha256'
NO_MASKING = 'none'
MASK_METHODS = (HMAC_SHA256, NO_MASKING)

KEY_ENV = 'STARCOMPACTOR_MASK_KEY'
KEY_BYTES = 32          # a drawn key: 256 bits
MIN_KEY_BYTES = 16      # a supplied key shorter than this is refused
MASK_HEX_CHARS = 32

# Identities masked by default (joined column names); the uuid on request.
DEFAULT_MASKED = ('user_id', 'project_id', 'hostname', 'host')
UUID_COLUMN = 'instance_uuid'
# The raw identities of each source table a trace can hold (masked), which
# leak checks look for.
SOURCE_IDENTITIES = {INSTANCES: DEFAULT_MASKED + ('node',),
                     COMPUTE_NODES: ('host', 'hypervisor_hostname'),
                     SERVICES: ('host',),
                     IRONIC_NODES: ('uuid',),
                     BLAZAR_HOSTS: ('hypervisor_hostname',),
                     BLAZAR_LEASES: ('id',)}

_FINGERPRINT_LABEL = b'starcompactor key fingerprint v1'


class MaskKeyError(ValueError):
    pass


@dataclass(frozen=True)
class KeySource:
    """Where the key comes from: never the key itself.

    ``kind`` is ``random`` (drawn per run), ``file`` (``location`` is a path)
    or ``env`` (``location`` is a variable name).
    """
    kind: str = 'random'
    location: str = ''

    def describe(self):
        return {'random': 'a random per-run key',
                'file': f'the key in {self.location}',
                'env': f'the key in ${self.location}'}[self.kind]


def key_source_for(key_file=None, environ=os.environ):
    if key_file:
        return KeySource('file', key_file)
    if environ.get(KEY_ENV):
        return KeySource('env', KEY_ENV)
    return KeySource('random')


def load_key(source, environ=os.environ):
    """The key bytes; raises ``MaskKeyError`` (never showing the key)."""
    if source.kind == 'random':
        return secrets.token_bytes(KEY_BYTES)
    if source.kind == 'file':
        try:
            with open(source.location, 'rb') as f:
                key = f.read()
        except OSError as e:
            raise MaskKeyError(
                f'cannot read mask key file {source.location}: '
                f'{e.strerror}') from None
        if key.endswith(b'\n'):
            key = key[:-1]
    else:
        key = environ.get(source.location, '').encode('utf-8')
    if not key:
        raise MaskKeyError(f'{source.describe()} is empty')
    if len(key) < MIN_KEY_BYTES:
        raise MaskKeyError(
            f'{source.describe()} is {len(key)} bytes long; '
            f'use at least {MIN_KEY_BYTES} (32 random bytes are best)')
    return key


class Masker:
    """HMAC-SHA256 (RFC 2104) under one key, truncated to ``MASK_HEX_CHARS``
    hex digits. The key's inner and outer hash states are computed once and
    copied per value: over twice as fast as ``hmac.new`` per value, and a
    trace masks millions of distinct values."""

    def __init__(self, key):
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b'\0')
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, value):
        """The masked form of one value; empty and missing values stay so."""
        if not value:
            return value
        inner = self._inner.copy()
        inner.update(value.encode('utf-8'))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:MASK_HEX_CHARS]


def mask_value(key, value):
    """The masked form of one value; empty and missing values stay so."""
    return Masker(key)(value)


def mask_column(column, masker):
    """Mask an Arrow string column (or dictionary of strings), hashing each
    distinct value once; returns a plain string column."""
    encoded = dictionary_encoded(column)
    masked = pa.array([masker(v) for v in encoded.dictionary.to_pylist()],
                      pa.string())
    return masked.take(encoded.indices)


def key_fingerprint(key):
    """Tells whether two traces share a key, without revealing it."""
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


def masked_columns(mask_uuid):
    return DEFAULT_MASKED + ((UUID_COLUMN,) if mask_uuid else ())


class MaskKey(beam.PTransform):
    """PBegin -> a PCollection holding the masking key, made at run time."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def expand(self, pbegin):
        return (pbegin
                | 'WhereTheKeyIs' >> beam.Create([self.source])
                | 'LoadOrDrawKey' >> beam.Map(load_key))


class MaskIdentities(beam.DoFn):
    """Replaces identity columns of Arrow tables by their keyed hash."""

    def __init__(self, columns):
        self.columns = tuple(columns)

    def process(self, table, key):
        masker = Masker(key)
        for name in self.columns:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name,
                                     mask_column(table.column(name), masker))
        yield table
