"""Time, in one place, so tests can inject it and values stay aware UTC.

Every datetime stored by pyramid_zcasync is timezone-aware UTC: naive
datetimes are ambiguous across machines, and the dispatchers that compare
them may run in different time zones.
"""
from __future__ import annotations

import datetime
import time
from typing import Optional

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


class Clock:
    """Wall-clock time and sleeping; replace it in tests to go fast."""

    def utcnow(self) -> datetime.datetime:
        return datetime.datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


#: The clock used when none is passed explicitly.
default_clock = Clock()


def utcnow() -> datetime.datetime:
    return default_clock.utcnow()


def aware_utc(value: Optional[datetime.datetime],
              name: str) -> Optional[datetime.datetime]:
    """``value`` converted to UTC; naive datetimes are refused by name."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a timezone-aware datetime, got %r (%s)'
                        % (name, value, type(value).__name__))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            '%s must be a timezone-aware datetime (e.g. with '
            'tzinfo=datetime.timezone.utc), got naive %r' % (name, value))
    return value.astimezone(UTC)


class Moment:
    """An aware UTC datetime attribute of a persistent object, stored as
    integer microseconds: an aware datetime pickles as half a dozen
    objects (datetime, timezone, timedelta), an int as one, and jobs are
    pickled at every put, claim and completion."""

    def __init__(self, name: str):
        self.name = name
        self.slot = '_%s_us' % name.lstrip('_')

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        micros = getattr(obj, self.slot, None)
        return None if micros is None else from_micros(micros)

    def __set__(self, obj, value) -> None:
        value = aware_utc(value, self.name.lstrip('_'))
        setattr(obj, self.slot, None if value is None else to_micros(value))


def to_micros(value: datetime.datetime) -> int:
    """Microseconds since the epoch: a compact, orderable BTree key."""
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds


def from_micros(micros: int) -> datetime.datetime:
    return EPOCH + datetime.timedelta(microseconds=micros)


def seconds(delta: datetime.timedelta) -> float:
    return delta.total_seconds()
