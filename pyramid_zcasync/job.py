"""Job: a persistent call with a status, a result and durable callbacks.

A job is stored in ZODB with its callable (a module-level function, or a
bound method of a persistent object) and its arguments (persistent objects
are stored by reference).  Calling ``job()`` runs it in the current
transaction, as zc.async does; the dispatcher instead runs it through
:mod:`pyramid_zcasync.runner`, in transactions of its own, with retries.
Every change of a job's status is made by :mod:`pyramid_zcasync.lifecycle`,
which the methods here that change it call.
"""
from __future__ import annotations

import datetime
import logging
import types
from typing import (Any, Callable, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import BTrees.OOBTree
import persistent
import persistent.list
import ZODB.broken
import zope.interface

from . import clock, lifecycle, lifelog, retry
# Defined in leaf modules (lifecycle.py uses them too); their public names,
# and the names failure records and pickles store, are in this module.
from .checks import (MAX_PRIORITY, MIN_PRIORITY, check_priority,
                     check_time_limit)
from .errors import BadStatusError, JobCancelled
from .failure import Failure
from .interfaces import (ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, IJob, NEW,
                         PENDING)


def _check_storable(func: Any) -> None:
    """Refuse callables that ZODB cannot pickle, at creation, not commit."""
    if not callable(func):
        raise TypeError('a Job needs a callable, got %r (%s)'
                        % (func, type(func).__name__))
    if isinstance(func, types.FunctionType):
        qualname = func.__qualname__
        if '<lambda>' in qualname or '<locals>' in qualname:
            raise ValueError(
                'a Job cannot store %r: lambdas and nested functions cannot '
                'be pickled; define it at module level' % (func,))
    if isinstance(func, types.MethodType) and not isinstance(
            func.__self__, (persistent.Persistent, type)):
        # Bound methods of plain objects pickle their whole instance by
        # value; that only works when the instance is itself picklable.
        if getattr(type(func.__self__), '__reduce_ex__', None) is None:
            raise ValueError('a Job cannot store %r' % (func,))


def _ensure_job(item: Any) -> 'Job':
    return item if isinstance(item, Job) else Job(item)


@zope.interface.implementer(IJob)
class Job(persistent.Persistent):
    """``Job(callable, *args, **kwargs)``."""

    #: Logging level for a failed call; set per job for expected failures.
    failure_log_level = logging.ERROR
    #: ``factory(job) -> policy``; None picks the default for the job's kind.
    retry_policy_factory: Optional[Callable] = None
    _quota_names: tuple = ()
    #: Seconds the call may run before it is interrupted (timelimit.py).
    time_limit: Optional[float] = None

    # Defaults live on the class: an attribute enters the job's stored
    # record only once it is set, which keeps the record of a typical job
    # small (puts and claims of many jobs pickle many records).
    _result: Any = None
    _begin_after = clock.Moment('begin_after')
    _begin_by = clock.Moment('begin_by')
    _priority = 0
    _annotations: Any = None
    _callbacks: Any = None  # a PersistentList once a callback is added
    active_start = clock.Moment('active_start')
    active_end = clock.Moment('active_end')
    initial_callbacks_end = clock.Moment('initial_callbacks_end')
    assignerUUID: Optional[str] = None
    #: The job whose result this callback job receives, if any.
    parent: Optional['Job'] = None
    #: The queue holding or having held this job (a queue.Queue).
    queue: Any = None
    #: The agent that claimed this job, while it is assigned or active.
    agent: Any = None
    #: A job this job returned and is waiting for.
    waiting_for: Optional['Job'] = None
    #: The queue-wide name given at the put (``unique_key``): while this
    #: job has not completed, a put with the same key in its queue returns
    #: it instead of queueing another (lifecycle.py).  Kept after
    #: completion; None on jobs put without one, and on older records.
    unique_key: Optional[str] = None
    #: Why a cancel was asked while the job was claimed or running; its
    #: dispatcher stops the call (cancels.py).  None when none was asked,
    #: and on older records.
    cancel_requested: Optional[str] = None
    _key: Optional[int] = None
    _deadline_key: Optional[int] = None
    #: Written only by lifecycle.py; NEW stays out of the record.
    _status = NEW
    #: The life log (lifelog.py): written only by lifecycle.py; empty on
    #: records stored before it existed.
    _events: tuple = ()
    _events_dropped = 0

    _kwargs: Any = types.MappingProxyType({})  # read-only: see kwargs

    def __init__(self, callable: Callable, *args: Any, **kwargs: Any):
        _check_storable(callable)
        self.callable = callable
        self.args = list(args)
        self.kwargs = dict(kwargs)

    def __setstate__(self, state: dict) -> None:
        # Records stored before args, kwargs and quota_names were
        # properties kept them under their public names.
        for name in ('args', 'kwargs', 'quota_names'):
            if name in state:
                state = dict(state)
                state['_' + name] = state.pop(name)
        super().__setstate__(state)
        for name, kind in (('_args', _TrackedList), ('_kwargs', _TrackedDict)):
            value = self.__dict__.get(name)
            if value is not None and not isinstance(value, kind):
                self.__dict__[name] = kind(self, value)

    # -- arguments (mutable, in the job's own record) --------------------

    @property
    def args(self) -> list:
        """The positional arguments; changing them in place is stored
        (zc.async kept them in a PersistentList: one more record per job
        to store and load; these live in the job's own record)."""
        return self._args

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        self._args = _TrackedList(self, value)

    @property
    def kwargs(self) -> dict:
        """The keyword arguments; changing them in place is stored."""
        kwargs = self._kwargs
        if not isinstance(kwargs, _TrackedDict):
            # A job stored without keyword arguments: reading must not
            # write it; changing them in place then does.
            kwargs = self.__dict__['_kwargs'] = _TrackedDict(self, kwargs)
        return kwargs

    @kwargs.setter
    def kwargs(self, value: Mapping[str, Any]) -> None:
        self._kwargs = _TrackedDict(self, value)

    @property
    def quota_names(self) -> tuple:
        """Names of the queue's quotas limiting how many such jobs run at
        once; checked when set (against the queue's quotas once queued)."""
        return self._quota_names

    @quota_names.setter
    def quota_names(self, value: Iterable[str]) -> None:
        if isinstance(value, (str, bytes)):
            raise TypeError('quota_names must be a sequence of names, not '
                            'a single string: use (%r,)' % (value,))
        try:
            names = tuple(value)
        except TypeError:
            raise TypeError('quota_names must be a sequence of strings, got '
                            '%r (%s)' % (value, type(value).__name__)
                            ) from None
        for name in names:
            if not isinstance(name, str):
                raise TypeError('quota names must be strings, got %r (%s)'
                                % (name, type(name).__name__))
        if self.queue is not None:
            self.queue.quotas.check_names(names)
        self._quota_names = names

    # -- read-only state --------------------------------------------------

    @property
    def status(self) -> str:
        return self._status

    @property
    def result(self) -> Any:
        return self._result

    @property
    def events(self) -> List[lifelog.Event]:
        """Every change of its status, oldest first: the first and the
        latest ones (``lifelog.LIMIT``) when there were more."""
        return lifelog.events(self)

    @property
    def callbacks(self) -> Sequence['Job']:
        """The callback jobs, in order (an empty tuple until one is added:
        most jobs have none, and a list of their own would be one more
        object to store and load per job)."""
        return self._callbacks if self._callbacks is not None else ()

    @property
    def annotations(self) -> BTrees.OOBTree.OOBTree:
        if self._annotations is None:
            self._annotations = BTrees.OOBTree.OOBTree()
        return self._annotations

    @property
    def begin_after(self) -> Optional[datetime.datetime]:
        return self._begin_after

    @begin_after.setter
    def begin_after(self, value: Optional[datetime.datetime]) -> None:
        self._require_status(NEW, 'set begin_after')
        self._begin_after = clock.aware_utc(value, 'begin_after')

    @property
    def begin_by(self) -> Optional[datetime.datetime]:
        """Deadline to start by; past it the job fails with TimeoutError."""
        return self._begin_by

    @begin_by.setter
    def begin_by(self,
                 value: Union[None, datetime.datetime, datetime.timedelta]
                 ) -> None:
        self._require_status(NEW, 'set begin_by')
        if isinstance(value, datetime.timedelta):
            if value < datetime.timedelta(0):
                raise ValueError('begin_by must not be negative, got %r'
                                 % (value,))
            start = self._begin_after or clock.utcnow()
            value = start + value
        self._begin_by = clock.aware_utc(value, 'begin_by')

    @property
    def priority(self) -> int:
        """Higher runs first: claims take the highest priority with a due
        job, then the earliest due, then the first queued.  0 by default."""
        return self._priority

    @priority.setter
    def priority(self, value: int) -> None:
        self._require_status(NEW, 'set priority')
        value = check_priority(value)
        if value != self._priority:  # the default stays out of the record
            self._priority = value

    def _require_status(self, status: str, action: str) -> None:
        if self._status != status:
            raise BadStatusError('cannot %s of a job with status %s'
                                 % (action, self._status))

    def _oid_repr(self) -> str:
        return _oid_text(self._p_oid)

    def __repr__(self) -> str:
        # Logs call it lazily, often about a job whose storage just went
        # away: raising there makes logging print a traceback to standard
        # error for each record, which blocks the process once nobody
        # reads that stream.
        try:
            name = getattr(self.callable, '__qualname__', None) or repr(
                self.callable)
            status = self._status
        except Exception:  # a ghost whose state cannot be loaded now
            # (_p_oid only: any other attribute, methods too, loads it)
            return '<Job %s (not loaded)>' % _oid_text(self._p_oid)
        return '<Job %s %s %s>' % (self._oid_repr(), name, status)

    # -- retry policy -----------------------------------------------------

    def getRetryPolicy(self) -> Any:
        """The policy deciding what to do when a run of this job fails."""
        factory = self.retry_policy_factory
        if factory is None:
            factory = (retry.RetryCommonForever if self.parent is not None
                       else retry.RetryCommonFourTimes)
        return factory(self)

    # -- callbacks --------------------------------------------------------

    def addCallback(self, callback: Callable) -> 'Job':
        """Run ``callback(result)`` once this job has a result.

        The callback is itself a job, stored with this one, so it survives
        a crash.  Added to a completed job, it runs soon after: through the
        queue when this job has one, else at once.
        """
        callback = _ensure_job(callback)
        if callback.status != NEW or callback.parent is not None:
            raise BadStatusError('%r is already in use as a job' % callback)
        callback.parent = self
        # A callback starts in the transaction of its call, so its
        # annotations must be stored before: a live annotation or progress
        # written from it (its own transaction) would otherwise create
        # them, writing the callback, and conflict with that call.
        if callback._annotations is None:
            callback._annotations = BTrees.OOBTree.OOBTree()
        if self._callbacks is None:
            self._callbacks = persistent.list.PersistentList()
        self._callbacks.append(callback)
        if self._status == CALLBACKS:
            # The worker may be marking this job COMPLETED right now,
            # having seen no callback pending: writing the job itself
            # makes one of the two commits conflict, so that this
            # callback is either seen by the worker or started late.
            self._p_changed = True
        if self._status == COMPLETED:
            lifecycle.start_late_callback(self, callback)
        return callback

    def addCallbacks(self, success: Optional[Callable] = None,
                     failure: Optional[Callable] = None) -> 'Job':
        """``success(result)`` on success, ``failure(record)`` on failure."""
        if success is None and failure is None:
            raise ValueError('addCallbacks needs success or failure')
        for func in (success, failure):
            if func is not None:
                _check_storable(func)
        return self.addCallback(Job(_route_result, success, failure))

    def _resolver(self) -> 'Job':
        """The callback job through which this job gets the result of a
        job it returned (lifecycle.finish): made here, as its callable is
        stored by name, ``pyramid_zcasync.job._resolve_outer``."""
        return Job(_resolve_outer, self)

    def pending_callbacks(self) -> List['Job']:
        return [cb for cb in self.callbacks if cb.status == NEW]

    # -- running (the state changes live in lifecycle.py) -----------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run now, in the current transaction, callbacks included."""
        if getattr(self, '_v_invoking', False):
            raise BadStatusError('%r cannot call itself: it is running'
                                 % (self,))
        if self._status not in (NEW, ASSIGNED, ACTIVE):
            raise BadStatusError('cannot call a job with status %s'
                                 % self._status)
        if self._status != ACTIVE:
            lifecycle.start(self)
        try:
            result = self.invoke(*args, **kwargs)
        except Exception as exc:
            result = Failure.from_exception(exc)
        lifecycle.finish_in_place(self, result, inline_callbacks=True)
        return self._result

    def mark_active(self, now: Optional[datetime.datetime] = None) -> None:
        lifecycle.start(self, now)

    def invoke(self, *extra_args: Any, **extra_kwargs: Any) -> Any:
        """Call the callable; exceptions propagate (the runner decides).
        An async callable's coroutine is run to its end on an event loop
        while this thread, the owner of the job's transaction, waits."""
        func = self.callable
        if isinstance(func, type) and issubclass(func, ZODB.broken.Broken):
            # ZODB loads a function whose module is gone as a Broken class;
            # calling it would "succeed" by making an instance.
            raise ImportError('the callable of %r cannot be imported: %s.%s'
                              % (self, func.__module__, func.__name__))
        kwargs = dict(self.kwargs)
        kwargs.update(extra_kwargs)
        self._v_invoking = True
        try:
            result = func(*self.args, *extra_args, **kwargs)
            if isinstance(result, types.CoroutineType):
                from . import aio  # only apps with async jobs load asyncio
                result = aio.run_coroutine(result)
            return result
        finally:
            self._v_invoking = False

    def resolve(self, result: Any, run_callbacks: bool) -> None:
        """Record what an in-place call returned (lifecycle.finish_in_place;
        the dispatcher's runs use lifecycle.finish)."""
        lifecycle.finish_in_place(self, result,
                                  inline_callbacks=run_callbacks)

    def fail(self, exc: Optional[BaseException] = None) -> None:
        """End a job that will not run (deadline passed, given up)."""
        lifecycle.fail(self, exc)

    def cancel(self, reason: str = 'cancelled') -> None:
        """Cancel a job that has not completed; it ends with a
        :class:`JobCancelled` failure, which its callbacks see.

        A job not started yet completes so at once (zc.async left a
        removed job NEW, out of every queue: a state no listing could
        name).  A claimed or running one is asked to stop when the
        caller's transaction commits: the dispatcher running it, in
        whichever process, interrupts it within a second, aborts its
        attempt and records the failure (cancels.py); inside the job,
        ``local.cancel_requested()`` turns true first.  A job whose call
        finished already raises BadStatusError."""
        lifecycle.cancel(self, reason)

    def run_callbacks_inline(self) -> None:
        lifecycle.run_callbacks_inline(self)

    def complete_callbacks_elsewhere(self) -> None:
        """Hand callbacks to the queue when no worker runs this job."""
        lifecycle.hand_off_callbacks(self)

    def mark_callbacks_done(self) -> None:
        lifecycle.finish_callbacks(self)


def _route_result(success: Optional[Callable[[Any], Any]],
                  failure: Optional[Callable[[Any], Any]],
                  result: Any) -> Any:
    if isinstance(result, Failure):
        return failure(result) if failure is not None else result
    return success(result) if success is not None else result


def _resolve_outer(outer: Job, result: Any) -> None:
    """The callback through which a job waits for the job it returned
    (stored by this name in databases)."""
    lifecycle.inner_finished(outer, result)


def _mutator(base: type, name: str) -> Callable:
    method = getattr(base, name)

    def mutate(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        self._owner._p_changed = True
        return result
    mutate.__name__ = name
    return mutate


def _tracked(base: type, mutators: tuple) -> type:
    """A ``base`` (list or dict) kept in its job's record that marks the
    job changed when it is changed in place; pickled as a plain ``base``
    (records do not name this class)."""
    def __init__(self: Any, owner: Job, items: Iterable[Any] = ()) -> None:
        base.__init__(self, items)  # type: ignore[misc]
        self._owner = owner

    def __reduce__(self: Any) -> Tuple[type, Tuple[Any]]:
        return (base, (base(self),))
    namespace = {'__slots__': ('_owner',), '__init__': __init__,
                 '__reduce__': __reduce__, '__doc__': _tracked.__doc__}
    for name in mutators:
        namespace[name] = _mutator(base, name)
    return type('_Tracked' + base.__name__.title(), (base,), namespace)


_TrackedList = _tracked(list, (
    'append', 'extend', 'insert', 'pop', 'remove', 'clear', 'reverse',
    'sort', '__setitem__', '__delitem__', '__iadd__', '__imul__'))
_TrackedDict = _tracked(dict, (
    '__setitem__', '__delitem__', 'pop', 'popitem', 'clear', 'update',
    'setdefault', '__ior__'))


def _oid_text(oid: Optional[bytes]) -> str:
    """A job's oid as its repr shows it."""
    return '0x%x' % int.from_bytes(oid, 'big') if oid else 'unsaved'
