"""What a long soak watches besides its jobs: the memory of the workers
that are never killed, and the size of the database, packed as it goes.

A process that leaks grows with the jobs it ran; a database whose
history is not trimmed grows with every job ever run.  The soak kills
every worker but the first ``steady`` ones, so those show memory over the
whole run; the agents keep a bounded history of completed jobs
(``history_size``), so after each pack the file should stop growing.
"""
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import common


def rss_mb(pid: int) -> Optional[float]:
    """Resident memory of ``pid`` in MB, or None if it is gone."""
    try:
        with open('/proc/%d/status' % pid) as stream:
            for line in stream:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def per_minute(samples: List[Tuple[float, float]]
               ) -> List[Tuple[float, float]]:
    """The first sample of each minute: whether memory levels off once
    the bounded records are full is in the curve, not in its ends."""
    kept: Dict[int, Tuple[float, float]] = {}
    for at, value in samples:
        kept.setdefault(int(at // 60), (at, value))
    return [kept[minute] for minute in sorted(kept)]


class ResourceWatch:
    """Samples memory every ``sample_every`` seconds and packs (then
    measures the file) every ``pack_every`` seconds."""

    def __init__(self, db: Any, path: str, workers: Sequence[Any],
                 sample_every: float = 5.0,
                 pack_every: float = 60.0) -> None:
        self.db = db
        self.path = path
        self.workers = workers
        self.sample_every = sample_every
        self.pack_every = pack_every
        self.started = time.monotonic()
        self.next_sample = self.started
        self.next_pack = self.started + pack_every
        self.rss: Dict[str, List[Tuple[float, float]]] = {
            worker.name: [] for worker in workers}
        self.packs: List[Dict[str, float]] = []

    def tick(self, now: float) -> None:
        if now >= self.next_sample:
            for worker in self.workers:
                if worker.alive:
                    value = rss_mb(worker.process.pid)
                    if value is not None:
                        self.rss[worker.name].append(
                            (round(now - self.started, 1), round(value, 1)))
            self.next_sample = now + self.sample_every
        if self.pack_every and now >= self.next_pack:
            self.pack(now)
            self.next_pack = time.monotonic() + self.pack_every

    def pack(self, now: float) -> None:
        before = os.path.getsize(self.path) / 2 ** 20
        began = time.monotonic()
        self.db.pack()  # everything not current and unreachable, now
        self.packs.append({
            'at_s': round(now - self.started, 1),
            'mb_before': round(before, 2),
            'mb_after': round(os.path.getsize(self.path) / 2 ** 20, 2),
            'seconds': round(time.monotonic() - began, 2)})

    def summary(self) -> Dict[str, Any]:
        memory = {}
        for name, samples in self.rss.items():
            if len(samples) < 2:
                continue
            values = [v for _, v in samples]
            # After a tenth of the run, once caches have filled.
            settled = values[len(values) // 10]
            memory[name] = {'settled_mb': settled, 'last_mb': values[-1],
                            'max_mb': max(values),
                            'growth_after_settling_mb':
                                round(values[-1] - settled, 1),
                            'samples': len(values),
                            'series': per_minute(samples)}
        after = [p['mb_after'] for p in self.packs]
        return {'memory': memory, 'packs': self.packs,
                'db_mb_after_packs': {
                    'first': after[0] if after else None,
                    'median': common.percentile(after, 50) if after else None,
                    'last': after[-1] if after else None}}
