"""The Nova compute API as a source: the same three tables, through HTTP.

Two listings, ``GET /servers/detail?all_tenants=True`` of live servers and
of deleted ones (``deleted=True``), paged with ``limit``/``marker``, are the
splits. Their servers, in chunks, are spread over the workers; each worker
reads a server's actions (``GET /servers/{id}/os-instance-actions``) and
each action's events (``.../os-instance-actions/{request_id}``) with
``concurrency`` requests in flight on one pooled session, and emits the
instance, action and event rows of whole chunks as Arrow batches.

A server whose actions cannot be read is left out whole, counted under
``gone`` (404: it went for good between the listing and the fetch) or
``http_<status>`` (an error after retries); the run goes on.
"""
import logging
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.sources.about import about_line
from starcompactor.pipeline.sources.nova_api import versions
from starcompactor.pipeline.sources.nova_api.client import ApiError, NovaClient
from starcompactor.pipeline.sources.nova_api.credentials import (
    CredentialSource)
from starcompactor.pipeline.sources.nova_api.rows import (
    Server, actions_table, event_rows, events_table, flavor_sizes,
    instances_table)
from starcompactor.pipeline.sources.read import ReadSplits
from starcompactor.transforms import counters
from starcompactor.transforms.schema import ACTIONS, EVENTS, INSTANCES

log = logging.getLogger(__name__)

LIVE, DELETED = 'live', 'deleted'
LISTINGS = (LIVE, DELETED)
SERVERS_PER_CHUNK = 200   # servers per element spread over the workers


def _next_page(body, links):
    """Whether Nova links a next page (it does when a page is full)."""
    return any(link.get('rel') == 'next' for link in body.get(links) or ())


def _changes_since(window):
    """``--start`` for ``changes-since``: Nova filters on ``updated_at``,
    which every action and event of a server moves forward, so a server
    (or an action) with an event at or after ``--start`` has changed since
    then. Events before it are still dropped by their start time."""
    start, _ = window
    return start.replace(' ', 'T') + 'Z' if start else None


def list_servers(client, listing, page_size, changes_since=None):
    """The pages (lists of ``Server``) of one listing.

    A marker Nova refuses (400, or 500 from a server it cannot load, after
    retries) is stepped back over: the page is asked for again after the
    server listed before the marker, and what was already seen is skipped.
    """
    params = {'all_tenants': 'True', 'limit': page_size}
    if listing == DELETED:
        params['deleted'] = 'True'
    elif changes_since:   # else changes-since lists deleted servers too
        params['deleted'] = 'False'
    if changes_since:
        params['changes-since'] = changes_since
    marker, fallbacks, seen = None, [], set()
    while True:
        try:
            body = client.get('servers/detail',
                              dict(params, marker=marker) if marker
                              else params)
        except ApiError as e:
            if not (marker and fallbacks and e.status in (400, 500)):
                raise UserError(f'the compute API failed listing {listing} '
                                f'servers: {e}') from None
            log.warning('the compute API refused marker %s (%s); going on '
                        'after the server listed before it', marker, e)
            marker = fallbacks.pop(0)
            continue
        records = body.get('servers') or []
        yield [Server.from_api(r) for r in records if r['id'] not in seen]
        if not records or not _next_page(body, 'servers_links'):
            return
        ids = [record['id'] for record in records]
        seen = set(ids)
        marker, fallbacks = ids[-1], ids[-2::-1]


@dataclass(frozen=True)
class ApiReading:
    """What workers need to read the API: where the credentials are (never
    the credentials), the microversion ``plan`` chose, paging, concurrency
    and the event window."""
    credentials: CredentialSource
    microversion: str
    page_size: int
    concurrency: int
    rate: Optional[float]
    window: tuple

    def client(self):
        return NovaClient(self.credentials.settings(), self.microversion,
                          self.concurrency, self.rate)


def report_requests(client):
    """The client's request tally into the run's counts (from the DoFn's
    own thread: counts from other threads reach neither Beam's counters nor
    the Counted step's data)."""
    for name, n in client.tally.take().items():
        counters.count(f'{counters.API}.requests_{name}', n)


def version_document(client):
    """Authenticates ``client``; (the compute endpoint, its version
    document), or one line on why not."""
    endpoint = client.authenticate()
    try:
        return endpoint, client.get('')
    except ApiError as e:
        raise UserError(f'cannot read the compute API\'s version document '
                        f'at {endpoint}: {e}') from None


class WithClient(beam.DoFn):
    """A DoFn with its own client, made on the worker."""

    def __init__(self, reading):
        self.reading = reading
        self.client = None

    def setup(self):
        self.client = self.reading.client()

    def teardown(self):
        if self.client:
            self.client.close()


class WithClientPool(WithClient):
    """A ``WithClient`` that keeps ``reading.concurrency`` requests in
    flight on a thread pool (``self.pool``), its threads named
    ``pool_name``."""
    pool_name = 'nova-api'

    def setup(self):
        super().setup()
        self.pool = ThreadPoolExecutor(self.reading.concurrency,
                                       thread_name_prefix=self.pool_name)

    def teardown(self):
        self.pool.shutdown(cancel_futures=True)
        super().teardown()


class ListServers(WithClient):
    """A listing (``live`` or ``deleted``) -> chunks of its servers."""

    def process(self, listing):
        for page in list_servers(self.client, listing,
                                 self.reading.page_size,
                                 _changes_since(self.reading.window)):
            for i in range(0, len(page), SERVERS_PER_CHUNK):
                yield page[i:i + SERVERS_PER_CHUNK]
            report_requests(self.client)


def url_path(*parts):
    return '/'.join(urllib.parse.quote(str(part), safe='') for part in parts)


def _left_out_because(error):
    """The reason a server is left out after ``error`` (an ``ApiError``)."""
    if error.status == 404:
        return counters.SERVER_GONE
    return counters.server_http_error(error.status)


class FetchHistories(WithClientPool):
    """A chunk of servers -> ``(table, batch)`` of its instances, their
    actions and their events, fetched ``concurrency`` requests at a time.

    In two rounds over the whole chunk: every server's action list, then
    every action's events. A server's requests then never queue behind each
    other, and the pool stays full until the last few requests of a round.
    """

    def setup(self):
        super().setup()
        self.flavors = {}   # flavor id -> sizes (None: no such flavor)
        self.paged_actions = versions.at_least(self.reading.microversion,
                                               versions.PAGED_ACTIONS)

    def process(self, servers):
        sizes = self._sizes(servers)
        left_out = {}    # uuid -> reason
        actions, events = [], []   # (uuid, request id), (uuid, event rows)
        for server, (request_ids, error) in zip(
                servers, self._each(self._request_ids, servers)):
            if error:
                left_out[server.uuid] = _left_out_because(error)
            else:
                actions += [(server.uuid, r) for r in request_ids]
        for (uuid, _), (rows, error) in zip(
                actions, self._each(self._events, actions)):
            if error:
                left_out.setdefault(uuid, _left_out_because(error))
            else:
                events.append((uuid, rows))
        for reason in left_out.values():
            counters.count_read(INSTANCES, 1)
            counters.count_rejected(INSTANCES, reason, 1)
        kept = [(server, server_sizes)
                for server, server_sizes in zip(servers, sizes)
                if server.uuid not in left_out]
        counters.count(counters.API_SIZES_UNKNOWN,
                       sum(1 for _, s in kept if s is None))
        report_requests(self.client)
        yield INSTANCES, instances_table(kept)
        yield ACTIONS, actions_table(
            [a for a in actions if a[0] not in left_out])
        yield EVENTS, events_table([row for uuid, rows in events
                                    if uuid not in left_out for row in rows])

    def _each(self, fetch, items):
        """``(result, None)`` or ``(None, ApiError)`` of ``fetch(item)`` for
        each of ``items``, on the pool."""
        def attempt(item):
            try:
                return fetch(item), None
            except ApiError as e:
                log.warning('%s; its server is left out', e)
                return None, e
        return self.pool.map(attempt, items)

    def _sizes(self, servers):
        """Each server's sizes; before 2.47 from its flavor, read once."""
        unknown = sorted({s.flavor_id for s in servers if s.sizes is None
                          and s.flavor_id and s.flavor_id not in self.flavors})
        self.flavors.update(zip(unknown, self.pool.map(self._flavor,
                                                       unknown)))
        return [s.sizes or self.flavors.get(s.flavor_id) for s in servers]

    def _flavor(self, flavor_id):
        try:
            return flavor_sizes(
                self.client.get(url_path('flavors', flavor_id))['flavor'])
        except ApiError as e:   # deleted since: the sizes stay unknown
            log.warning('flavor %s: %s; its servers\' sizes stay empty',
                        flavor_id, e)
            return None

    def _request_ids(self, server):
        """The request ids of a server's actions (paged from 2.58)."""
        path = url_path('servers', server.uuid, 'os-instance-actions')
        params = None
        if self.paged_actions:
            params = {'limit': self.reading.page_size}
            changes_since = _changes_since(self.reading.window)
            if changes_since:
                params['changes-since'] = changes_since
        request_ids = []
        while True:
            body = self.client.get(path, params)
            actions = body.get('instanceActions') or []
            request_ids += [action['request_id'] for action in actions]
            if not (self.paged_actions and actions and
                    _next_page(body, 'links')):
                return request_ids
            params = dict(params, marker=actions[-1]['request_id'])

    def _events(self, action):
        """The event rows of one action (``(uuid, request_id)``) that fall
        in the window."""
        uuid, request_id = action
        body = self.client.get(url_path('servers', uuid,
                                        'os-instance-actions', request_id))
        return event_rows(uuid, request_id,
                          body['instanceAction'].get('events') or (),
                          self.reading.window)


class ReadNovaApi(beam.PTransform):
    """PBegin -> ``(table, Arrow batch)`` pairs read through the API."""

    def __init__(self, listings, reading):
        super().__init__()
        self.listings = listings
        self.reading = reading

    def expand(self, pbegin):
        return (pbegin
                | 'ListServers' >> ReadSplits(self.listings,
                                              ListServers(self.reading))
                | 'SpreadServers' >> beam.Reshuffle()
                | 'FetchHistories' >> counters.Counted(
                    FetchHistories(self.reading)))


class NovaApiSource:
    """Every project's servers, live and deleted, with their actions and
    events, from the compute API of the cloud ``credentials`` point at."""

    def __init__(self, credentials, window, page_size, concurrency,
                 rate=None):
        self.credentials = credentials
        self.window = window
        self.page_size = page_size
        self.concurrency = concurrency
        self.rate = rate
        self.endpoint = None
        self.microversion = None

    def plan(self):
        """Authenticate, find the compute endpoint, choose the microversion
        and check the credentials may list every project's deleted
        servers: each failure is one line, before the run starts. The
        splits are the two listings; their size is unknown until read."""
        client = NovaClient(self.credentials.settings(), concurrency=1)
        try:
            self.endpoint, document = version_document(client)
            self.microversion = versions.negotiate(document, self.endpoint)
            client.use_microversion(self.microversion)
            try:
                client.get('servers/detail', {'all_tenants': 'True',
                                              'deleted': 'True', 'limit': 1})
            except ApiError as e:
                raise UserError(f'the compute API at {self.endpoint} cannot '
                                f'list deleted servers: {e}') from None
        finally:
            client.close()
        return list(LISTINGS), 0

    def _reading(self):
        return ApiReading(self.credentials, self.microversion,
                          self.page_size, self.concurrency, self.rate,
                          self.window)

    def reader(self, splits):
        return ReadNovaApi(splits, self._reading())

    def raw_identities(self, among=None):
        """Every user, project, instance name and host in the listings
        (with ``among``, only those among the candidates)."""
        if self.microversion is None:   # hostnames need 2.3 or later
            self.plan()
        client = self._reading().client()
        values = set()
        try:
            for listing in LISTINGS:
                for page in list_servers(client, listing, self.page_size,
                                         _changes_since(self.window)):
                    for server in page:
                        values.update(v for v in server.identities() if v)
        finally:
            client.close()
        return values if among is None else values & set(among)

    def describe(self):
        start, end = self.window
        return {'kind': 'nova-api', 'endpoint': self.endpoint,
                'microversion': self.microversion,
                'credentials': self.credentials.describe(),
                'window': {'start': start, 'end': end}}

    def about(self):
        return about_line(
            f'Nova API {self.endpoint} (microversion {self.microversion}, '
            f'credentials from {self.credentials.describe()})',
            'every project\'s servers, live and deleted', False, self.window)
