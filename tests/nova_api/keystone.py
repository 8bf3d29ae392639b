"""Keystone v3: version discovery and ``POST /v3/auth/tokens`` with the
``password`` and ``application_credential`` methods, answering as the
Identity API v3 reference shows (201, ``X-Subject-Token``, a token body with
``expires_at``, roles and the service catalog; 401 with Keystone's error
body for bad credentials). Two users in domain Default: ``admin`` (roles
admin, member, reader on project admin) and ``demo`` (member, reader on
project demo); one application credential of admin. Tokens are always
project-scoped: this Keystone does not issue unscoped ones."""
import dataclasses
import datetime as dt
import json
import secrets
import threading
import uuid

from .messages import AUTHENTICATION_REQUIRED, keystone_error

DOMAIN = {'id': 'default', 'name': 'Default'}
REGION = 'RegionOne'
ROLE_IDS = {name: uuid.uuid5(uuid.NAMESPACE_OID, name).hex
            for name in ('admin', 'member', 'reader')}


def keystone_time(value):
    """Keystone's token times: microseconds and a Z."""
    return value.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    name: str
    password: str
    project: dict
    roles: tuple


@dataclasses.dataclass(frozen=True)
class Token:
    id: str
    user: User
    expires_at: dt.datetime
    body: dict

    @property
    def project_id(self):
        return self.user.project['id']

    @property
    def is_admin(self):
        return 'admin' in self.user.roles


class Identity:
    """Users, tokens and discovery. ``token_ttl_s`` applies to tokens issued
    from then on; ``revoke_all()`` invalidates every token issued."""

    def __init__(self, member_project_id, token_ttl_s):
        self.token_ttl_s = token_ttl_s
        self.base_url = None            # http://127.0.0.1:PORT, once started
        admin_project = {'id': uuid.uuid4().hex, 'name': 'admin',
                         'domain': DOMAIN}
        member_project = {'id': member_project_id, 'name': 'demo',
                          'domain': DOMAIN}
        self.admin = User(uuid.uuid4().hex, 'admin', secrets.token_urlsafe(16),
                          admin_project, ('admin', 'member', 'reader'))
        self.member = User(uuid.uuid4().hex, 'demo',
                           secrets.token_urlsafe(16), member_project,
                           ('member', 'reader'))
        self.app_credential = {'id': uuid.uuid4().hex,
                               'name': 'starcompactor-trace',
                               'secret': secrets.token_urlsafe(32),
                               'user': self.admin}
        self._tokens = {}
        self._lock = threading.Lock()

    @property
    def auth_url(self):
        return f'{self.base_url}/identity/v3'

    # -- environments, as an openrc sets them ---------------------------------

    def password_env(self, user):
        return {'OS_AUTH_URL': self.auth_url, 'OS_USERNAME': user.name,
                'OS_PASSWORD': user.password,
                'OS_PROJECT_NAME': user.project['name'],
                'OS_USER_DOMAIN_NAME': DOMAIN['name'],
                'OS_PROJECT_DOMAIN_NAME': DOMAIN['name'],
                'OS_REGION_NAME': REGION, 'OS_INTERFACE': 'public',
                'OS_IDENTITY_API_VERSION': '3'}

    def app_credential_env(self):
        return {'OS_AUTH_TYPE': 'v3applicationcredential',
                'OS_AUTH_URL': self.auth_url,
                'OS_APPLICATION_CREDENTIAL_ID': self.app_credential['id'],
                'OS_APPLICATION_CREDENTIAL_SECRET':
                    self.app_credential['secret'],
                'OS_REGION_NAME': REGION, 'OS_INTERFACE': 'public',
                'OS_IDENTITY_API_VERSION': '3'}

    # -- discovery ------------------------------------------------------------

    def _version(self):
        return {'id': 'v3.14', 'status': 'stable',
                'updated': '2020-04-07T00:00:00Z',
                'links': [{'rel': 'self', 'href': f'{self.auth_url}/'}],
                'media-types': [{
                    'base': 'application/json',
                    'type': 'application/vnd.openstack.identity-v3+json'}]}

    def versions(self, request):
        return 300, {'versions': {'values': [self._version()]}}, []

    def version(self, request):
        return 200, {'version': self._version()}, []

    # -- tokens ---------------------------------------------------------------

    def issue_token(self, request):
        try:
            auth = json.loads(request.body)['auth']
            methods = auth['identity']['methods']
            if 'password' in methods:
                user = self._password_user(auth['identity']['password'])
                self._check_scope(auth['scope'], user)
            elif 'application_credential' in methods:
                user = self._app_credential_user(
                    auth['identity']['application_credential'])
            else:
                raise keystone_error(
                    401, 'Attempted to authenticate with an unsupported '
                         'method.')
        except (KeyError, TypeError, ValueError):
            raise keystone_error(
                400, 'The request body is not a project-scoped password or '
                     'application_credential authentication.') from None
        token = self._new_token(user, methods)
        return 201, token.body, [('X-Subject-Token', token.id)]

    def validate(self, token_id):
        """The token, or None if unknown, revoked or expired."""
        with self._lock:
            token = self._tokens.get(token_id)
        if token is None or token.expires_at <= _now():
            return None
        return token

    def revoke_all(self):
        with self._lock:
            self._tokens.clear()

    def _password_user(self, password):
        wanted = password['user']
        for user in (self.admin, self.member):
            if (wanted.get('id') == user.id or (
                    wanted.get('name') == user.name
                    and _is_default_domain(wanted['domain']))) \
                    and wanted['password'] == user.password:
                return user
        raise keystone_error(401, AUTHENTICATION_REQUIRED)

    def _check_scope(self, scope, user):
        project = scope['project']
        if not (project.get('id') == user.project['id'] or (
                project.get('name') == user.project['name']
                and _is_default_domain(project['domain']))):
            raise keystone_error(401, AUTHENTICATION_REQUIRED)

    def _app_credential_user(self, credential):
        if (credential['id'] != self.app_credential['id']
                or credential['secret'] != self.app_credential['secret']):
            raise keystone_error(401, AUTHENTICATION_REQUIRED)
        return self.app_credential['user']

    def _new_token(self, user, methods):
        issued_at = _now()
        expires_at = issued_at + dt.timedelta(seconds=self.token_ttl_s)
        body = {'token': {
            'methods': list(methods),
            'user': {'domain': DOMAIN, 'id': user.id, 'name': user.name,
                     'password_expires_at': None},
            'audit_ids': [secrets.token_urlsafe(16)],
            'expires_at': keystone_time(expires_at),
            'issued_at': keystone_time(issued_at),
            'project': user.project, 'is_domain': False,
            'roles': [{'id': ROLE_IDS[r], 'name': r} for r in user.roles],
            'catalog': self._catalog()}}
        if 'application_credential' in methods:
            body['token']['application_credential'] = {
                'id': self.app_credential['id'],
                'name': self.app_credential['name'], 'restricted': True}
        token = Token('gAAAAA' + secrets.token_urlsafe(96), user, expires_at,
                      body)
        with self._lock:
            self._tokens[token.id] = token
        return token

    def _catalog(self):
        def service(kind, name, url):
            return {'type': kind, 'name': name,
                    'id': uuid.uuid5(uuid.NAMESPACE_URL, url).hex,
                    'endpoints': [{
                        'id': uuid.uuid5(uuid.NAMESPACE_URL,
                                         f'{interface} {url}').hex,
                        'interface': interface, 'region_id': REGION,
                        'region': REGION, 'url': url}
                        for interface in ('public', 'internal', 'admin')]}
        return [service('compute', 'nova', f'{self.base_url}/compute/v2.1'),
                service('placement', 'placement',
                        f'{self.base_url}/placement'),
                service('identity', 'keystone', f'{self.base_url}/identity')]


def _is_default_domain(domain):
    return domain.get('id') == DOMAIN['id'] or \
        domain.get('name') == DOMAIN['name']


def _now():
    return dt.datetime.now(dt.timezone.utc)
