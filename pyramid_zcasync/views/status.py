"""This process's dispatcher: the monitor's ``async`` commands as JSON."""
from __future__ import annotations

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


def running_dispatcher(request):
    found = getattr(request.registry, 'zcasync_dispatcher', None) \
        or dispatcher_module.get()
    if found is None or found.activated is None:
        raise not_found('no dispatcher runs in this process '
                        '(zcasync.dispatcher is off, or it stopped)')
    return found


def _time_filters(request, *names) -> dict:
    return {name: param_datetime(request, name) for name in names}


def status(request):
    return running_dispatcher(request).getStatusInfo()


def poll(request):
    found = running_dispatcher(request).getPollInfo(
        **_time_filters(request, 'at', 'before'))
    if found is None:
        raise not_found('no poll matches')
    return poll_info(found)


def poll_info(found) -> dict:
    return {'key': found.key, 'time': found.utc_timestamp,
            'results': dict(found)}


def polls(request):
    filters = _time_filters(request, 'at', 'before', 'since')
    count = param_int(request, 'count', minimum=1, maximum=POLLS_MAX)
    if count is None and filters['since'] is None:
        count = POLLS_COUNT
    found = running_dispatcher(request).iterPolls(count=count, **filters)
    return [poll_info(item) for item in found]


def active_jobs(request):
    return running_dispatcher(request).getActiveJobIds(
        queue=request.params.get('queue'), agent=request.params.get('agent'))


def job_info(request):
    found = running_dispatcher(request)
    oid = parse_oid(request.matchdict['oid'])
    try:
        return found.getJobInfo(oid, request.params.get('database'))
    except ValueError as exc:
        raise not_found(str(exc))


def jobstats(request):
    filters = _time_filters(request, 'at', 'before', 'since')
    return running_dispatcher(request).getStatistics(
        queue=request.params.get('queue'),
        agent=request.params.get('agent'), **filters)


def utcnow(request):
    return clock.utcnow()


def uuid(request):
    return running_dispatcher(request).UUID


def includeme(config) -> None:
    for view, name in [(status, 'status'), (poll, 'poll'), (polls, 'polls'),
                       (active_jobs, 'dispatcher_jobs'),
                       (job_info, 'dispatcher_job'), (jobstats, 'jobstats'),
                       (utcnow, 'utcnow'), (uuid, 'uuid')]:
        add_admin_view(config, view, name, request_method='GET')
