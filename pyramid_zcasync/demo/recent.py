"""The jobs this demo enqueued: a small, bounded BTree in the ZODB root.

The queue forgets a job once a dispatcher claims it, and the agents'
histories are a dispatcher's business, so the page keeps its own list.
It is keyed by the job's oid (ZODB hands out increasing oids, so the
smallest key is the oldest job) and lives in the root of the database
holding the queues, next to the jobs it points at.  Being keyed by oid,
it also decides which jobs ``/jobs/{oid}`` may show: only the demo's, not
any object of the database.
"""
from __future__ import annotations

import datetime
from typing import Any, Dict, Iterator, Optional

import BTrees.LOBTree
from ZODB.utils import u64

from .. import transact
from ..failure import Failure
from ..interfaces import (ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW,
                          PENDING)

#: Root key of the recent-jobs BTree.
ROOT_KEY = 'pyramid_zcasync.demo.recent'
#: How many jobs the page remembers; older ones are dropped (not cancelled).
LIMIT = 25

#: Status constant -> the word shown on the page and in the JSON.
STATUS_WORDS = {NEW: 'new', PENDING: 'pending', ASSIGNED: 'assigned',
                ACTIVE: 'active', CALLBACKS: 'callbacks',
                COMPLETED: 'completed'}
#: The word for a completed job whose result is a failure.
FAILED = 'failed'


def install(db: Any) -> None:
    """Create the BTree at start-up, so requests never write the root
    object (every request doing so would conflict with every other)."""
    def create(connection: Any) -> None:
        root = connection.root()
        if ROOT_KEY not in root:
            root[ROOT_KEY] = BTrees.LOBTree.LOBTree()
    transact.write(db, create)


def _tree(request: Any) -> BTrees.LOBTree.LOBTree:
    return request.async_queues._p_jar.root()[ROOT_KEY]


def remember(request: Any, job: Any) -> int:
    """Record a job just put in the request's transaction; return its oid.

    ``connection.add`` gives the job its oid now rather than at commit,
    because the key and the redirect to the job's row need it.  If the
    request then fails, the whole transaction, this entry included, is
    rolled back with the put.
    """
    connection = request.async_queues._p_jar
    connection.add(job)
    oid = u64(job._p_oid)
    jobs = _tree(request)
    jobs[oid] = job
    while len(jobs) > LIMIT:
        del jobs[jobs.minKey()]
    return oid


def lookup(request: Any, oid: int) -> Any:
    """The demo's job with that oid, or None."""
    return _tree(request).get(oid)


def newest_first(request: Any) -> Iterator[Any]:
    jobs = _tree(request)
    return (jobs[key] for key in reversed(list(jobs.keys())))


def _iso(value: Optional[datetime.datetime]) -> Optional[str]:
    if value is None:
        return None
    return value.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def _plain(value: Any) -> Any:
    """JSON as it is for what the demo's jobs return, repr for the rest."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def describe(job: Any) -> Dict[str, Any]:
    """What the page and ``/jobs/{oid}`` show of a job."""
    result = job.result
    done = job.status == COMPLETED
    # zc.async calls a failed job COMPLETED (with a failure as its
    # result): a state of the machinery, not a word for people.
    failed = done and isinstance(result, Failure)
    info: Dict[str, Any] = {
        'oid': u64(job._p_oid),
        'call': '%s(%s)' % (getattr(job.callable, '__name__', job.callable),
                            ', '.join(repr(arg) for arg in job.args)),
        'status': FAILED if failed else STATUS_WORDS.get(job.status,
                                                         job.status),
        'done': done,
        'begin_after': _iso(job.begin_after),
        'active_start': _iso(job.active_start),
        'active_end': _iso(job.active_end),
        'result': None,
        'failure': None,
    }
    if isinstance(result, Failure):
        info['failure'] = {'type': result.type_name,
                           'message': result.message,
                           'traceback': result.getTraceback()}
    else:
        info['result'] = _plain(result)
    return info
