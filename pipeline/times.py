"""Reading the times a user gives on the command line."""
import datetime as dt

from dateutil import parser as dateutil_parser

from starcompactor.pipeline.errors import UserError

UTC = dt.timezone.utc


def parse_iso_utc(text, option):
    """An ISO-8601 time as an aware UTC datetime (naive means UTC)."""
    try:
        value = dateutil_parser.isoparse(text)
    except (ValueError, OverflowError):
        raise UserError(f'{option} {text!r} is not an ISO-8601 time such as '
                        f'2015-09-17T00:00:00Z or 2015-09-17') from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_seconds(value):
    return int(value.timestamp())


def to_nova_text(value):
    """As Nova stores times: naive UTC, whole seconds."""
    return value.strftime('%Y-%m-%d %H:%M:%S')


def to_iso(value):
    return value.strftime('%Y-%m-%dT%H:%M:%SZ')


def seconds_to_iso(seconds):
    """Seconds since 1970 as ISO 8601 UTC; None stays None."""
    if seconds is None:
        return None
    return to_iso(dt.datetime.fromtimestamp(seconds, UTC))
