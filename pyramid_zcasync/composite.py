"""serial() and parallel(): jobs made of jobs.

Both return a job to put in a queue.  Its parts run as ordinary queued
jobs (each in its own transaction, on any dispatcher); the composite job
waits for them without holding a worker, and its result is
``postprocess(*parts)`` — by default the list of the parts' results.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from .interfaces import CALLBACKS, COMPLETED, NEW
from .job import Job, _ensure_job

Postprocess = Callable[..., Any]


def results_of(*jobs: Job) -> List[Any]:
    """The default postprocess: the parts' results, in order."""
    return [job.result for job in jobs]


def serial(*jobs: Any, postprocess: Optional[Postprocess] = None) -> Job:
    """Run ``jobs`` one after another, then ``postprocess(*jobs)``."""
    parts = [_ensure_job(job) for job in jobs]
    return Job(_serial_step, parts, 0, postprocess or results_of)


def parallel(*jobs: Any, postprocess: Optional[Postprocess] = None) -> Job:
    """Queue all ``jobs`` at once; ``postprocess(*jobs)`` when all ended."""
    parts = [_ensure_job(job) for job in jobs]
    return Job(_parallel_start, parts, postprocess or results_of)


def _current_queue() -> Any:
    """The queue of the job running this step.  Asked of the engine
    that runs it (local.py) only here, when a step runs inside it: the
    model imports no engine module."""
    from .local import get_queue
    queue = get_queue()
    if queue is None:
        raise RuntimeError('serial and parallel jobs must run from a queue')
    return queue


def _serial_step(parts: List[Job], index: int, postprocess: Postprocess,
                 *previous_result: Any) -> Any:
    if index == len(parts):
        return postprocess(*parts)
    part = _current_queue().put(parts[index])
    # The next step is a callback of this part: it runs when the part
    # ended, and the composite waits for it (and it for the step after).
    return part.addCallback(Job(_serial_step, parts, index + 1, postprocess))


def _parallel_start(parts: List[Job], postprocess: Postprocess) -> Any:
    queue = _current_queue()
    if not parts:  # no part would ever queue ``finish``
        return postprocess()
    finish = Job(_parallel_finish, parts, postprocess)
    for part in parts:
        queue.put(part)
        part.addCallback(Job(_parallel_check, parts, finish))
    return finish


def _parallel_check(parts: List[Job], finish: Job, _result: Any) -> None:
    """The last part to end queues the postprocess, exactly once: two
    parts ending at once both write ``finish``; one of them conflicts, is
    retried, and then sees it queued."""
    if finish.status == NEW and all(part.status in (CALLBACKS, COMPLETED)
                                    for part in parts):
        _current_queue().put(finish)


def _parallel_finish(parts: List[Job], postprocess: Postprocess) -> Any:
    return postprocess(*parts)
