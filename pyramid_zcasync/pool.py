"""Worker threads of one agent, and the batches of work they take.

A worker takes a *batch* of waiting items: at most ``batch`` of them (the
dispatcher sets 1 while its jobs are slow and more while they are short,
so that they can be committed together), and just one while there are
no more waiting than idle workers.  An agent's size is a promise of
concurrency: a batch's items are started one at a time, and when the one
running has taken longer than ``hand_back_after`` seconds, an idle worker
takes back those not started yet, so that jobs claimed with a slow one
start on free slots at once, not when it ends.

Daemon threads, so a process never hangs at exit waiting for them (a
non-daemon pool made pserve ignore Ctrl-C).  A task that raises anything
at all is reported to ``on_crash`` and the thread carries on: a worker
that died silently would leave its job ACTIVE forever (a zc.async bug).
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

log = logging.getLogger('pyramid_zcasync.trace')


class Batch(Iterator):
    """The items one worker took, handed out one at a time by iterating."""

    def __init__(self, items: list):
        self._waiting = collections.deque(items)
        self._started: list = []
        self._since: Optional[float] = None
        self._lock = threading.Lock()

    def __next__(self) -> Any:
        with self._lock:
            if not self._waiting:
                raise StopIteration
            item = self._waiting.popleft()
            self._started.append(item)
            self._since = time.monotonic()
            return item

    @property
    def holds_back(self) -> bool:
        """Whether items wait in it behind the one running."""
        return bool(self._waiting)

    def running_for(self) -> float:
        """Seconds the item taken last has run (0: none taken yet)."""
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def hand_back(self, after: Optional[float] = None) -> list:
        """Take out the items not started yet: all of them (``after``
        None), or only if the item running has run ``after`` seconds."""
        with self._lock:
            if after is not None and (self._since is None
                                      or self.running_for() < after):
                return []
            rest = list(self._waiting)
            self._waiting.clear()
            return rest

    def items(self) -> list:
        """Every item this batch still answers for: started or not."""
        with self._lock:
            return self._started + list(self._waiting)


class Pool:

    def __init__(self, name: str, size: int, handler: Callable,
                 on_crash: Optional[Callable] = None, batch: int = 1,
                 hand_back_after: float = 0.05,
                 groupable: Callable = lambda item: True):
        self.name = name
        #: ``handler(batch)`` runs the items of a :class:`Batch`.
        self.handler = handler
        self.on_crash = on_crash
        self.batch = batch
        self.hand_back_after = hand_back_after
        #: Whether an item may share a batch with others.
        self.groupable = groupable
        self._waiting: collections.deque = collections.deque()
        self._batches: set = set()
        self._stops = 0
        self._busy = 0
        self._threads: list = []
        self._numbers = itertools.count()
        self._condition = threading.Condition()
        self.resize(size)

    @property
    def size(self) -> int:
        """Workers that will keep taking work: threads not yet told to
        end (a thread told to end finishes its batch first)."""
        with self._condition:
            return len(self._threads) - self._stops

    @property
    def busy(self) -> int:
        with self._condition:
            return self._busy

    def resize(self, size: int) -> None:
        """Grow at once (first by taking back stops not yet taken);
        shrink by letting threads finish their task.  ``_threads`` holds
        every thread that has not taken a stop, so that a pool resized
        up and down between two polls counts its workers right."""
        with self._condition:
            kept = len(self._threads) - self._stops
            if size < kept:
                self._stops += kept - size
            else:
                revived = min(self._stops, size - kept)
                self._stops -= revived
                for _ in range(size - kept - revived):
                    self._start_thread()
            self._condition.notify_all()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, daemon=True,
            name='zcasync-%s-%d' % (self.name, next(self._numbers)))
        thread.start()
        self._threads.append(thread)

    def submit(self, item: Any) -> None:
        with self._condition:
            self._waiting.append(item)
            self._condition.notify()

    def give_back(self, items: list) -> None:
        """Items taken but not run: first in line again."""
        if not items:
            return
        with self._condition:
            self._waiting.extendleft(reversed(items))
            self._condition.notify(len(items))

    def _take(self) -> Optional[Batch]:
        """This worker's next batch; None: the thread is to end."""
        with self._condition:
            while True:
                if self._stops:
                    self._stops -= 1
                    self._threads.remove(threading.current_thread())
                    return None
                self._reclaim_stalled()
                if self._waiting:
                    batch = Batch(self._share())
                    self._batches.add(batch)
                    self._busy += 1
                    return batch
                holding = any(b.holds_back for b in self._batches)
                self._condition.wait(self.hand_back_after if holding
                                     else None)

    def _share(self) -> List:
        """One item while each idle worker can have one; else up to
        ``batch`` (run one at a time, a backlog of short jobs commits in
        fewer, larger groups).  An item that is not groupable alone."""
        idle = max(self.size - self._busy, 1)
        count = 1 if len(self._waiting) <= idle else self.batch
        items = [self._waiting.popleft()]
        while (len(items) < count and self._waiting
               and self.groupable(items[0])
               and self.groupable(self._waiting[0])):
            items.append(self._waiting.popleft())
        return items

    def _reclaim_stalled(self) -> None:
        for batch in self._batches:
            rest = batch.hand_back(self.hand_back_after)
            if rest:
                log.debug('pool %s: %d item(s) waited behind a slow one; '
                          'handed to free workers', self.name, len(rest))
                self._waiting.extendleft(reversed(rest))
                self._condition.notify(len(rest))

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self.handler(batch)
            except BaseException as exc:  # noqa: B902 - see module doc
                items = batch.items()
                log.exception('worker %s: %d item(s) crashed',
                              threading.current_thread().name, len(items))
                if self.on_crash is not None:
                    try:
                        self.on_crash(items, exc)
                    except Exception:
                        log.exception('crash handler failed')
            finally:
                with self._condition:
                    self._busy -= 1
                    self._batches.discard(batch)

    def stop(self, timeout: float = 5.0) -> bool:
        """Drop items not started (their jobs are recovered as ASSIGNED),
        let each thread finish the item it runs; True if all did in time."""
        with self._condition:
            threads = list(self._threads)
            self._waiting.clear()
            for batch in self._batches:
                batch.hand_back()
            self._stops = len(threads)
            self._condition.notify_all()
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(end - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in threads)
