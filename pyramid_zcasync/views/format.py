"""The admin views' formats, in one place: durations, datetimes, job ids,
and the parsing of query parameters into clear 400/404 errors.

Durations are ``{"days", "hours", "minutes", "seconds"}`` with zero parts
left out, as zc.async's monitor printed them; datetimes are UTC ISO-8601
with ``Z``; a job is named ``[oid, database name]``.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable, Iterable, List, Optional, Protocol

from pyramid.renderers import JSON

from .. import clock
from ..failure import Failure
from ..safetext import clip, quote

#: Longest failure message a report shows (the job's traceback view shows
#: it whole, up to :data:`TRACEBACK_LIMIT`): a job may fail with megabytes.
MESSAGE_LIMIT = 500
#: Longest traceback (and message) the traceback view shows; it cuts out
#: the middle beyond that, saying how much.
TRACEBACK_LIMIT = 64 * 1024
#: The datetimes a parameter may name: a day inside Python's range, so
#: that no report's arithmetic on them overflows into a 500.
EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc) \
    + datetime.timedelta(days=1)
LATEST = datetime.datetime.max.replace(tzinfo=datetime.timezone.utc) \
    - datetime.timedelta(days=1)


class ParameterError(Exception):
    """A bad request parameter or an unknown object: a JSON 400 or 404."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def not_found(message: str) -> ParameterError:
    return ParameterError(message, 404)


def duration(delta: Optional[datetime.timedelta]) -> Optional[dict]:
    if delta is None:
        return None
    negative = delta < datetime.timedelta(0)
    delta = abs(delta)
    minutes, seconds = divmod(delta.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    parts = {'days': delta.days, 'hours': hours, 'minutes': minutes,
             'seconds': seconds + delta.microseconds / 1e6}
    result = {name: (-value if negative else value)
              for name, value in parts.items() if value}
    return result or {'seconds': 0.0}


def utc_iso(value: Optional[datetime.datetime]) -> Optional[str]:
    if value is None:
        return None
    return value.astimezone(clock.UTC).replace(tzinfo=None).isoformat() + 'Z'


def job_id(job: Any) -> List[Any]:
    return [int.from_bytes(job._p_oid, 'big'), job._p_jar.db().database_name]


def to_json(value: Any) -> Any:
    """Plain JSON values from what the dispatcher and the model hold."""
    if isinstance(value, datetime.datetime):
        return utc_iso(value)
    if isinstance(value, datetime.timedelta):
        return duration(value)
    if isinstance(value, Failure):
        return {'type': value.type_name,
                'message': clip(value.message, MESSAGE_LIMIT)}
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def json_renderer() -> _Converting:
    renderer = JSON(indent=2, sort_keys=True)
    return _Converting(renderer)


class _Converting:
    """The JSON renderer, fed with :func:`to_json` values."""

    def __init__(self, renderer: JSON):
        self.renderer = renderer

    def __call__(self, info: Any) -> Callable[[Any, Any], str]:
        render = self.renderer(info)
        return lambda value, system: render(to_json(value), system)


# -- parameters -----------------------------------------------------------

class Params(Protocol):
    """Named string values: a request's ``params``, or the options of a
    ``pzcasync`` command (:class:`..scripts.cli.Options`)."""

    def get(self, name: str) -> Optional[str]: ...

    def getall(self, name: str) -> List[str]: ...


def parse_datetime(name: str, raw: Optional[str]
                   ) -> Optional[datetime.datetime]:
    """``raw`` as an aware UTC datetime; ``name`` is what the error
    calls it."""
    if raw is None or raw == '':
        return None
    text = raw.strip()
    if text.endswith(('Z', 'z')):
        text = text[:-1] + '+00:00'
    expected = ('expected ISO-8601 UTC from %s to %s, e.g. '
                '2026-11-25T16:00:00Z' % (_day(EARLIEST), _day(LATEST)))
    try:
        value = datetime.datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=clock.UTC)
        value = value.astimezone(clock.UTC)
    except ValueError:
        raise ParameterError('%s=%s is not a date: %s'
                             % (name, quote(raw), expected))
    except OverflowError:  # in UTC it falls outside year 1 to 9999
        raise ParameterError('%s=%s is out of range: %s'
                             % (name, quote(raw), expected))
    if not EARLIEST <= value <= LATEST:
        raise ParameterError('%s=%s is out of range: %s'
                             % (name, quote(raw), expected))
    return value


def _day(value: datetime.datetime) -> str:
    return str(utc_iso(value))[:10]


def parse_int(name: str, raw: Optional[str], minimum: int = 0,
              maximum: Optional[int] = None) -> Optional[int]:
    if raw is None or raw == '':
        return None
    try:
        value = int(raw)
    except ValueError:  # also more than 4300 digits
        raise ParameterError('%s=%s is not an integer' % (name, quote(raw)))
    if value < minimum:
        raise ParameterError('%s=%s must be at least %d'
                             % (name, quote(raw), minimum))
    if maximum is not None and value > maximum:
        raise ParameterError('%s=%s is more than the maximum, %d'
                             % (name, quote(raw), maximum))
    return value


def parse_choice(name: str, raw: Optional[str], choices: Iterable[str]
                 ) -> Optional[str]:
    if raw is None or raw == '':
        return None
    choices = list(choices)
    if raw not in choices:
        raise ParameterError('%s=%s is unknown; expected one of %s'
                             % (name, quote(raw), ', '.join(choices)))
    return raw


def param_datetime(request: Any, name: str) -> Optional[datetime.datetime]:
    return parse_datetime(name, request.params.get(name))


def param_int(request: Any, name: str, minimum: int = 0,
              maximum: Optional[int] = None) -> Optional[int]:
    return parse_int(name, request.params.get(name), minimum, maximum)


def param_choice(request: Any, name: str, choices: Iterable[str]
                 ) -> Optional[str]:
    return parse_choice(name, request.params.get(name), choices)


def parse_oid(raw: str) -> int:
    """A job's oid as an integer, decimal or 0x-hex."""
    try:
        value = int(raw, 16) if raw.lower().startswith('0x') else int(raw)
    except (ValueError, AttributeError):
        raise ParameterError('%s is not a job id: expected the integer oid '
                             '(decimal or 0x hex)' % quote(raw))
    if value < 0:
        raise ParameterError('%s is not a job id: oids are positive'
                             % quote(raw))
    return value
