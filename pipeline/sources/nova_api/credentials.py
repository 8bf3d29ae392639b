"""Where the Nova API credentials come from, and Keystone sessions made
from them at run time.

A ``CredentialSource`` names a place, never a secret: the ``OS_*`` variables
of the environment (as an openrc sets them), an openrc file (read, never
run), or a cloud of ``clouds.yaml``. That is all the pipeline graph carries;
every worker reads the place itself when it makes its Keystone session, so
a password or an application-credential secret is never in the graph, the
command line or a log.
"""
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import yaml
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading

from starcompactor.pipeline.errors import UserError

ENV, OPENRC, CLOUD = 'env', 'openrc', 'cloud'

PASSWORD = 'password'
APPLICATION_CREDENTIAL = 'v3applicationcredential'
# Keystone v3 password (the generic plugin finds v3 from the auth URL) and
# v3 application credentials: what openrc files and clouds.yaml carry.
AUTH_TYPES = (PASSWORD, 'v3password', APPLICATION_CREDENTIAL)

# Where openstacksdk and python-openstackclient look for clouds.yaml (and
# secure.yaml, which holds the secrets of the same clouds), in this order.
CONFIG_FOLDERS = ('.', '~/.config/openstack', '/etc/openstack')
CLOUDS_FILE_ENV = 'OS_CLIENT_CONFIG_FILE'
SECURE_FILE_ENV = 'OS_CLIENT_SECURE_FILE'

_ASSIGNMENT = re.compile(r'\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$')
_UNSET = re.compile(r'\s*unset\s+(.*)$')
_NAME = re.compile(r'\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)')


def _shell_value(raw):
    """The value of ``NAME=raw`` as a shell would read a simple openrc line:
    one word, quoted or not, up to an unquoted ``#`` or blank; ``None`` when
    it is not that simple (a command substitution, say)."""
    value, quote, i = [], None, 0
    raw = raw.rstrip('\r\n')
    while i < len(raw):
        ch = raw[i]
        if quote == "'":
            if ch == "'":
                quote = None
            else:
                value.append(ch)
        elif ch == '\\' and i + 1 < len(raw):
            i += 1
            value.append(raw[i] if quote is None or raw[i] in '"\\$`'
                         else '\\' + raw[i])
        elif quote == '"':
            if ch == '"':
                quote = None
            elif ch == '`' or raw.startswith('$(', i):
                return None
            else:
                value.append('\0$' if ch == '$' else ch)
        elif ch in '"\'':
            quote = ch
        elif ch in ' \t;#':
            break
        elif ch == '`' or raw.startswith('$(', i):
            return None
        else:
            value.append('\0$' if ch == '$' else ch)
        i += 1
    return None if quote else ''.join(value)


def _expand(value, known):
    """Expand ``$NAME`` and ``${NAME}`` where ``_shell_value`` marked the
    ``$`` (``\\0$``: not inside single quotes); ``None`` if a name is
    unknown, as ``$OS_PASSWORD_INPUT`` in Horizon's openrc, which a ``read``
    prompt fills in."""
    first, *marked = value.split('\0$')
    expanded = [first]
    for part in marked:
        name = _NAME.match(part)
        if not name:
            expanded.append('$' + part)
            continue
        variable = name.group(1) or name.group(2)
        if variable not in known:
            return None
        expanded.append(known[variable] + part[name.end():])
    return ''.join(expanded)


def read_openrc(path, environ):
    """The ``OS_*`` variables an openrc file would set on top of
    ``environ``, read without running it: ``export NAME=value`` and
    ``unset NAME`` lines; anything else (``echo``, ``read``, ``if``) is
    skipped. A value that needs something the file cannot give (a prompt,
    a command) leaves the variable as ``environ`` has it."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'cannot read openrc file {path}: '
                        f'{getattr(e, "strerror", None) or e}') from None
    variables = {k: v for k, v in environ.items() if k.startswith('OS_')}
    known = dict(environ)
    for line in lines:
        unset = _UNSET.match(line)
        if unset:
            for name in unset.group(1).split():
                variables.pop(name, None)
                known.pop(name, None)
            continue
        assignment = _ASSIGNMENT.match(line)
        if not assignment:
            continue
        name, raw = assignment.groups()
        value = _shell_value(raw)
        value = _expand(value, known) if value is not None else None
        if value is None:
            continue
        known[name] = value
        if name.startswith('OS_'):
            variables[name] = value
    return variables


@dataclass(frozen=True)
class CloudSettings:
    """What a Keystone session needs; ``auth`` holds the secret, and is
    kept out of ``repr`` so that no traceback or log line shows it."""
    where: str                        # for messages: where these came from
    auth_type: str
    auth: dict = field(repr=False)
    region_name: Optional[str] = None
    interface: str = 'public'
    verify: object = True             # True, False or a CA bundle path

    @property
    def auth_url(self):
        return self.auth.get('auth_url')

    @property
    def user(self):
        """Who authenticates, for messages (never the secret)."""
        return (self.auth.get('username') or self.auth.get('user_id') or
                self.auth.get('application_credential_name') or
                self.auth.get('application_credential_id') or '?')

    def plugin(self):
        """The keystoneauth plugin; ``UserError`` when options are missing."""
        loader = loading.get_plugin_loader(self.auth_type)
        # keystoneauth leaves a missing password to Keystone's 401.
        required = [opt.dest for opt in loader.get_options() if opt.required]
        if self.auth_type != APPLICATION_CREDENTIAL:
            required.append('password')
        missing = [name for name in required if not self.auth.get(name)]
        if missing:
            raise UserError(f'{self.where} lacks {", ".join(missing)} for '
                            f'{self.auth_type} authentication')
        try:
            return loader.load_from_options(**self.auth)
        except (ks_exceptions.OptionError, TypeError) as e:
            raise UserError(f'{self.where}: {e}') from None


def _auth_type(name, where):
    if name not in AUTH_TYPES:
        raise UserError(f'{where}: unsupported auth type {name!r} (use '
                        f'{" or ".join(AUTH_TYPES)})')
    return name


def _truthy(text):
    return str(text).strip().lower() in ('1', 'true', 'yes', 'on')


def settings_from_variables(variables, where):
    """``CloudSettings`` from ``OS_*`` variables (an openrc's names)."""
    app_credential = any(name in variables for name in (
        'OS_APPLICATION_CREDENTIAL_ID', 'OS_APPLICATION_CREDENTIAL_NAME',
        'OS_APPLICATION_CREDENTIAL_SECRET'))
    auth_type = _auth_type(variables.get('OS_AUTH_TYPE') or (
        APPLICATION_CREDENTIAL if app_credential else PASSWORD), where)
    auth = {}
    for opt in loading.get_plugin_loader(auth_type).get_options():
        for name in opt.argparse_envvars:   # OS_PROJECT_NAME, OS_TENANT_NAME
            if variables.get(name):
                auth.setdefault(opt.dest, variables[name])
    if not auth.get('auth_url'):
        raise UserError(f'{where} has no OS_AUTH_URL: source your openrc, '
                        f'or give --osrc FILE or --os-cloud NAME')
    verify = variables.get('OS_CACERT') or True
    if _truthy(variables.get('OS_INSECURE', '')):
        verify = False
    return CloudSettings(
        where, auth_type, auth, variables.get('OS_REGION_NAME') or None,
        variables.get('OS_INTERFACE') or variables.get('OS_ENDPOINT_TYPE')
        or 'public', verify)


def _merge(base, extra):
    """``extra`` laid over ``base``, nested dictionaries merged."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _first_config(file_env, filename, environ):
    if environ.get(file_env):
        return environ[file_env]
    for folder in CONFIG_FOLDERS:
        path = os.path.abspath(os.path.join(os.path.expanduser(folder),
                                            filename))
        if os.path.isfile(path):
            return path
    return None


def _load_yaml(path):
    try:
        with open(path, encoding='utf-8') as f:
            document = yaml.safe_load(f) or {}
    except OSError as e:
        raise UserError(f'cannot read {path}: {e.strerror}') from None
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        at = f' line {mark.line + 1}' if mark else ''
        raise UserError(f'{path}{at} is not valid YAML') from None
    if not isinstance(document, dict):
        raise UserError(f'{path} is not a clouds.yaml (no "clouds:" map)')
    return document


def settings_from_clouds_yaml(name, environ):
    """``CloudSettings`` of cloud ``name`` in clouds.yaml (the first found
    of ``$OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``,
    ``~/.config/openstack/clouds.yaml``, ``/etc/openstack/clouds.yaml``),
    with its secure.yaml laid over it."""
    path = _first_config(CLOUDS_FILE_ENV, 'clouds.yaml', environ)
    if not path:
        raise UserError(f'--os-cloud {name}: no clouds.yaml (looked in '
                        f'${CLOUDS_FILE_ENV}, ' +
                        ', '.join(CONFIG_FOLDERS) + ')')
    clouds = _load_yaml(path).get('clouds') or {}
    if name not in clouds:
        known = ', '.join(sorted(map(str, clouds))) or 'none'
        raise UserError(f'no cloud {name!r} in {path} (it has: {known})')
    cloud = clouds[name]
    secure = _first_config(SECURE_FILE_ENV, 'secure.yaml', environ)
    if secure:
        cloud = _merge(cloud, (_load_yaml(secure).get('clouds') or {})
                       .get(name) or {})
    where = f'cloud {name!r} in {path}'
    auth = {str(k): v for k, v in (cloud.get('auth') or {}).items()
            if v is not None}
    default_type = (APPLICATION_CREDENTIAL
                    if 'application_credential_secret' in auth else PASSWORD)
    auth_type = _auth_type(cloud.get('auth_type') or default_type, where)
    if not auth.get('auth_url'):
        raise UserError(f'{where} has no auth.auth_url')
    verify = cloud.get('cacert') or True
    if cloud.get('verify') is False or cloud.get('insecure') is True:
        verify = False
    return CloudSettings(where, auth_type, auth, cloud.get('region_name'),
                         cloud.get('interface') or 'public', verify)


@dataclass(frozen=True)
class CredentialSource:
    """Where credentials are: ``env`` (the ``OS_*`` variables of the
    process reading them), ``openrc`` (``location`` is the file) or
    ``cloud`` (``location`` is the cloud's name in clouds.yaml)."""
    kind: str = ENV
    location: str = ''

    def describe(self):
        return {ENV: 'the OS_* environment',
                OPENRC: f'openrc file {self.location}',
                CLOUD: f'cloud {self.location!r} of clouds.yaml'}[self.kind]

    def settings(self, environ=None):
        environ = os.environ if environ is None else environ
        if self.kind == OPENRC:
            return settings_from_variables(
                read_openrc(self.location, environ),
                f'openrc file {self.location}')
        if self.kind == CLOUD:
            return settings_from_clouds_yaml(self.location, environ)
        return settings_from_variables(environ, 'the OS_* environment')


def credential_source(osrc=None, os_cloud=None):
    """The source the options name; the environment when neither is given."""
    if osrc and os_cloud:
        raise UserError('give either --osrc or --os-cloud, not both')
    if osrc:
        return CredentialSource(OPENRC, osrc)
    if os_cloud:
        return CredentialSource(CLOUD, os_cloud)
    return CredentialSource(ENV)
