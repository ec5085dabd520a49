"""The extensions' hooks around a put: ``before_put`` (which may refuse
it) at once, ``after_put`` once the putter's transaction commits.

Apart from lifecycle.py, which calls them for each put, and for each job
that its prerequisites woke (deps.py): that one is announced as a put
once the completing transaction commits, so that the dispatcher of that
process looks for it at once.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from . import extensions


def before_put(queue: Any, job: Any) -> Callable[[], None]:
    """Run the extensions' ``before_put`` (which may refuse the put: then
    nothing is queued), and return what schedules their ``after_put`` for
    when the putter's transaction commits."""
    chain = extensions.of_object(queue)
    chain.before_put(queue, job)
    return after_commit(queue, job, chain)


def after_commit(queue: Any, job: Any,
                 chain: Optional[extensions.Extensions] = None
                 ) -> Callable[[], None]:
    """What schedules the extensions' ``after_put`` of ``job`` for when
    the current transaction of ``queue``'s connection commits."""
    chain = chain if chain is not None else extensions.of_object(queue)
    if not chain.having('after_put') or queue._p_jar is None:
        return _nothing
    txn = queue._p_jar.transaction_manager.get()
    return lambda: txn.addAfterCommitHook(_after_put, (chain, queue, job))


def _nothing() -> None:
    pass


def _after_put(committed: bool, chain: extensions.Extensions,
               queue: Any, job: Any) -> None:
    if committed:
        chain.after_put(queue, job)
