"""Concurrent producers: how often puts from many threads conflict.

    python -m benchmarks.producers [--threads 8,16] [--puts 60]
                                   [--processes 1] [--begin-by SECONDS]
                                   [--json PATH]

A web app's requests put jobs from many threads at once (waitress runs 4
by default, production servers more); every put that conflicts costs a
retry, and one that conflicts ``attempts`` times is an HTTP 500.  Here
THREADS threads each put PUTS no-op jobs, one transaction a put (as one
request each), on their own connection, retrying a ConflictError up to
``attempts`` (5, like ``retry.attempts`` in production.ini) times, over a
ZEO server and over RelStorage-PostgreSQL (history-free, fsync on), both
started here on 127.0.0.1 and stopped by PID.  Printed per storage and
thread count: puts committed, puts that failed all attempts, conflicts
by the class (or message) ConflictError named and by the object of the
queue it was about (``conflicts_on``: a stripe's tree, one of its
buckets, its counter, a deadline tree, the unique index...), wall time.
Without
PostgreSQL (or RelStorage) the RelStorage rows are skipped with the
reason.  ``--processes P`` splits the threads between P processes
(producer processes of one site: their threads pick stripes without
knowing each other's).  ``--begin-by`` gives every job a deadline that many seconds
ahead (jobs with a deadline are also indexed by it).  Figures and the
machine go to benchmarks/results/producers.json.
"""
import argparse
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import (IO, Any, Callable, Dict, Iterator, List, Optional,
                    Sequence)

from benchmarks import common
from benchmarks.peers import Skipped


def put_concurrently(db: Any, threads: int, puts: int, attempts: int = 5,
                     begin_by: Optional[float] = None) -> Dict[str, Any]:
    """{'committed', 'failed', 'conflicts' (Counter), 'seconds'}."""
    return _summary(db, _put(db, threads, puts, attempts, begin_by))


def _put(db: Any, threads: int, puts: int, attempts: int,
         begin_by: Optional[float]) -> Dict[str, Any]:
    """The puts, and each conflict as ``[kind, oid or None]``."""
    import datetime
    import pyramid_zcasync
    from benchmarks._peer_jobs import started_at as noop
    from pyramid_zcasync.interfaces import IQueue
    _tests_on_path()
    import dbtools
    pyramid_zcasync.install_queues(db)
    options = {} if begin_by is None else {
        'begin_by': datetime.timedelta(seconds=begin_by)}
    committed, failed, conflicts, seconds = dbtools.put_concurrently(
        db, threads, puts, lambda root: IQueue(root).put(noop, **options),
        attempts)
    return {'committed': committed, 'failed': failed, 'seconds': seconds,
            'puts': threads * puts, 'conflicts': [
                [_kind(exc), _hex(getattr(exc, 'oid', None))]
                for exc in conflicts]}


def _hex(oid: Optional[bytes]) -> Optional[str]:
    return None if oid is None else oid.hex()


def _summary(db: Any, outcome: Dict[str, Any]) -> Dict[str, Any]:
    """A row's figures from ``_put``'s (or the sum of several)."""
    conflicts = outcome['conflicts']
    return {'committed': outcome['committed'], 'failed': outcome['failed'],
            'conflicts': collections.Counter(kind for kind, _ in conflicts),
            'conflicts_on': _objects_of(db, [oid for _, oid in conflicts]),
            'conflicts_per_put': round(len(conflicts) / outcome['puts'], 3),
            'seconds': round(outcome['seconds'], 2)}


def put_in_processes(db: Any, where: str, processes: int, threads: int,
                     puts: int, begin_by: Optional[float] = None
                     ) -> Dict[str, Any]:
    """``put_concurrently`` by ``processes`` processes at once, each on
    its own connection to ``where`` (see _open) with its share of the
    threads."""
    import json
    import pyramid_zcasync
    pyramid_zcasync.install_queues(db)
    command = [sys.executable, '-m', 'benchmarks.producers', '--child',
               where, '--threads', str(threads // processes),
               '--puts', str(puts)] + (
                   [] if begin_by is None else ['--begin-by', str(begin_by)])
    children = [subprocess.Popen(command, stdout=subprocess.PIPE,
                                 cwd=common.project_root(),
                                 env=common.python_env())
                for _ in range(processes)]
    outcomes = [json.loads(child.communicate(timeout=900)[0])
                for child in children]
    return _summary(db, {
        'committed': sum(o['committed'] for o in outcomes),
        'failed': sum(o['failed'] for o in outcomes),
        'puts': sum(o['puts'] for o in outcomes),
        'seconds': max(o['seconds'] for o in outcomes),
        'conflicts': [c for o in outcomes for c in o['conflicts']]})


def _open(where: str) -> Any:
    """A database on ``zeo:PORT`` or a RelStorage zodburi URI."""
    if where.startswith('zeo:'):
        import ZEO
        return ZEO.DB(('127.0.0.1', int(where[4:])), wait_timeout=30)
    from benchmarks.relstorage import open_db
    return open_db(where)


def _child(where: str, threads: int, puts: int,
           begin_by: Optional[float]) -> None:
    """One process of put_in_processes: its outcome as JSON on stdout."""
    import json
    db = _open(where)
    try:
        outcome = _put(db, threads, puts, 5, begin_by)
    finally:
        db.close()
    print(json.dumps(outcome))


def _tests_on_path() -> None:
    """tests/ (conftest's ZEOServer, dbtools) importable."""
    tests = os.path.join(common.project_root(), 'tests')
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _kind(exc: BaseException) -> str:
    """What a conflict was about: the class ZODB names, else RelStorage's
    lock message (``deadlock detected``, ``lock_not_available``...)."""
    name = getattr(exc, 'class_name', None)
    if name:
        return name
    text = str(exc)
    for word in ('deadlock detected', 'lock_not_available'):
        if word in text:
            return word
    return text.split('\n')[0][:60]


def _objects_of(db: Any, oids: Sequence[Optional[str]]) -> Dict[str, int]:
    """How many conflicts were about each object of the queue (``oids``,
    in hex), named by ``_name_objects``; RelStorage's lock errors name no
    object."""
    from pyramid_zcasync.interfaces import IQueue
    connection = db.open()
    try:
        names = _name_objects(IQueue(connection.root()))
    finally:
        connection.close()
    return dict(collections.Counter(
        names.get(bytes.fromhex(oid or ''), 'no object named')
        for oid in oids))


def _name_objects(queue: Any) -> Dict[bytes, str]:
    """oid -> what it is in ``queue`` (as the conflicts' oids are known
    after the run, the buckets named are those of the trees then: a
    bucket split since is named as the bucket that kept its oid)."""
    named = {queue._p_oid: 'queue', queue._stripes._p_oid: 'lanes'}
    for (negative, names, stripe), (tree, counter) in (
            queue._stripes.items()):
        where = ' (priority %d%s, stripe %d)' % (
            -negative, ''.join(', ' + name for name in names), stripe)
        named.update(_tree_objects(tree, 'lane', where))
        named[counter._p_oid] = 'lane counter' + where
    for stripe, tree in enumerate(queue._deadline_stripes):
        named.update(_tree_objects(tree, 'deadlines',
                                   ' (stripe %d)' % stripe))
    named.update(_tree_objects(queue._unique, 'unique index', ''))
    return named


def _tree_objects(tree: Any, name: str, where: str) -> Dict[bytes, str]:
    """The oids of ``tree`` and of its buckets (a tree of one bucket
    holds it in its own record)."""
    named = {tree._p_oid: name + ' tree' + where}
    buckets = []
    bucket = tree._firstbucket
    while bucket is not None:
        if bucket._p_oid is not None:
            buckets.append(bucket._p_oid)
        bucket = bucket._next
    for index, oid in enumerate(buckets):
        place = ('last' if index == len(buckets) - 1
                 else 'first' if index == 0 else 'middle')
        named[oid] = '%s %s bucket%s' % (name, place, where)
    return named


@contextlib.contextmanager
def zeo_db() -> Iterator[Any]:
    """A database on a fresh ZEO server (tests/conftest.py's ZEOServer),
    and where other processes find it (``zeo:PORT``)."""
    _tests_on_path()
    from conftest import ZEOServer
    directory = tempfile.mkdtemp(prefix='zcasync-producers-')
    server = ZEOServer(directory)
    try:
        server.start()
        db = server.db()
        try:
            yield db, 'zeo:%d' % server.port
        finally:
            db.close()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def relstorage_db() -> Iterator[Any]:
    """A database on a fresh PostgreSQL cluster (fsync on), through
    RelStorage's zodburi URI (also where other processes find it);
    :class:`Skipped` without PostgreSQL."""
    from benchmarks.relstorage import _pgserver, open_db
    cluster = _pgserver().PostgreSQL(durable=True).start()
    try:
        uri = cluster.uri('producers')
        db = open_db(uri)
        try:
            yield db, uri
        finally:
            db.close()
    finally:
        cluster.stop()


ENGINES = (('ZEO', zeo_db), ('RelStorage', relstorage_db))


def run(thread_counts: Sequence[int] = (8, 16), puts: int = 60,
        begin_by: Optional[float] = None,
        log: Callable[[str], None] = print,
        storages: Sequence[str] = ('ZEO', 'RelStorage'),
        processes: int = 1) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    for name, fresh_db in ENGINES:
        if name.lower() not in {s.lower() for s in storages}:
            continue
        for threads in thread_counts:
            log('  %s, %d threads in %d processes ...'
                % (name, threads, processes))
            try:
                with fresh_db() as (db, where):
                    outcome = (put_concurrently(
                        db, threads, puts, begin_by=begin_by)
                        if processes == 1 else put_in_processes(
                            db, where, processes, threads, puts, begin_by))
            except Skipped as why:
                rows.append({'storage': name, 'skipped': str(why)})
                break
            rows.append({**outcome, 'storage': name, 'threads': threads,
                         'processes': processes, 'puts': threads * puts})
    return {'machine': common.machine_description(), 'puts': puts,
            'begin_by': begin_by, 'processes': processes, 'rows': rows}


def print_report(result: Dict[str, Any],
                 file: Optional[IO[str]] = None) -> None:
    table = []
    for row in result['rows']:
        if 'skipped' in row:
            table.append([row['storage'], None, None, None, None, None,
                          None, 'skipped: ' + row['skipped'], None])
            continue
        conflicts = row['conflicts']
        table.append([row['storage'], row['threads'], row['puts'],
                      row['committed'], row['failed'],
                      row['conflicts_per_put'], row['seconds'],
                      _listed(conflicts), _listed(_kinds(row['conflicts_on']))])
    common.print_table(['storage', 'threads', 'puts', 'committed',
                        'failed', 'conflicts/put', 'seconds', 'conflicts',
                        'about'], table, out=file)


def _kinds(about: Dict[str, int]) -> Dict[str, int]:
    """``about`` without the lanes and stripes (the JSON keeps them)."""
    kinds: Dict[str, int] = collections.Counter()
    for name, count in about.items():
        kinds[name.split(' (')[0]] += count
    return kinds


def _listed(counts: Dict[str, int]) -> str:
    return ', '.join('%s %d' % item for item in sorted(counts.items())
                     ) or 'none'


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', default='8,16',
                        help='thread counts, comma-separated')
    parser.add_argument('--puts', type=int, default=60,
                        help='puts per thread')
    parser.add_argument('--begin-by', type=float,
                        help='give each job a deadline this many seconds '
                        'ahead')
    parser.add_argument('--storages', default='ZEO,RelStorage',
                        help='which of ZEO, RelStorage, comma-separated')
    parser.add_argument('--processes', type=int, default=1,
                        help='split the threads between this many '
                        'processes')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--json', help='default: '
                        'benchmarks/results/producers.json')
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(',')]
    if args.child:
        _child(args.child, counts[0], args.puts, args.begin_by)
        return
    result = run(counts, args.puts, args.begin_by,
                 storages=args.storages.split(','),
                 processes=args.processes)
    print_report(result)
    path = common.write_result('producers', result, args.json)
    print('written to %s' % os.path.relpath(path))


if __name__ == '__main__':
    main()
