"""Where a pick-up across processes spends its time, stamped inside the
dispatcher process (``python -m benchmarks.pickup --across zeo|pg --parts``).

Run as a script in front of the dispatcher child's own module::

    python .../pickup_parts.py PARTS_FILE MODULE ARGS...

It wraps a few methods of the dispatcher and its poller (names both the
checkout measured and its ``--before`` tree have), then runs ``MODULE``
as ``__main__``.  Every poll that claimed a job appends one JSON line to
PARTS_FILE: when the last push arrived (``push``), when the poll began
(``begun``), when its first claim began (``claims``: the transaction's
sync and the registration's reads are done), when it called commit
(``vote``: claims done, the job loaded), when the commit returned
(``committed``), and the storage loads of the poll (count and seconds;
ZEO only).  The job's own return value is the time its first line ran;
pickup_across.py matches each sample with the poll before it.

Self-contained on purpose: with ``--before TREE`` the child imports the
package and the benchmarks from TREE, which may not have this module.
"""
import json
import os
import runpy
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

#: The stamps of the poll running now (the reactor thread's), if any.
_current: Dict[str, Any] = {}
_last_push: List[Optional[float]] = [None]
#: How many objects the poll running now prefetched (before it began).
_last_prefetch: List[int] = [0]
#: When the dispatcher last handed a claimed job to its executor.
_last_submit: List[Optional[float]] = [None]
#: A worker thread's stamps: its group begun, its lease taken.
_worker = threading.local()
#: Where the stamps go (the first argument).
_parts_file: List[str] = []
_write_lock = threading.Lock()


def _wrap(cls: type, name: str,
          around: Callable[[Callable[..., Any], Any, tuple], Any]) -> None:
    original = getattr(cls, name)

    def wrapper(self: Any, *args: Any) -> Any:
        return around(original, self, args)
    setattr(cls, name, wrapper)


def _on_push(original: Callable[..., Any], self: Any, args: tuple) -> Any:
    _last_push[0] = time.time()
    return original(self, *args)


def _on_poll(original: Callable[..., Any], self: Any, args: tuple) -> Any:
    _current.clear()
    _current.update(push=_last_push[0], begun=time.time(), loads=0,
                    load_s=0.0, reactor=threading.get_ident())
    try:
        outcome = original(self, *args)
    finally:
        stamps = dict(_current, prefetched=_last_prefetch[0])
        _last_prefetch[0] = 0
        _current.clear()
    if outcome is not None and outcome.claimed:
        stamps['jobs'] = len(outcome.claimed)
        with _write_lock, open(_parts_file[0], 'a') as out:
            out.write(json.dumps(stamps) + '\n')
    return outcome


def _on_submit(original: Callable[..., Any], self: Any, args: tuple
               ) -> Any:
    _last_submit[0] = time.time()
    return original(self, *args)


def _thread_stamp(key: str) -> Callable[..., Any]:
    def around(original: Callable[..., Any], self: Any, args: tuple) -> Any:
        setattr(_worker, key, time.time())
        return original(self, *args)
    return around


def _on_call(original: Callable[..., Any], self: Any, args: tuple) -> Any:
    """Just before a grouped job is called: what led its worker there."""
    stamps = {'kind': 'run', 'job_call': time.time(),
              'submitted': _last_submit[0],
              'group': getattr(_worker, 'group', None),
              'leased': getattr(_worker, 'leased', None)}
    with _write_lock, open(_parts_file[0], 'a') as out:
        out.write(json.dumps(stamps) + '\n')
    return original(self, *args)


def _first_stamp(key: str) -> Callable[..., Any]:
    def around(original: Callable[..., Any], self: Any, args: tuple) -> Any:
        _current.setdefault(key, time.time())
        return original(self, *args)
    return around


def _on_commit(original: Callable[..., Any], self: Any, args: tuple) -> Any:
    _current['vote'] = time.time()
    try:
        return original(self, *args)
    finally:
        _current['committed'] = time.time()


def _on_prefetch(original: Callable[..., Any], self: Any, args: tuple
                 ) -> Any:
    asked = original(self, *args)
    _last_prefetch[0] = asked
    return asked


def _on_load(original: Callable[..., Any], self: Any, args: tuple) -> Any:
    if _current.get('reactor') != threading.get_ident():
        return original(self, *args)
    began = time.perf_counter()
    try:
        return original(self, *args)
    finally:
        _current['loads'] += 1
        _current['load_s'] += time.perf_counter() - began


def _wrap_runs() -> None:
    """Stamp the way from a committed claim to a grouped job's call."""
    from pyramid_zcasync.executor import Executor
    try:
        from pyramid_zcasync.group import GroupRunner
    except ImportError:
        return
    if not all(hasattr(GroupRunner, name)
               for name in ('run_group', '_group', '_call')):
        return
    _wrap(Executor, 'submit', _on_submit)
    _wrap(GroupRunner, 'run_group', _thread_stamp('group'))
    _wrap(GroupRunner, '_group', _thread_stamp('leased'))
    _wrap(GroupRunner, '_call', _on_call)


def install() -> None:
    from pyramid_zcasync.dispatcher import Dispatcher
    from pyramid_zcasync.poller import Poller
    _wrap(Dispatcher, '_committed_elsewhere', _on_push)
    _wrap(Poller, 'poll_once', _on_poll)
    _wrap(Poller, '_claim', _first_stamp('claims'))
    _wrap(Poller, '_commit', _on_commit)
    _wrap_runs()
    from pyramid_zcasync import wakeup
    if hasattr(wakeup.Subscription, 'prefetch'):
        _wrap(wakeup.Subscription, 'prefetch', _on_prefetch)
    try:
        from ZEO.ClientStorage import ClientStorage
    except ImportError:
        return
    _wrap(ClientStorage, 'loadBefore', _on_load)


# -- the measuring process's side ----------------------------------------------

#: A sample's absolute times: commit() called, returned, the job's first line.
Stamps = Tuple[float, float, float]
#: The parts, in order: (name, the stamp it starts at, the one it ends at).
PARTS = (('put commit', 'call', 'return'),
         ('to push', 'return', 'push'),
         ('push to poll', 'push', 'begun'),
         ('poll sync', 'begun', 'claims'),
         ('claims', 'claims', 'vote'),
         ('poll commit', 'vote', 'committed'),
         ('to first line', 'committed', 'started'))
#: The last part split, for jobs run in a group (group.py): the claimed
#: job handed to the executor, its worker's group begun, the group's
#: lease taken (the bookkeeping lock the poll holds until it is done),
#: the job loaded and about to be called, its first line.
RUN_PARTS = (('to submit', 'committed', 'submitted'),
             ('to worker', 'submitted', 'group'),
             ('lease', 'group', 'leased'),
             ('to call', 'leased', 'job_call'),
             ('call to first line', 'job_call', 'started'))


def command(child: List[str], parts: str) -> List[str]:
    """The child's ``[python, '-m', MODULE, ARGS...]`` run behind this
    script, stamping into the file ``parts``."""
    python, _, module = child[:3]
    return [python, os.path.abspath(__file__), parts, module] + child[3:]


def read(parts: str) -> List[Dict[str, Any]]:
    """The polls and runs stamped into ``parts`` (none if it was never
    written)."""
    if not os.path.exists(parts):
        return []
    with open(parts) as lines:
        return [json.loads(line) for line in lines if line.strip()]


#: What each claiming poll counted: (name in the summary, key, scale).
COUNTS = (('poll loads', 'loads', 1), ('poll loads ms', 'load_s', 1000),
          ('prefetched', 'prefetched', 1))


def breakdown(samples: Sequence[Stamps], polls: List[Dict[str, Any]]
              ) -> Dict[str, Any]:
    """Median milliseconds of each part over the samples whose claiming
    poll was found (the last one to commit before the job started, begun
    after its put was committed and woken by a push after that), and the
    medians of what those polls counted; the last part split where the
    job ran in a group stamped (``runs``)."""
    found: Dict[str, List[float]] = {
        name: [] for name, _, _ in PARTS + COUNTS + RUN_PARTS}
    for call, returned, started in samples:
        poll = _claiming_poll(polls, call, started)
        if poll is None or (poll.get('push') or 0) < call:
            continue
        stamps = dict(poll, call=call, started=started)
        stamps['return'] = returned
        _add_parts(found, PARTS, stamps)
        for name, key, scale in COUNTS:
            found[name].append(poll.get(key, 0) * scale)
        run = _run_of(polls, poll['committed'], started)
        if run is not None:
            _add_parts(found, RUN_PARTS, dict(run, **stamps))
    matched = len(found['poll loads'])
    out: Dict[str, Any] = {'matched': matched, 'of': len(samples),
                           'runs': len(found['lease'])}
    out.update({name + ' p50': round(statistics.median(values), 2)
                for name, values in found.items() if values})
    return out


def _add_parts(found: Dict[str, List[float]],
               parts: Sequence[Tuple[str, str, str]],
               stamps: Dict[str, Any]) -> None:
    for name, begin, end in parts:
        found[name].append((stamps[end] - stamps[begin]) * 1000)


def _run_of(records: List[Dict[str, Any]], committed: float,
            started: float) -> Optional[Dict[str, Any]]:
    """The grouped call of the job claimed by the poll committed at
    ``committed``: the last one stamped before the job started, with
    every stamp after that commit."""
    runs = [run for run in records if run.get('kind') == 'run'
            and run['job_call'] <= started
            and all((run.get(key) or 0) >= committed
                    for key in ('submitted', 'group', 'leased'))]
    return max(runs, key=lambda run: run['job_call'], default=None)


def _claiming_poll(polls: List[Dict[str, Any]], call: float,
                   started: float) -> Optional[Dict[str, Any]]:
    before = [poll for poll in polls
              if poll.get('committed') is not None
              and call <= poll['begun'] and poll['committed'] <= started]
    return max(before, key=lambda poll: poll['committed'], default=None)


def main() -> None:
    _parts_file.append(sys.argv[1])
    module = sys.argv[2]
    install()
    sys.argv = [module] + sys.argv[3:]
    runpy.run_module(module, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
    sys.path[0] = ''  # as ``-m`` would: the working directory (the tree)
    main()
