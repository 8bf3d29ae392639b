"""A pooled, retrying, counted keystoneauth session on the compute API
(and Placement, where hosts need it).

keystoneauth1 authenticates (Keystone v3 password or application
credential), finds the compute endpoint in the service catalog, sends the
microversion headers and renews tokens before they expire; on a 401
(a token revoked early) this client renews it and sends the request
again. Below it, urllib3's ``Retry`` (mounted on the ``requests``
session keystoneauth sends through) retries connection errors, 429 and
5xx with exponential backoff and jitter, honouring ``Retry-After``. Every
request sent, retried or failed for good is tallied here: worker threads
cannot touch Beam's counters, so the DoFn that owns a client reports the
tally (``take()``) from its own thread.
"""
import re
import threading
import time
from collections import Counter

import requests
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from starcompactor import __version__
from starcompactor.pipeline.errors import UserError

MADE, RETRIED, FAILED = 'made', 'retried', 'failed'
COMPUTE, PLACEMENT = 'compute', 'placement'     # service types
TIMEOUT_S = 60
RETRIABLE_STATUSES = (429, 500, 502, 503, 504)
# Backoff before the n-th retry in a row: 0, then 0.25 * 2**(n-1) s plus up
# to 0.25 s of jitter (0.5, 1, 2, 4 s), or what Retry-After asks. A
# request still failing after that (~8 s) counts as failed.
RETRY_SETTINGS = dict(
    total=None, connect=5, read=2, status=5, other=0,
    backoff_factor=0.25, backoff_jitter=0.25, backoff_max=30,
    status_forcelist=RETRIABLE_STATUSES,
    # POST is only Keystone's token request, which is safe to repeat.
    allowed_methods=('GET', 'POST'),
    respect_retry_after_header=True, raise_on_status=False)


class RequestTally:
    """Requests made, retried and failed, from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = Counter()

    def add(self, name, n=1):
        with self._lock:
            self._counts[name] += n

    def take(self):
        """The counts since the last ``take()``."""
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts


class _CountedRetry(Retry):
    """urllib3's retry policy, tallying each retry it grants."""
    tally = None

    def new(self, **kwargs):
        retry = super().new(**kwargs)
        retry.tally = self.tally
        return retry

    def increment(self, *args, **kwargs):
        retry = super().increment(*args, **kwargs)   # raises when exhausted
        self.tally.add(MADE)
        self.tally.add(RETRIED)
        return retry


class RequestGate:
    """keystoneauth's hook around every request it sends (its
    ``rate_semaphore``): counts the request and, with ``rate`` (requests
    per second), starts requests at least ``1 / rate`` s apart."""

    def __init__(self, tally, rate=None):
        self.tally = tally
        self.interval = 1.0 / rate if rate else 0.0
        self._lock = threading.Lock()
        self._next_start = 0.0

    def __enter__(self):
        self.tally.add(MADE)
        if self.interval:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start)
                self._next_start = start + self.interval
            time.sleep(start - now)

    def __exit__(self, *exc_info):
        return False


class ApiError(Exception):
    """The compute API (or Placement) answered a request with an error
    status."""

    def __init__(self, status, path, message=''):
        super().__init__(f'HTTP {status} on {path}'
                         + (f': {message}' if message else ''))
        self.status = status
        self.path = path


def _fault(response):
    """Nova's fault message (``{"itemNotFound": {"message": ...}}``)."""
    try:
        body = response.json()
        fault = next(iter(body.values())) if isinstance(body, dict) else {}
        return str(fault.get('message', ''))[:200]
    except (ValueError, StopIteration, AttributeError):
        return ''


def _reason(error):
    """Why a request got no answer, in a few words (urllib3's messages nest
    the socket error deep inside a repr)."""
    text = str(error)
    errno = re.search(r'\[Errno -?\d+\] ([^\'"()]+)', text)
    if errno:
        return errno.group(1).strip()
    if 'timed out' in text:
        return 'timed out'
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]


class NovaClient:
    """The compute API (and Placement) of the cloud ``settings``
    (``CloudSettings``) describe, with at most ``concurrency`` pooled
    connections; ``purpose`` says, when admin rights are missing, what
    they were needed for."""

    def __init__(self, settings, microversion=None, concurrency=8, rate=None,
                 purpose='list every project\'s servers and their actions'):
        self.settings = settings
        self.purpose = purpose
        self.tally = RequestTally()
        self._renewal = threading.Lock()
        retry = _CountedRetry(**RETRY_SETTINGS)
        retry.tally = self.tally
        http = requests.Session()
        pool = HTTPAdapter(pool_maxsize=max(concurrency, 10),
                           max_retries=retry)
        http.mount('http://', pool)
        http.mount('https://', pool)
        # Keystone's requests pass the session's gate; the adapter would
        # put its own in front of compute requests, so get() passes it.
        self.gate = RequestGate(self.tally, rate)
        self.session = ks_session.Session(
            auth=settings.plugin(), session=http, verify=settings.verify,
            timeout=TIMEOUT_S, rate_semaphore=self.gate,
            app_name='starcompactor', app_version=__version__)
        self.services = {
            service: ks_adapter.Adapter(
                self.session, service_type=service,
                interface=settings.interface,
                region_name=settings.region_name, raise_exc=False)
            for service in (COMPUTE, PLACEMENT)}
        self.compute = self.services[COMPUTE]
        self.compute.default_microversion = microversion

    def use_microversion(self, microversion):
        self.compute.default_microversion = microversion

    def authenticate(self):
        """Get a token and the compute endpoint; ``UserError`` saying why
        not (wrong password, Keystone unreachable, no compute endpoint)."""
        try:
            self.session.get_token()
        except ks_exceptions.ClientException as e:
            raise self._keystone_error(e) from None
        return self.endpoint(COMPUTE)

    def endpoint(self, service):
        """The URL of ``service`` in the catalog; ``UserError`` if none."""
        try:
            return self.services[service].get_endpoint()
        except ks_exceptions.EndpointNotFound:
            region = self.settings.region_name
            raise UserError(
                f'no {service} endpoint (interface {self.settings.interface}'
                + (f', region {region}' if region else '') +
                f') in the service catalog of {self.settings.auth_url}'
                f' ({self.settings.where})') from None
        except ks_exceptions.ClientException as e:
            raise self._keystone_error(e) from None

    def _keystone_error(self, error):
        where = f'Keystone at {self.settings.auth_url}'
        if isinstance(error, ks_exceptions.Unauthorized):
            return UserError(f'{where} refused {self.settings.user!r} '
                             f'({self.settings.where}): wrong password or '
                             f'secret, or no such user or project')
        if isinstance(error, (ks_exceptions.ConnectionError,
                              ks_exceptions.DiscoveryFailure)):
            return UserError(f'cannot reach {where}: {_reason(error)}')
        return UserError(f'{where}: {_reason(error)}')

    def get(self, path, params=None, service=COMPUTE):
        """The JSON body of ``GET path`` of ``service``; ``ApiError`` for an
        error status (after retries), ``UserError`` when credentials stop
        working or the API cannot be reached at all."""
        try:
            response = self._send(path, params, service)
            if response.status_code == 401:   # revoked or expired early
                self._renew_token(response.request.headers['X-Auth-Token'])
                response = self._send(path, params, service)
        except ks_exceptions.ClientException as e:
            self.tally.add(FAILED)
            if isinstance(e, ks_exceptions.ConnectionError):
                raise UserError(f'no answer from the {service} API ({path}) '
                                f'after retries: {_reason(e)}') from None
            raise self._keystone_error(e) from None
        if response.status_code >= 400:
            self.tally.add(FAILED)
            if response.status_code in (401, 403):
                raise UserError(
                    f'the {service} API refused {self.settings.user!r} '
                    f'(HTTP {response.status_code} on {path}): admin '
                    f'credentials are needed to {self.purpose}')
            raise ApiError(response.status_code, path, _fault(response))
        try:
            return response.json()
        except ValueError:
            self.tally.add(FAILED)
            raise ApiError(response.status_code, path,
                           'the answer is not JSON') from None

    def _send(self, path, params, service):
        return self.services[service].get(
            path, params=params, rate_semaphore=self.gate, allow_reauth=False)

    def _renew_token(self, refused):
        """A new token, unless another thread got one since ``refused`` was
        refused. (keystoneauth renews on a 401 itself, but one thread's
        renewal can wipe the token another thread just got, which then
        sends nothing and returns the 401.)"""
        with self._renewal:
            if self.session.get_token() == refused:
                self.session.invalidate()
                self.session.get_token()

    def close(self):
        self.session.session.close()
