"""The message the dashboard shows after an action, made of server-side
facts only.

An action answers with a redirect to ``/_async/?done=CODE&job=OID`` (or
``&uuid=UUID``), so anyone can send an admin a link with those
parameters.  Their words must not reach the page: the code picks one of
our sentences, and the job or dispatcher it names is looked up in the
database and shown only if it exists in the state the action leaves it
in.  A link naming anything else shows no message at all.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import cancel_reason
from ..failure import Failure
from ..job import JobCancelled
from .format import ParameterError, parse_oid
from .queries import stored_job

#: Said whenever jobs of a dead dispatcher are handed back: the dispatcher
#: may only be frozen or cut off, and what its jobs did outside the
#: database is not undone (README, "Guarantees").
AT_LEAST_ONCE = ('A job it was running runs again from the start: its '
                 'changes to the database are made once, but what it did '
                 'outside the database (mail, HTTP calls, files) may happen '
                 'twice.')


def flash_message(request: Any) -> Optional[str]:
    """Our sentence for ``done``, if what it names is true now."""
    done = request.GET.get('done')
    if done in CONTROL:
        return control_message(request.async_queues, done, request.GET)
    if done == 'requeued':
        uuid = stopped_dispatcher(request.async_queues,
                                  request.GET.get('uuid', ''))
        if uuid is None:
            return None
        return ('Dispatcher %s was deactivated; its unfinished jobs were '
                'handed to their retry policies. %s' % (uuid, AT_LEAST_ONCE))
    if done not in ('cancelled', 'retried'):
        return None
    oid = job_oid(request)
    if oid is None:
        return None
    if done == 'cancelled':
        return ('Job 0x%x was cancelled: it will not run (if running, it is '
                'stopped within a second), and its callbacks see a '
                'JobCancelled failure.' % oid)
    return 'Job 0x%x was queued again; it runs in its turn.' % oid


#: The queue controls' messages, shown only if the queue is in that state.
CONTROL = {
    'paused': 'Queue %s is paused: dispatchers claim none of its jobs from '
              'their next poll on; the jobs running finish.',
    'resumed': 'Queue %s is running: dispatchers claim its jobs again from '
               'their next poll on.',
    'scaled': 'Agent %s of queue %s has %d slot(s) in every dispatcher '
              'from its next poll on.',
}


def control_message(queues: Any, done: str, query: Any) -> Optional[str]:
    """Our sentence for a queue control, if the queue is in the state it
    names (the names shown are those stored, not the link's)."""
    queue = queues.get(query.get('queue', ''))
    if queue is None:
        return None
    label = repr(queue.name) if queue.name else '(default)'
    if done == 'scaled':
        agent = query.get('agent', '')
        size = queue.dispatchers.size_of(agent)  # stored: a known name
        if size is None:
            return None
        return CONTROL[done] % (repr(agent), label, size)
    if queue.paused != (done == 'paused'):
        return None
    return CONTROL[done] % label


def job_oid(request: Any) -> Optional[int]:
    """The oid of the ``job`` parameter if it names a stored job that is
    not pending after a cancel (cancelled, or asked to stop while it
    runs; a retried one may be anything by now)."""
    try:
        job = stored_job(request.async_queues._p_jar,
                         parse_oid(request.GET.get('job', '')))
    except ParameterError:
        return None
    if request.GET.get('done') == 'cancelled' and not (
            cancel_reason(job) is not None
            or (isinstance(job.result, Failure)
                and job.result.check(JobCancelled))):
        return None
    return int.from_bytes(job._p_oid, 'big')


def stopped_dispatcher(queues: Any, uuid: str) -> Optional[str]:
    """``uuid`` if a dispatcher of that UUID is registered and stopped."""
    found = [queue.dispatchers[uuid] for queue in queues.values()
             if uuid in queue.dispatchers]
    if found and not any(registration.activated for registration in found):
        return uuid
    return None
