"""The demo's job functions.

They are module-level functions in an importable module because a job
stores its callable by reference (module and name), not by value: the
dispatcher that runs it, perhaps in another process and after a restart,
imports it again.  Each one is small and obvious so that the page shows
the job machinery, not the work.
"""
import time
from typing import NoReturn

#: How long :func:`slow_multiply` takes: long enough to see it ACTIVE.
SLOW_SECONDS = 2.0


def multiply(a: float, b: float) -> float:
    """The plain case: runs at once and leaves its return value as
    ``job.result``."""
    return a * b


def slow_multiply(a: float, b: float, seconds: float = SLOW_SECONDS
                  ) -> float:
    """Sleeps first, so the page shows the job ``active`` for a while: the
    web request that queued it has long returned."""
    time.sleep(seconds)
    return a * b


def fail(a: float, b: float) -> NoReturn:
    """Always raises, so the page shows a failure record: the exception's
    type, message and traceback are kept in ``job.result``."""
    raise ValueError('this demo job always fails (it was given %r and %r)'
                     % (a, b))


#: Form value -> (function, label shown on the page).
KINDS = {
    'multiply': (multiply, 'multiply'),
    'slow': (slow_multiply, 'multiply slowly (%g s)' % SLOW_SECONDS),
    'fail': (fail, 'fail on purpose'),
}
