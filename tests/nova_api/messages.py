"""What the services receive (``Request``) and their error answers, in the
bodies Nova, Keystone and keystonemiddleware send."""
import dataclasses
import email.message

# nova/api/openstack/wsgi.py, Fault._fault_names; any other code is a
# "computeFault".
NOVA_FAULT_NAMES = {
    400: 'badRequest', 401: 'unauthorized', 403: 'forbidden',
    404: 'itemNotFound', 405: 'badMethod', 409: 'conflictingRequest',
    413: 'overLimit', 415: 'badMediaType', 429: 'overLimit',
    501: 'notImplemented', 503: 'serviceUnavailable'}
KEYSTONE_TITLES = {400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found'}
AUTHENTICATION_REQUIRED = 'The request you have made requires authentication.'


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict                  # the last value of each query parameter
    headers: email.message.Message
    body: bytes
    base_url: str                # http://HOST:PORT, as the client addressed it
    token: object = None         # keystone.Token, once validated
    version: tuple = None        # (major, minor), once the microversion read


class ApiError(Exception):
    """An error answer: HTTP status, JSON body, extra headers."""

    def __init__(self, status, body, headers=()):
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, list(headers)


def nova_fault(status, message, headers=()):
    name = NOVA_FAULT_NAMES.get(status, 'computeFault')
    return ApiError(status, {name: {'code': status, 'message': message}},
                    headers)


def keystone_error(status, message, headers=()):
    return ApiError(status, {'error': {
        'code': status, 'message': message,
        'title': KEYSTONE_TITLES.get(status, 'Error')}}, headers)
