"""The shapes of the admin queries' answers (:mod:`.queries`).

They are plain dictionaries because they are the JSON of the admin views
(after :func:`.format.to_json` turns datetimes, durations and failures
into JSON values) and the rows of ``pzcasync``'s tables; typing them here
lets both sides be checked against one definition.  Keys with spaces are
zc.async's monitor's names, kept for compatibility, hence the functional
``TypedDict`` syntax.
"""
from __future__ import annotations

import datetime
from typing import Dict, List, Optional, TypedDict, Union

from ..failure import Failure

#: A job as the reports name it: ``[oid, database name]``.
JobId = List[Union[int, str]]

JobInfo = TypedDict('JobInfo', {
    'id': JobId,
    'repr': str,
    'status': str,
    'callable': str,
    'args': List[str],
    'kwargs': Dict[str, str],
    'begin after': Optional[datetime.datetime],
    'begin by': Optional[datetime.datetime],
    'active start': Optional[datetime.datetime],
    'active end': Optional[datetime.datetime],
    'initial callbacks end': Optional[datetime.datetime],
    'wait': Optional[datetime.timedelta],
    'active': Optional[datetime.timedelta],
    'failed': bool,
    'result': Optional[str],
    'failure': Optional[Failure],
    'dispatcher': Optional[str],
    'queue': Optional[str],
    'agent': Optional[str],
    'quota names': List[str],
    'retry policy': Optional[str],
    'callbacks': List[Union[JobId, None, str]],
    'parent': Optional[JobId],
    'waiting for': Optional[JobId],
    'annotations': List[str],
})



class ProgressInfo(TypedDict):
    """How far a job said it got (``local.set_progress``): ``fraction``
    from 0 to 1, its message, and when it said so."""
    fraction: float
    message: str
    at: datetime.datetime


#: One change of a job's status (lifelog.Event): statuses by the names
#: of JobInfo's ``status``.
EventInfo = TypedDict('EventInfo', {
    'at': datetime.datetime,
    'from': str,
    'to': str,
    'dispatcher': Optional[str],
    'attempt': int,
    'detail': str,
})

_LifeLog = TypedDict('_LifeLog', {
    'events': List[EventInfo],
    'events dropped': int,
})


class _Progress(TypedDict, total=False):
    #: What the job said last with ``local.set_progress``; absent when
    #: it never did.
    progress: ProgressInfo


#: The prerequisites (``put(..., after=...)``) a job still waits for;
#: absent when it waits for none.  (``waiting for`` is zc.async's: the
#: job a job returned, whose result it waits for.)
_Waiting = TypedDict('_Waiting', {'after': List[JobId]}, total=False)


class JobDetail(JobInfo, _LifeLog, _Progress, _Waiting):
    """One job in full (``/db/jobs/{oid}``, ``pzcasync job``): the
    listing's fields, its life log (the first event and the latest;
    ``events dropped`` says how many were left out between; listings
    leave the log out, it is one job's story), its progress and what it
    waits for."""


TracebackInfo = TypedDict('TracebackInfo', {
    'id': JobId,
    'type': str,
    'message': str,
    'traceback': str,
    'omitted characters': int,
})


class Extreme(TypedDict):
    """The job that waited or ran longest (or shortest), and how long."""
    duration: datetime.timedelta
    job: JobId


#: Counts by outcome (``pending`` ... ``failed``) and the four extremes
#: (``longest wait`` ... ``shortest active``), each an Extreme or None.
JobStats = Dict[str, Union[int, Optional[Extreme]]]


class AgentStatus(TypedDict):
    size: int
    len: int
    completed: int
    filter: Optional[str]
    chooser: Optional[str]


DispatcherStatus = TypedDict('DispatcherStatus', {
    'activated': datetime.datetime,
    'last ping': Optional[datetime.datetime],
    'since ping': Optional[datetime.timedelta],
    'dead': bool,
    'ping interval': datetime.timedelta,
    'ping death interval': datetime.timedelta,
    'agents': Dict[str, AgentStatus],
})


class QuotaStatus(TypedDict):
    size: int
    len: int


class _QueueContents(TypedDict):
    len: int
    quotas: Dict[str, QuotaStatus]
    dispatchers: Dict[str, DispatcherStatus]


class QueueStatus(_QueueContents, total=False):
    #: True while the queue is paused (added by queries.status; absent
    #: when it is not).
    paused: bool
    #: Agent name -> the size set at run time (``pzcasync scale``).
    scaled: Dict[str, int]


#: A queue's name -> its status.
Status = Dict[str, QueueStatus]

#: One job of a listing, as the ``display`` asks: its id, its repr, or
#: all of it.
ListedJob = Union[JobId, str, JobInfo]


class Changed(TypedDict):
    """What an action did (``retried``, ``cancelled``) to which job."""
    done: str
    job: JobInfo


class Controlled(TypedDict):
    """What a queue control did: ``paused``, ``resumed`` or ``scaled``
    (then to which agent, and its size; else both None)."""
    done: str
    queue: str
    agent: Optional[str]
    size: Optional[int]
