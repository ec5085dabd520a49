"""This process's dispatcher: the monitor's ``async`` commands as JSON."""
from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional

from .. import clock
from .. import dispatcher as dispatcher_module
from ..history import POLL_HISTORY
from . import add_admin_view
from .format import not_found, param_datetime, param_int, parse_oid

#: ``/polls`` answers this many polls unless ``count`` or ``since`` says
#: otherwise, and at most the dispatcher's bounded history of them (a
#: larger ``count`` is a 400).
POLLS_COUNT = 3
POLLS_MAX = POLL_HISTORY


def running_dispatcher(request: Any) -> Any:
    """This process's dispatcher, or a 404 saying there is none."""
    return dispatcher_of(request.registry)


def dispatcher_of(registry: Any) -> Any:
    """The app's running dispatcher (or the process's), or a 404: also
    what ``uuid=THIS`` means to ``pzcasync``, which runs none."""
    found = getattr(registry, 'zcasync_dispatcher', None) \
        or dispatcher_module.get()
    if found is None or found.activated is None:
        raise not_found('no dispatcher runs in this process '
                        '(zcasync.dispatcher is off, or it stopped)')
    return found


def _time_filters(request: Any, *names: str
                  ) -> Dict[str, Optional[datetime.datetime]]:
    return {name: param_datetime(request, name) for name in names}


def status(request: Any) -> Any:
    return running_dispatcher(request).getStatusInfo()


def poll(request: Any) -> Dict[str, Any]:
    found = running_dispatcher(request).getPollInfo(
        **_time_filters(request, 'at', 'before'))
    if found is None:
        raise not_found('no poll matches')
    return poll_info(found)


def poll_info(found: Any) -> Dict[str, Any]:
    return {'key': found.key, 'time': found.utc_timestamp,
            'results': dict(found)}


def polls(request: Any) -> List[Dict[str, Any]]:
    filters = _time_filters(request, 'at', 'before', 'since')
    count = param_int(request, 'count', minimum=1, maximum=POLLS_MAX)
    if count is None and filters['since'] is None:
        count = POLLS_COUNT
    found = running_dispatcher(request).iterPolls(count=count, **filters)
    return [poll_info(item) for item in found]


def active_jobs(request: Any) -> Any:
    return running_dispatcher(request).getActiveJobIds(
        queue=request.params.get('queue'), agent=request.params.get('agent'))


def job_info(request: Any) -> Any:
    found = running_dispatcher(request)
    oid = parse_oid(request.matchdict['oid'])
    try:
        return found.getJobInfo(oid, request.params.get('database'))
    except ValueError as exc:
        raise not_found(str(exc))


def jobstats(request: Any) -> Any:
    filters = _time_filters(request, 'at', 'before', 'since')
    return running_dispatcher(request).getStatistics(
        queue=request.params.get('queue'),
        agent=request.params.get('agent'), **filters)


def utcnow(request: Any) -> datetime.datetime:
    return clock.utcnow()


def uuid(request: Any) -> Any:
    return running_dispatcher(request).UUID


def includeme(config: Any) -> None:
    for view, name in [(status, 'status'), (poll, 'poll'), (polls, 'polls'),
                       (active_jobs, 'dispatcher_jobs'),
                       (job_info, 'dispatcher_job'), (jobstats, 'jobstats'),
                       (utcnow, 'utcnow'), (uuid, 'uuid')]:
        add_admin_view(config, view, name, request_method='GET')
