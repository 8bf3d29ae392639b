"""A loopback Nova compute API (v2.1, microversions) and Keystone v3
identity service, serving a Nova history read from cell databases, with
faults to inject. See ``server.NovaApiServer``."""
from .server import Faults, NovaApiServer

__all__ = ['Faults', 'NovaApiServer']
