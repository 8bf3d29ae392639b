"""HTTP plumbing: one loopback server for Keystone (``/identity``), Nova
(``/compute``) and Placement (``/placement``), routing, the chain in front
of Nova's and Placement's controllers (rate limiter, keystonemiddleware,
microversions) and the injected faults."""
import collections
import dataclasses
import json
import random
import re
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .compute import Compute, instance_not_found, parse_version, version_text
from .data import HOST_TABLES, NovaData, read_mysql
from .hosts import Hosts, HostData, Placement, placement_error
from .keystone import Identity
from .messages import (
    AUTHENTICATION_REQUIRED, ApiError, Request, nova_fault)

# wsgi.expected_errors: what Nova answers when a controller raises.
_UNEXPECTED = ('Unexpected API Error. Please report this at '
               'http://bugs.launchpad.net/nova/ and attach the Nova API log '
               'if possible.\n{}')


@dataclasses.dataclass
class Faults:
    """Failures to inject, all off by default; change them on a live server
    (``server.faults.error_500_rate = 0.1``).

    ``rate_limit_burst``: ``(n, retry_after_s)``, the next n compute API
    (or Placement) calls answer 429 with ``Retry-After: retry_after_s``
    (as a rate limiter in front of Nova would; discovery and Keystone are
    not limited). ``error_500_rate``: the share of compute API (and
    Placement) calls answering 500, drawn from ``random.Random(seed)``.
    ``poisoned_marker``: a server uuid; listing servers with it as marker
    answers 500, as Nova does for some broken instances.
    ``deleted_on_fetch``: server uuids whose os-instance-actions answer
    404, as for a server deleted between listing and fetching."""
    rate_limit_burst: tuple = None
    error_500_rate: float = 0.0
    seed: int = 0
    poisoned_marker: str = None
    deleted_on_fetch: set = dataclasses.field(default_factory=set)

    def __post_init__(self):
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def rate_limited(self):
        """Retry-After seconds if this call falls in the burst, else None."""
        with self._lock:
            if not self.rate_limit_burst or self.rate_limit_burst[0] < 1:
                return None
            left, retry_after = self.rate_limit_burst
            self.rate_limit_burst = (left - 1, retry_after) if left > 1 \
                else None
            return retry_after

    def fails(self):
        with self._lock:
            return self._random.random() < self.error_500_rate


@dataclasses.dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern
    name: str           # what ``requests`` counts it as
    handler: str        # 'service.method'
    behind: str         # COMPUTE, PLACEMENT (keystonemiddleware and
                        # microversions in front) or None


_COMPUTE = r'/compute/v2\.1'
COMPUTE, PLACEMENT = 'compute', 'placement'
_ROUTES = [_Route(method, re.compile(pattern), name, handler, behind)
           for method, pattern, name, handler, behind in (
    ('GET', r'/identity/?', '/identity/', 'identity.versions', None),
    ('GET', r'/identity/v3/?', '/identity/v3/', 'identity.version', None),
    ('POST', r'/identity/v3/auth/tokens', '/identity/v3/auth/tokens',
     'identity.issue_token', None),
    ('GET', r'/compute/?', '/compute/', 'compute.versions', None),
    ('GET', _COMPUTE + r'/?', '/compute/v2.1/', 'compute.version', None),
    ('GET', _COMPUTE + r'/servers/detail', '/servers/detail',
     'compute.list_servers', COMPUTE),
    ('GET', _COMPUTE + r'/flavors/(?P<flavor_id>[^/]+)', '/flavors/{id}',
     'compute.show_flavor', COMPUTE),
    ('GET', _COMPUTE + r'/servers/(?P<server_id>[^/]+)/os-instance-actions',
     '/servers/{id}/os-instance-actions', 'compute.list_actions', COMPUTE),
    ('GET', _COMPUTE + r'/servers/(?P<server_id>[^/]+)/os-instance-actions/'
                       r'(?P<request_id>[^/]+)',
     '/servers/{id}/os-instance-actions/{request_id}',
     'compute.show_action', COMPUTE),
    ('GET', _COMPUTE + r'/os-hypervisors', '/os-hypervisors',
     'hosts.list_hypervisors', COMPUTE),
    ('GET', _COMPUTE + r'/os-hypervisors/detail', '/os-hypervisors/detail',
     'hosts.list_hypervisors_detail', COMPUTE),
    ('GET', _COMPUTE + r'/os-services', '/os-services',
     'hosts.list_services', COMPUTE),
    ('GET', r'/placement/?', '/placement/', 'placement.root', None),
    ('GET', r'/placement/resource_providers/(?P<provider_uuid>[^/]+)/'
            r'inventories', '/resource_providers/{uuid}/inventories',
     'placement.list_inventories', PLACEMENT),
)]


class NovaApiServer:
    """Keystone v3, Nova's compute API and Placement on 127.0.0.1, a free
    port, over a Nova history: rows as Nova's DB columns, each with ``db``
    (its cell); hosts from ``compute_nodes`` and ``services`` rows
    (``hosts.HostData``; its ``providers`` are Placement's).

    ``requests`` counts the calls answered, by ``(method, route, status)``;
    compute API and Placement routes are named relative to their endpoint
    (``'/servers/detail'``), the others by their path. ``latency_s`` is
    added to every call; ``identity.token_ttl_s`` is the lifetime of tokens
    issued from then on; both can change while the server runs, like
    ``faults`` (see ``Faults``). ``stop()`` makes the service unreachable
    (connection refused, open connections dropped); ``start()`` brings it
    back on the same port, its tokens still valid."""

    def __init__(self, instances=(), actions=(), events=(), flavors=None, *,
                 compute_nodes=(), services=(), min_microversion='2.1',
                 max_microversion='2.96', max_limit=1000, latency_s=0.0,
                 token_ttl_s=3600, faults=None):
        self.data = NovaData(instances, actions, events, flavors)
        self.compute = Compute(self.data, parse_version(min_microversion),
                               parse_version(max_microversion), max_limit)
        self.host_data = HostData(compute_nodes, services)
        self.hosts = Hosts(self.host_data, self.compute)
        self.placement = Placement(self.host_data)
        self.identity = Identity(_busiest_project(self.data), token_ttl_s)
        self.faults = faults or Faults()
        self.latency_s = latency_s
        self.requests = collections.Counter()
        self.port = None
        self._lock = threading.Lock()
        self._httpd = self._thread = None

    @classmethod
    def from_mysql(cls, connection, databases, **options):
        """The server over the live tables of the cell ``databases`` on
        ``connection`` (PyMySQL), read once, now."""
        compute_nodes, services = read_mysql(connection, databases,
                                             HOST_TABLES)
        return cls(*read_mysql(connection, databases),
                   compute_nodes=compute_nodes, services=services, **options)

    @property
    def auth_url(self):
        return self.identity.auth_url

    def admin_env(self):
        return self.identity.password_env(self.identity.admin)

    def member_env(self):
        return self.identity.password_env(self.identity.member)

    def app_credential_env(self):
        return self.identity.app_credential_env()

    def revoke_tokens(self):
        self.identity.revoke_all()

    def start(self):
        self._httpd = _HttpServer(('127.0.0.1', self.port or 0), self)
        self.port = self._httpd.server_address[1]
        self.identity.base_url = f'http://127.0.0.1:{self.port}'
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={'poll_interval': 0.05},
            name=f'nova-api-{self.port}', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -- one call -------------------------------------------------------------

    def handle(self, handler):
        time.sleep(self.latency_s)
        url = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get('Content-Length') or 0)
        request = Request(
            method=handler.command, path=url.path,
            query=dict(urllib.parse.parse_qsl(url.query,
                                              keep_blank_values=True)),
            headers=handler.headers, body=handler.rfile.read(length),
            base_url='http://' + handler.headers.get(
                'Host', f'127.0.0.1:{self.port}'))
        route, params = _route(request)
        try:
            status, body, headers = self._answer(route, params, request)
        except ApiError as error:
            status, body, headers = error.status, error.body, error.headers
        if request.version:     # the microversion served is echoed
            headers = headers + _version_headers(route.behind,
                                                 request.version)
        with self._lock:
            self.requests[request.method,
                          route.name if route else request.path, status] += 1
        _send(handler, status, body, headers)

    def _answer(self, route, params, request):
        if route is None:
            raise nova_fault(404, 'The resource could not be found.')
        service, method = route.handler.split('.')
        if route.behind == COMPUTE:
            self._before_compute(route, params, request)
        elif route.behind == PLACEMENT:
            self._before_placement(request)
        return getattr(getattr(self, service), method)(request, **params)

    def _authenticate(self, request):
        """A rate limiter, then keystonemiddleware."""
        retry_after = self.faults.rate_limited()
        if retry_after is not None:
            raise _rate_limited(retry_after)
        request.token = self.identity.validate(
            request.headers.get('X-Auth-Token'))
        if request.token is None:
            raise ApiError(401, {'error': {
                'code': 401, 'title': 'Unauthorized',
                'message': AUTHENTICATION_REQUIRED}}, [(
                    'WWW-Authenticate',
                    f"Keystone uri='{self.identity.base_url}/identity'")])

    def _before_placement(self, request):
        self._authenticate(request)
        request.version = self.placement.requested_version(request.headers)
        if self.faults.fails():
            raise placement_error(500, 'Internal Server Error',
                                  'The server has either erred or is '
                                  'incapable of performing the requested '
                                  'operation.')

    def _before_compute(self, route, params, request):
        """What stands in front of Nova's controllers, in order: a rate
        limiter, keystonemiddleware, Nova's microversion check; then the
        faults of Nova itself."""
        self._authenticate(request)
        request.version = self.compute.requested_version(request.headers)
        if self.faults.fails():
            raise nova_fault(500, _UNEXPECTED.format(
                "<class 'oslo_db.exception.DBConnectionError'>"))
        marker = request.query.get('marker')
        if route.handler == 'compute.list_servers' and marker and \
                marker == self.faults.poisoned_marker:
            raise nova_fault(500, _UNEXPECTED.format("<class 'KeyError'>"))
        if params.get('server_id') in self.faults.deleted_on_fetch:
            raise instance_not_found(params['server_id'])


def _route(request):
    for route in _ROUTES:
        match = route.pattern.fullmatch(request.path)
        if match and route.method == request.method:
            return route, match.groupdict()
    return None, {}


def _rate_limited(retry_after):
    seconds = f'{retry_after:g}'
    error = nova_fault(429, 'This request was rate-limited.',
                       [('Retry-After', seconds)])
    error.body['overLimit']['retryAfter'] = seconds
    return error


def _version_headers(service, version):
    headers = [('OpenStack-API-Version',
                f'{service} {version_text(version)}'),
               ('Vary', 'OpenStack-API-Version')]
    if service == COMPUTE:
        headers += [('X-OpenStack-Nova-API-Version', version_text(version)),
                    ('Vary', 'X-OpenStack-Nova-API-Version')]
    return headers


def _send(handler, status, body, headers):
    data = json.dumps(body).encode()
    request_id = f'req-{uuid.uuid4()}'
    handler.send_response(status)
    for name, value in headers + [
            ('Content-Type', 'application/json'),
            ('Content-Length', str(len(data))),
            ('x-openstack-request-id', request_id),
            ('x-compute-request-id', request_id)]:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def _busiest_project(data):
    """The project of the member user: the one with most live servers."""
    live = collections.Counter(
        i['project_id'] for i in data.instances.values()
        if i.get('project_id') and not i.get('deleted'))
    return min(live, key=lambda p: (-live[p], p)) if live else \
        uuid.uuid4().hex


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'     # keep-alive, as clients pool connections
    # Headers and body go out in two writes: with Nagle's algorithm on, the
    # body waits for the client's delayed ACK, ~40 ms a request.
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        self.server.track(self.connection)

    def finish(self):
        super().finish()
        self.server.untrack(self.connection)

    def do_GET(self):
        self.server.api.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format, *args):
        """Quiet: the tests read ``requests``, not a log."""


class _HttpServer(ThreadingHTTPServer):

    def __init__(self, address, api):
        super().__init__(address, _Handler)
        self.api = api
        self._connections, self._lock = set(), threading.Lock()

    def track(self, connection):
        with self._lock:
            self._connections.add(connection)

    def untrack(self, connection):
        with self._lock:
            self._connections.discard(connection)

    def drop_connections(self):
        """Keep-alive connections would otherwise still be answered after
        stop(): an unreachable service must not answer at all."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass        # the client closed it meanwhile
