"""Where a soak worker's memory goes: a probe the worker starts when
``SOAK_MEMORY_PROBE=PATH`` is set (benchmarks/soakprocs.py; PATH may
hold ``%(worker)s`` and ``%(pid)s``).

RSS alone says that a process grows, not what grows.  Every ``every``
seconds the probe appends one JSON line to PATH with the process's RSS,
the sizes of the dispatcher's in-memory records (jobs, polls), the ZODB
caches, the live objects of each type that grew most since the first
sample, and, with tracemalloc on, the source lines whose allocations grew
most.  tracemalloc slows the worker down, so it is only on when
``SOAK_MEMORY_FRAMES`` (frames kept per allocation) is set.
"""
import collections
import gc
import json
import os
import threading
import time
import tracemalloc
from typing import Any, Dict, List, Optional

from benchmarks.soakwatch import rss_mb

#: How many growing types and source lines each sample lists.
TOP = 15


def type_counts() -> Dict[str, int]:
    """Live objects tracked by the garbage collector, by type name."""
    counts: Dict[str, int] = collections.Counter(
        type(obj).__name__ for obj in gc.get_objects())
    return counts


def record_sizes(db: Any) -> Dict[str, Any]:
    """The bounded structures of this process's dispatcher and database."""
    from benchmarks._zc_worker import pooled_invalidations
    from pyramid_zcasync import process
    sizes: Dict[str, Any] = {'db_cache_objects': db.cacheSize(),
                             'pooled': pooled_invalidations(db)}
    running = process.get()
    if running is not None:
        sizes['history_jobs'] = len(running.monitor.jobs)
        sizes['history_open'] = len(running.monitor.jobs._open)
        sizes['history_polls'] = len(running.monitor.polls)
        sizes['storage_trouble'] = len(running.monitor.storage_trouble)
    cache = getattr(db.storage, '_cache', None)  # ZEO's client cache
    if cache is not None:
        sizes['zeo_cache'] = {'records': len(cache),
                              'current': len(cache.current),
                              'noncurrent_oids': len(cache.noncurrent),
                              'write_offset_mb': round(
                                  cache.currentofs / 2 ** 20, 2)}
    sizes['connections'] = [
        {'cache': info['size'], 'ngsize': info['ngsize']}
        for info in db.cacheDetailSize()]
    return sizes


class MemoryProbe:
    """Samples what grows, in a daemon thread, as JSON lines."""

    def __init__(self, db: Any, path: str, every: float = 30.0,
                 frames: int = 0) -> None:
        self.db = db
        self.path = path
        self.every = every
        self.frames = frames
        self.started = time.monotonic()
        self.first_types: Optional[Dict[str, int]] = None
        self.first_snapshot: Optional[tracemalloc.Snapshot] = None

    def start(self) -> None:
        if self.frames:
            tracemalloc.start(self.frames)
        threading.Thread(target=self._loop, name='soak-memory-probe',
                         daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            try:
                sample = self.sample()
            except Exception as exc:  # the probe must never stop the worker
                sample = {'error': repr(exc)}
            with open(self.path, 'a') as stream:
                stream.write(json.dumps(sample) + '\n')

    def sample(self) -> Dict[str, Any]:
        counts = type_counts()
        if self.first_types is None:
            self.first_types = counts
        grown = sorted(((n - self.first_types.get(name, 0), name)
                        for name, n in counts.items()), reverse=True)[:TOP]
        sample: Dict[str, Any] = {
            'at_s': round(time.monotonic() - self.started, 1),
            'rss_mb': rss_mb(os.getpid()),
            'sizes': record_sizes(self.db),
            'types_grown': [[name, delta, counts[name]]
                            for delta, name in grown if delta > 0]}
        if self.frames:
            sample['lines_grown'] = self._lines_grown()
        return sample

    def _lines_grown(self) -> List[List[Any]]:
        snapshot = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__)])
        if self.first_snapshot is None:
            self.first_snapshot = snapshot
        stats = snapshot.compare_to(self.first_snapshot, 'traceback')
        return [[str(stat.traceback.format()[-6:]),
                 round(stat.size_diff / 1024, 1), stat.count_diff]
                for stat in stats[:TOP]]


def start_from_environment(db: Any, worker: str) -> None:
    """Start a probe if ``SOAK_MEMORY_PROBE`` names a file and ``worker``
    is among ``SOAK_MEMORY_WORKERS`` (default ``w0``, the steady one:
    the others are killed too often to show growth, and tracemalloc would
    slow them)."""
    path = os.environ.get('SOAK_MEMORY_PROBE')
    chosen = os.environ.get('SOAK_MEMORY_WORKERS', 'w0').split(',')
    if not path or worker not in chosen:
        return
    MemoryProbe(db, path % {'worker': worker, 'pid': os.getpid()},
                every=float(os.environ.get('SOAK_MEMORY_EVERY', '30')),
                frames=int(os.environ.get('SOAK_MEMORY_FRAMES', '0'))
                ).start()
