"""PostgreSQL LISTEN/NOTIFY: a put on RelStorage wakes the dispatchers of
other processes the moment it commits.

RelStorage pushes nothing: a process learns of another's commit only
when one of its connections polls.  PostgreSQL can push, though: a
process that put a job sends ``NOTIFY`` on :data:`CHANNEL` once the
put's transaction committed (:class:`NotifyOnPut`, an ``after_put``
extension, so a transaction that did not commit announces nothing), and
each dispatcher process keeps one connection doing ``LISTEN`` in a
thread of its own (:class:`Listener`), which wakes the dispatcher.

Both use psycopg2 on the storage's own DSN (:func:`postgresql_dsn`): no
setting to add.  Anything else (another database, another driver, a
server away) leaves the dispatcher's watch of the last transaction and
its polls to find the job, as without this module.  A channel serves a
whole PostgreSQL database; a spurious wake-up costs one poll.
"""
from __future__ import annotations

import logging
import os
import select
import threading
from typing import Any, Callable, Optional

from . import extensions

log = logging.getLogger(__name__)

#: The channel puts are announced on.
CHANNEL = 'zcasync_put'
#: Seconds between two attempts to reach the server.
RETRY_AFTER = 1.0
#: Seconds without a put after which a putter's connection is closed
#: (and its thread ends): a web process that puts rarely holds none.
IDLE_CLOSE = 30.0
#: How connections are opened: a name the server's activity view shows,
#: a bounded connect, and TCP keep-alives, so that a connection cut
#: without a word (a network fault) is noticed in under a minute.
CONNECT_OPTIONS = {
    'application_name': 'zcasync-wakeup', 'connect_timeout': 5,
    'keepalives': 1, 'keepalives_idle': 10, 'keepalives_interval': 5,
    'keepalives_count': 3}

_ADAPTER_MODULE = 'relstorage.adapters.postgresql'


def postgresql_dsn(storage: Any) -> Optional[str]:
    """The DSN of ``storage`` when it is RelStorage on PostgreSQL and
    psycopg2 can be imported; None otherwise (no push)."""
    adapter = getattr(storage, '_adapter', None)
    if not type(adapter).__module__.startswith(_ADAPTER_MODULE):
        return None
    dsn = getattr(adapter, '_dsn', None)
    if not isinstance(dsn, str):
        return None
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return None
    return dsn


def connect(dsn: str) -> Any:
    """An autocommit psycopg2 connection: LISTEN and NOTIFY act at once."""
    import psycopg2
    connection = psycopg2.connect(dsn, **CONNECT_OPTIONS)
    connection.autocommit = True
    return connection


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        log.debug('closing %r failed', connection, exc_info=True)


class Listener:
    """A thread LISTENing on :data:`CHANNEL`: ``heard()`` is called for
    each batch of notifications, and after each (re)connection, since
    puts made while it was away announced nothing it heard."""

    def __init__(self, dsn: str, heard: Callable[[], None],
                 name: str = 'zcasync-listen') -> None:
        self.dsn = dsn
        self.heard = heard
        #: Whether a LISTEN is in place now; how many times one was.
        self.connected = False
        self.connections = 0
        self._stopping = False
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name,
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening; the thread ends within ``timeout``."""
        if self._stopping:
            return
        self._stopping = True
        os.write(self._stop_write, b'x')
        self._thread.join(timeout)
        if not self._thread.is_alive():
            os.close(self._stop_read)
            os.close(self._stop_write)

    def _run(self) -> None:
        outage = _Outage('listening to PostgreSQL notifications')
        while not self._stopping:
            try:
                self._listen(outage)
            except Exception as exc:
                outage.failed(exc)
            self.connected = False
            self._wait(RETRY_AFTER)

    def _wait(self, seconds: Optional[float], *also: Any) -> list:
        """What of ``also`` is readable within ``seconds``; [] when
        stopped meanwhile."""
        ready = select.select((self._stop_read,) + also, (), (), seconds)[0]
        return [] if self._stop_read in ready else ready

    def _listen(self, outage: '_Outage') -> None:
        connection = connect(self.dsn)
        try:
            connection.cursor().execute('LISTEN ' + CHANNEL)
            self.connected = True
            self.connections += 1
            outage.over()
            self._tell()
            while self._wait(None, connection):
                connection.poll()  # raises when the server went away
                if connection.notifies:
                    del connection.notifies[:]
                    self._tell()
        finally:
            _close_quietly(connection)

    def _tell(self) -> None:
        try:
            self.heard()
        except Exception:
            log.exception('waking on a notification failed')


class Sender:
    """Sends ``NOTIFY`` from a thread of its own, so that a put pays for
    no round trip: ``request()`` only sets a flag, and requests arriving
    while one is sent are announced by the next, once."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        #: How many NOTIFYs went out (for tests and curious admins).
        self.sent = 0
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def request(self) -> None:
        """Announce a put (any thread; cheap)."""
        if self._pid != os.getpid():
            # A forked child: its parent's thread is gone and the
            # connection is the parent's, not to be used (or closed) here.
            self._reset()
        self._wanted.set()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name='zcasync-notify', daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # The connection is this thread's alone: once it decided to end,
        # a request may start the next thread while it still closes it.
        connection = None
        outage = _Outage('announcing puts to PostgreSQL')
        while self._still_wanted():
            self._wanted.clear()
            connection = self._send(connection, outage)
        if connection is not None:
            _close_quietly(connection)

    def _still_wanted(self) -> bool:
        """Wait for a request; on none for IDLE_CLOSE seconds, end the
        thread (under the lock ``request`` checks it with)."""
        if self._wanted.wait(IDLE_CLOSE):
            return True
        with self._lock:
            if self._wanted.is_set():
                return True
            self._thread = None
            return False

    def _send(self, connection: Any, outage: '_Outage') -> Any:
        """One NOTIFY; once again on a new connection if the old one was
        cut (the server restarted), else lost (the polls remain).  The
        connection to use next time, or None."""
        for attempt in (1, 2):
            try:
                if connection is None:
                    connection = connect(self.dsn)
                connection.cursor().execute('NOTIFY ' + CHANNEL)
                self.sent += 1
                outage.over()
                return connection
            except Exception as exc:
                if connection is not None:
                    _close_quietly(connection)
                    connection = None
                if attempt == 2:
                    outage.failed(exc)
        return None


class _Outage:
    """Logs the first failure of an outage and its end, not every retry
    (a server away for minutes would fill the log)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: Optional[BaseException] = None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            log.warning('%s failed (%s); the polls remain; retrying',
                        self.what, exc)
        else:
            log.debug('%s: still failing (%s)', self.what, exc)
        self.since = exc

    def over(self) -> None:
        if self.since is not None:
            log.info('%s works again', self.what)
            self.since = None


class NotifyOnPut(extensions.Extension):
    """Announces each committed put on :data:`CHANNEL`, for the
    dispatchers of other processes."""

    def __init__(self, dsn: str) -> None:
        self.sender = Sender(dsn)

    def after_put(self, queue: Any, job: Any) -> None:
        self.sender.request()
