"""Extensions: small pluggable classes that hook into a job's life.

Modelled on Dramatiq's middleware: each concern (the Pyramid app's
context inside jobs, Prometheus metrics, the zope events, tracing, your
own) is a class overriding only the hooks it needs, instead of one more
``if`` in the engine.  Extensions belong to the queues' database in this
process: ``Queue.put`` finds them from the queue's connection, the
dispatcher running that database's jobs calls them around each run, so
two apps (or two tests) in one process keep theirs apart.

When each hook runs, and what an exception raised in it does:

- ``before_put``: in the putter's transaction, before the job is
  queued; raising refuses the put.
- ``after_put``: after that transaction committed; logged.
- ``around_run``: a context manager entered around each attempt's call,
  in the thread running it; raising fails the attempt.
- ``after_run``: after each attempt committed, with a :class:`RunReport`;
  logged.  ``on_failure``: the same, when the attempt failed.
- ``after_poll``: after each poll transaction; logged.
- ``dispatcher_activated`` / ``dispatcher_deactivated``: a dispatcher
  started or stopped serving the database's queues; logged.

"Logged" hooks never lose or fail a job: a broken metrics exporter must
not stop the work it counts.  Hooks after a commit get a report, not
the job: its connection is closed by then, and reading a persistent
object there would load it again in some other transaction.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import threading
import weakref
from typing import (Any, Callable, ContextManager, Iterable, Iterator,
                    Mapping, Optional, Sequence)

log = logging.getLogger(__name__)

#: The setting naming extra extensions by dotted name.
SETTING = 'zcasync.extensions'


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What an attempt of a job came to, as the dispatcher records it."""

    #: The job's oid as a number, and its database's name.
    job_id: int
    database: str
    #: Where it ran: queue, agent and the dispatcher's UUID.
    queue: str
    agent: str
    dispatcher: str
    #: The job's status after the attempt (a retry puts it back pending).
    status: str
    #: The attempt ended in a failure (also when a retry follows).
    failed: bool
    #: ``repr`` of the result, clipped: text from the job, untrusted.
    result: str
    #: Seconds from due (put, or begin_after) to start; None if unknown.
    pickup: Optional[float] = None
    #: Seconds the call took; None if unknown.
    runtime: Optional[float] = None


class Extension:
    """Override the hooks you need; the others do nothing."""

    def before_put(self, queue: Any, job: Any) -> None:
        """Called in the putter's transaction; raise to refuse the put."""

    def after_put(self, queue: Any, job: Any) -> None:
        """Called once the put's transaction committed: the job is durable."""

    def around_run(self, job: Any) -> ContextManager[Any]:
        """Entered around each attempt's call, in the thread running it."""
        return contextlib.nullcontext()

    def after_run(self, run: RunReport) -> None:
        """Called after each attempt committed, whatever its outcome."""

    def on_failure(self, run: RunReport) -> None:
        """Called after an attempt that failed committed (after
        ``after_run``); ``run.status`` tells whether a retry follows."""

    def after_poll(self, dispatcher: Any, claimed: int) -> None:
        """Called after each poll transaction, with how many jobs it claimed."""

    def dispatcher_activated(self, dispatcher: Any) -> None:
        """Called when a dispatcher starts serving the database's queues."""

    def dispatcher_deactivated(self, dispatcher: Any) -> None:
        """Called when it stops."""


def _overrides(extension: Extension, hook: str) -> bool:
    return getattr(type(extension), hook) is not getattr(Extension, hook)


class Extensions:
    """An ordered, immutable chain of extensions, each hook fanned out.

    Immutable so a put or a run never sees the chain change half-way:
    adding an extension builds a new chain.  Hooks no extension overrides
    are skipped without a call, so an app with no extensions pays one
    attribute test per hook.
    """

    def __init__(self, members: Sequence[Extension] = ()) -> None:
        self.members = tuple(members)
        self._hooked = {
            hook: tuple(m for m in self.members if _overrides(m, hook))
            for hook in HOOKS}
        #: Whether a finished run's report is worth building.
        self.wants_run_reports = bool(self._hooked['after_run']
                                      or self._hooked['on_failure'])

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Extension]:
        return iter(self.members)

    def having(self, hook: str) -> tuple:
        """The members overriding ``hook``, in order."""
        return self._hooked[hook]

    def before_put(self, queue: Any, job: Any) -> None:
        for member in self._hooked['before_put']:
            member.before_put(queue, job)

    def after_put(self, queue: Any, job: Any) -> None:
        self._tolerant('after_put', queue, job)

    def around_run(self, job: Any) -> ContextManager[Any]:
        """The members' ``around_run`` entered in order; entered around
        every job, so no extension costs no generator, and one costs its
        own context manager only."""
        members = self._hooked['around_run']
        if not members:
            return _NOTHING_AROUND
        if len(members) == 1:
            return members[0].around_run(job)
        return self._nested(members, job)

    @staticmethod
    @contextlib.contextmanager
    def _nested(members: tuple, job: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for member in members:
                stack.enter_context(member.around_run(job))
            yield

    def after_run(self, run: RunReport) -> None:
        self._tolerant('after_run', run)
        if run.failed:
            self._tolerant('on_failure', run)

    def after_poll(self, dispatcher: Any, claimed: int) -> None:
        self._tolerant('after_poll', dispatcher, claimed)

    def dispatcher_activated(self, dispatcher: Any) -> None:
        self._tolerant('dispatcher_activated', dispatcher)

    def dispatcher_deactivated(self, dispatcher: Any) -> None:
        self._tolerant('dispatcher_deactivated', dispatcher)

    def _tolerant(self, hook: str, *args: Any) -> None:
        for member in self._hooked[hook]:
            try:
                getattr(member, hook)(*args)
            except Exception:
                log.exception('extension %r failed in %s; the job is '
                              'unaffected', member, hook)


_NOTHING_AROUND = contextlib.nullcontext()

HOOKS = tuple(name for name in vars(Extension) if not name.startswith('_'))

NONE = Extensions()

_by_database: 'weakref.WeakKeyDictionary[Any, Extensions]' = (
    weakref.WeakKeyDictionary())
_changing = threading.Lock()


def of(db: Optional[Any]) -> Extensions:
    """The extensions of ``db`` (a ZODB database) in this process."""
    if db is None:
        return NONE
    return _by_database.get(db, NONE)


def of_object(obj: Any) -> Extensions:
    """The extensions of the database ``obj`` (a persistent object) is
    stored in; none for an object not added to a connection yet."""
    jar = getattr(obj, '_p_jar', None)
    return NONE if jar is None else of(jar.db())


def add(db: Any, extension: Extension) -> None:
    """Hook ``extension`` into the jobs of ``db`` in this process.

    Adding the same extension object twice is a no-op, so an app
    configured twice does not count every job twice.
    """
    if not isinstance(extension, Extension):
        raise TypeError('an extension must be an instance of %s.Extension, '
                        'got %r' % (__name__, extension))
    with _changing:
        current = of(db)
        if extension not in current.members:
            _by_database[db] = Extensions(current.members + (extension,))


def remove(db: Any, extension: Extension) -> None:
    """Unhook ``extension``; unknown ones are ignored."""
    with _changing:
        current = of(db)
        if extension in current.members:
            _by_database[db] = Extensions(
                [m for m in current.members if m is not extension])


def from_setting(value: str | Iterable[str], resolve: Callable[[str], Any],
                 settings: Mapping[str, Any]) -> list:
    """Extensions named by dotted names (whitespace separated): each name
    is an instance, or a class or factory called with the app's settings
    when it takes an argument, without when it takes none.

    A name that does not resolve, or resolves to something that is not an
    extension, is an error naming it: a typo must not silently drop the
    tracing or metrics someone counts on.
    """
    names = value.split() if isinstance(value, str) else list(value)
    found = []
    for name in names:
        try:
            target = resolve(name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError('%s: cannot import %r (%s)' % (
                SETTING, name, exc)) from None
        extension = target
        if not isinstance(extension, Extension) and callable(target):
            extension = _call_factory(target, settings)
        if not isinstance(extension, Extension):
            raise ValueError(
                '%s: %r gave %r, which is not a pyramid_zcasync.extensions.'
                'Extension (subclass it and override the hooks you need)'
                % (SETTING, name, extension))
        found.append(extension)
    return found


def _call_factory(factory: Callable[..., Any], settings: Mapping[str, Any]
                  ) -> Any:
    try:
        inspect.signature(factory).bind(settings)
    except TypeError:
        return factory()
    except ValueError:  # no signature to inspect (some builtins)
        pass
    return factory(settings)
