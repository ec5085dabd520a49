"""Private transactions: a connection of its own, opened, used, closed.

Everything outside a request (the dispatcher's polls, install at start-
up, live annotations, health and metrics reads) must not join whatever
transaction the calling thread has open: a conflict there would abort
the caller's work, and the caller's abort would lose ours.  So each of
them opens a connection with a transaction manager of its own.  The
pattern had grown eight versions with three different attempt limits;
these two functions are the one way to do it.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import transaction

T = TypeVar('T')

#: Attempts of a writing transaction that conflicts: processes starting
#: together race to create the same entries, and the losers retry.
ATTEMPTS = 5


def read(db: Any, work: Callable[[Any], T]) -> T:
    """``work(connection)``'s result, read in a connection of its own and
    aborted afterwards (nothing read can be written by accident).

    ``work`` must not return persistent objects it means to use later:
    they are ghosts once the connection closes.
    """
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        return work(connection)
    finally:
        manager.abort()
        connection.close()


def write(db: Any, work: Callable[[Any], T], attempts: int = ATTEMPTS) -> T:
    """``work(connection)``'s result, committed in a connection of its own,
    retried up to ``attempts`` times on a conflict (``work`` runs again on
    fresh state, so it must do all its reading inside)."""
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        result: T
        for attempt in manager.attempts(attempts):
            with attempt:
                result = work(connection)
        return result
    finally:
        connection.close()
