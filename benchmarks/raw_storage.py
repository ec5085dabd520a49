"""Raw FileStorage commit rate: the ceiling for one-commit-per-job designs.

N small transactions against a FileStorage in a temporary directory, one
persistent object per transaction.  FileStorage flushes and fsyncs the data
file at the end of every commit by default; nothing here turns that off.  The
result is commits/s.  Two variants:

``modify`` (the headline figure)
    each commit changes the same PersistentMapping (one data record per
    transaction): the purest "one small commit" the storage can do.
``add``
    each commit adds a new PersistentMapping to an OOBTree (two records per
    transaction: the new object and the bucket), closer to what storing a new
    job costs.

A third row, ``fsync``, times the bare system call (append 200 bytes, flush,
os.fsync) without ZODB, to show how much of a commit is the disk.

    python -m benchmarks.raw_storage [--commits N] [--rounds R]

Each variant is timed ``rounds`` times in one database; the median round
is reported (the others are kept in the JSON: this machine is noisy).
"""
import argparse
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import common


DEFAULT_COMMITS = 1500
DEFAULT_MAX_SECONDS = 20.0
DEFAULT_ROUNDS = 3


MODES = ('modify', 'add')

Result = Dict[str, Any]
Round = Tuple[float, int]      # (commits/s, commits done)


def timed_rounds(one: Callable[[int], None], count: int, rounds: int,
                 max_seconds: float) -> List[Round]:
    """``rounds`` times, call ``one(i)`` ``count`` times; all rounds
    together stop early after ``max_seconds`` (a slow disk must not hold
    up the suite)."""
    deadline = time.monotonic() + max_seconds
    per_round = []
    i = 0
    for _ in range(rounds):
        done = 0
        t0 = time.perf_counter()
        for _ in range(count):
            one(i)
            i += 1
            done += 1
            if time.monotonic() > deadline:
                break
        per_round.append((done / (time.perf_counter() - t0), done))
        if time.monotonic() > deadline:
            break
    return per_round


def summary(name: str, mode: str, per_round: Sequence[Round]) -> Result:
    """The median round, with every round's rate kept (the noise)."""
    rate, done = sorted(per_round)[len(per_round) // 2]
    return {
        'name': name,
        'mode': mode,
        'commits': done,
        'rounds': len(per_round),
        'commits_per_s': round(rate, 1),
        'ms_per_commit': round(1000.0 / rate, 3),
        'commits_per_s_rounds': [round(r, 1) for r, _ in per_round],
    }


def run(commits: int = DEFAULT_COMMITS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        rounds: int = DEFAULT_ROUNDS, warmup: int = 50,
        directory: Optional[str] = None, mode: str = 'modify') -> Result:
    """``rounds`` times, commit ``commits`` one-object transactions (all
    rounds together stop early after ``max_seconds``); return a dict with
    the median round's ``commits_per_s``."""
    if mode not in MODES:
        raise ValueError('mode must be one of %r' % (MODES,))
    import transaction
    from BTrees.OOBTree import OOBTree
    from persistent.mapping import PersistentMapping
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    tmp = tempfile.mkdtemp(prefix='bench-fs-', dir=directory)
    db = None
    try:
        storage = FileStorage(os.path.join(tmp, 'Data.fs'))
        db = DB(storage)
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        root = conn.root()
        root['counter'] = obj = PersistentMapping(n=0)
        root['tree'] = tree = OOBTree()
        tm.commit()

        def modify(i: int) -> None:
            obj['n'] = i
            tm.commit()

        def add(i: int) -> None:
            tree[i] = PersistentMapping(n=i)
            tm.commit()

        one = modify if mode == 'modify' else add
        for i in range(-warmup, 0):
            one(i)
        per_round = timed_rounds(one, commits, rounds, max_seconds)
        size = os.path.getsize(os.path.join(tmp, 'Data.fs'))
        conn.close()
        return dict(summary('raw FileStorage commit, %s (fsync)' % mode,
                            mode, per_round),
                    file_bytes=size,
                    truncated_by_time=any(d < commits for _, d in per_round))
    finally:
        if db is not None:
            db.close()
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_rate(count: int = DEFAULT_COMMITS,
               max_seconds: float = DEFAULT_MAX_SECONDS,
               rounds: int = DEFAULT_ROUNDS,
               directory: Optional[str] = None) -> Result:
    """Bare append + flush + os.fsync of 200 bytes, ``count`` times per
    round; median round, in the same shape as ``run``."""
    tmp = tempfile.mkdtemp(prefix='bench-fsync-', dir=directory)
    try:
        with open(os.path.join(tmp, 'f'), 'ab') as f:
            def append(i: int) -> None:
                f.write(b'x' * 200)
                f.flush()
                os.fsync(f.fileno())
            per_round = timed_rounds(append, count, rounds, max_seconds)
        return summary('bare os.fsync, 200-byte append (no ZODB)', 'fsync',
                       per_round)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(commits: int = DEFAULT_COMMITS,
            max_seconds: float = DEFAULT_MAX_SECONDS,
            rounds: int = DEFAULT_ROUNDS) -> Dict[str, Result]:
    """Both FileStorage variants and the bare fsync; a dict keyed by mode
    ('modify' is the headline raw FileStorage commit rate)."""
    out = {mode: run(commits, max_seconds, rounds, mode=mode)
           for mode in MODES}
    out['fsync'] = fsync_rate(commits, max_seconds, rounds)
    return out


def table_rows(results: Dict[str, Result]) -> List[List[Any]]:
    return [[r['name'], r['commits'], r['commits_per_s'], r['ms_per_commit']]
            for r in results.values()]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--commits', type=int, default=DEFAULT_COMMITS)
    p.add_argument('--rounds', type=int, default=DEFAULT_ROUNDS)
    args = p.parse_args(argv)
    results = run_all(args.commits, rounds=args.rounds)
    common.print_table(['benchmark', 'commits', 'commits/s', 'ms/commit'],
                       table_rows(results))
    print(common.describe_machine())


if __name__ == '__main__':
    main()
