"""Worker threads of one agent.

A worker takes up to ``batch`` waiting items at once: the dispatcher sets
it to 1 while jobs are slow, so they run side by side, and higher while
they are short, so they can be committed together.  Daemon threads, so a process never hangs at exit waiting for them (a
non-daemon pool made pserve ignore Ctrl-C).  A task that raises anything
at all is reported to ``on_crash`` and the thread carries on: a worker
that died silently would leave its job ACTIVE forever (a zc.async bug).
"""
from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from typing import Callable, Optional

log = logging.getLogger('pyramid_zcasync.trace')

_STOP = object()


class Pool:

    def __init__(self, name: str, size: int, handler: Callable,
                 on_crash: Optional[Callable] = None, batch: int = 1):
        self.name = name
        self.handler = handler
        self.on_crash = on_crash
        self.batch = batch
        self._tasks: queue_module.Queue = queue_module.Queue()
        self._threads: list = []
        self._busy = 0
        self._lock = threading.Lock()
        self.resize(size)

    @property
    def size(self) -> int:
        return len(self._threads)

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def resize(self, size: int) -> None:
        """Grow at once; shrink by letting threads finish their task."""
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < size:
            thread = threading.Thread(
                target=self._work, daemon=True,
                name='zcasync-%s-%d' % (self.name, len(self._threads)))
            thread.start()
            self._threads.append(thread)
        while len(self._threads) > size:
            self._threads.pop()
            self._tasks.put(_STOP)

    def submit(self, item) -> None:
        self._tasks.put(item)

    def _take(self):
        """The next item and this worker's share of those waiting."""
        first = self._tasks.get()
        if first is _STOP:
            return first
        items = [first]
        while len(items) < self.batch:
            try:
                item = self._tasks.get_nowait()
            except queue_module.Empty:
                break
            if item is _STOP:
                self._tasks.put(_STOP)
                break
            items.append(item)
        return items

    def _work(self) -> None:
        while True:
            items = self._take()
            if items is _STOP:
                return
            with self._lock:
                self._busy += 1
            try:
                self.handler(items)
            except BaseException as exc:  # noqa: B902 - see module doc
                log.exception('worker %s: %d item(s) crashed',
                              threading.current_thread().name, len(items))
                if self.on_crash is not None:
                    try:
                        self.on_crash(items, exc)
                    except Exception:
                        log.exception('crash handler failed')
            finally:
                with self._lock:
                    self._busy -= 1

    def _drain(self) -> None:
        while True:
            try:
                self._tasks.get_nowait()
            except queue_module.Empty:
                return

    def stop(self, timeout: float = 5.0) -> bool:
        """Drop tasks not started (their jobs are recovered as ASSIGNED),
        let each thread finish its task; True if all did in time."""
        threads, self._threads = self._threads, []
        self._drain()
        for _ in threads:
            self._tasks.put(_STOP)
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(end - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in threads)
