"""Time, in one place, so tests can inject it and values stay aware UTC.

Every datetime stored by pyramid_zcasync is timezone-aware UTC: naive
datetimes are ambiguous across machines, and the dispatchers that compare
them may run in different time zones.
"""
from __future__ import annotations

import datetime
import time
from typing import Any, Optional

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


class Clock:
    """Wall-clock time and sleeping; replace it in tests to go fast."""

    def utcnow(self) -> datetime.datetime:
        return datetime.datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class DatabaseClock(Clock):
    """This machine's clock, set right by the database's.

    Transactions are stamped by one clock: the ZEO server's, PostgreSQL's
    for RelStorage (this process's own for FileStorage).  A dispatcher
    corrects its process's clock by the stamps of its own commits, so that
    processes whose clocks differ by minutes still agree on when a job is
    due, which occurrence a periodic job runs for and which starts a rate
    limit's window holds.  (Dispatchers' deaths are judged in database
    time anyway.)
    """

    #: Differences below this are the commit's round trip, not skew.
    THRESHOLD = datetime.timedelta(seconds=1)

    def __init__(self, local: Optional[Clock] = None):
        self.local = local or Clock()
        #: Database time minus local time, as last measured.
        self.offset = datetime.timedelta(0)

    def utcnow(self) -> datetime.datetime:
        return self.local.utcnow() + self.offset

    def sleep(self, seconds: float) -> None:
        self.local.sleep(seconds)

    def local_now(self) -> datetime.datetime:
        return self.local.utcnow()

    def observe(self, stamped: datetime.datetime, before: datetime.datetime,
                after: datetime.datetime) -> datetime.timedelta:
        """A commit began at local time ``before``, ended at ``after`` and
        was stamped ``stamped`` by the storage.  Returns how far this
        clock moved (zero mostly): times read from it before move too."""
        sample = stamped - (before + (after - before) / 2)
        shift = sample - self.offset
        if abs(shift) <= self.THRESHOLD:
            return datetime.timedelta(0)
        self.offset = sample
        return shift


#: The clock used when none is passed explicitly: the machine's, corrected
#: by the database's once this process's dispatcher has committed.
default_clock = DatabaseClock()


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

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        micros = getattr(obj, self.slot, None)
        return None if micros is None else from_micros(micros)

    def __set__(self, obj: Any, value: Any) -> None:
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
