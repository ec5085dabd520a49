"""Checks of the values a job is scheduled by (priority, time limit), apart
from job.py so that lifecycle.py, below it, checks them too; job.py
imports them, which keeps their old import path working."""
from typing import Any, Optional


#: Priorities range over MIN_PRIORITY..MAX_PRIORITY.  Each priority (and
#: set of quota names) used in a queue has a BTree of its own that every
#: claim visits, a few µs each: a bounded range keeps claims fast.
MIN_PRIORITY = -100
MAX_PRIORITY = 100


def check_priority(value: Any) -> int:
    """A priority as an int, or an error naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('priority must be an integer (higher runs first), '
                        'got %r (%s)' % (value, type(value).__name__))
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError('priority must be from %d to %d, got %r'
                         % (MIN_PRIORITY, MAX_PRIORITY, value))
    return value


def check_time_limit(value: Any) -> Optional[float]:
    """A time limit as positive seconds, or an error naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError('time_limit must be a number of seconds, got %r'
                        % (value,))
    if not value > 0:
        raise ValueError('time_limit must be more than 0 seconds, got %r'
                         % (value,))
    return float(value)
