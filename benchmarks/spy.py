"""Sampling profiles of benchmark processes with py-spy, and a summary.

``Recorder(pids, directory)`` starts one ``py-spy record -f raw`` per
process (``--nonblocking``: the process is not paused to be sampled);
``stop()`` ends each by its PID with SIGINT, which makes py-spy write its
file, and returns the summaries: per process, the share of samples by
function (self: where the sample was; inclusive: on the stack) and by
line, and the callers of the top self entries.

    python -m benchmarks.spy FILE [TOP]     # summarise a raw profile

py-spy samples only threads that are running or runnable by default, so
shares are of busy time, not of wall time.
"""
import collections
import os
import shutil
import signal
import subprocess
import sys
from typing import IO, Any, Counter, Dict, List, Sequence, Tuple

from benchmarks import common

Summary = Dict[str, Any]


def available() -> bool:
    return shutil.which('py-spy') is not None


class Recorder:

    def __init__(self, pids: Dict[str, int], directory: str,
                 rate: int = 100) -> None:
        """``pids``: {name: pid}.  Profiles go to ``directory``."""
        self.files: Dict[str, str] = {}
        self.procs: Dict[str, 'subprocess.Popen[bytes]'] = {}
        self.logs: List[IO[bytes]] = []
        for name, pid in pids.items():
            path = os.path.join(directory, '%s.txt' % _slug(name))
            log = open(path + '.log', 'wb')
            self.logs.append(log)
            self.files[name] = path
            self.procs[name] = subprocess.Popen(
                ['py-spy', 'record', '--nonblocking', '-f', 'raw',
                 '-r', str(rate), '-p', str(pid), '-o', path],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    def stop(self, top: int = 12) -> Dict[str, Summary]:
        out: Dict[str, Summary] = {}
        for name, proc in self.procs.items():
            common.stop_process(proc, timeout=15.0, sig=signal.SIGINT)
        for log in self.logs:
            log.close()
        for name, path in self.files.items():
            try:
                out[name] = summarise(path, top)
            except OSError as e:
                out[name] = {'error': str(e)}
        return out


def _slug(name: str) -> str:
    return ''.join(c if c.isalnum() else '-' for c in name)


def _function(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (to/file.py)'."""
    name, _, rest = frame.partition(' (')
    path = rest.rsplit(':', 1)[0].split('/')
    return '%s (%s)' % (name, '/'.join(path[-2:]))


def _line(frame: str) -> str:
    name, _, rest = frame.partition(' (')
    path, _, line = rest.rstrip(')').rpartition(':')
    return '%s (%s:%s)' % (name, '/'.join(path.split('/')[-2:]), line)


def load(path: str) -> List[Tuple[List[str], int]]:
    """py-spy's raw format: one line per stack, 'f1;f2;... COUNT'."""
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip()
            if not line:
                continue
            stack, _, count = line.rpartition(' ')
            stacks.append((stack.split(';'), int(count)))
    return stacks


#: Operations whose inclusive share says where a dispatcher's time goes.
FOCUS = (
    'Dispatcher._poll_once', 'Poller.poll_once', 'Queue.claim',
    'Poller._adopt_unsure_claims',
    'GroupRunner._group', 'GroupRunner._run_one', 'Runner.run',
    'Transaction.commit', 'Connection.setstate', 'ClientStorage.loadBefore',
    'ClientStorage.tpc_begin', 'ClientRunner.tpc_finish',
    'ObjectWriter.serialize', 'ObjectReader.setGhostState',
    'FileStorage._finish_finish', 'FileStorage.tpc_vote', 'os.fsync',
    'ClientThread.run_io_thread', 'ZEOStorage.vote', 'ZEOStorage.loadBefore',
    'wait_until',
)


def summarise(path: str, top: int = 12) -> Summary:
    stacks = load(path)
    total = sum(n for _, n in stacks) or 1
    by_self: Counter[str] = collections.Counter()
    by_line: Counter[str] = collections.Counter()
    inclusive: Counter[str] = collections.Counter()
    callers: Dict[str, Counter[str]] = collections.defaultdict(
        collections.Counter)
    for frames, n in stacks:
        by_self[_function(frames[-1])] += n
        by_line[_line(frames[-1])] += n
        callers[_line(frames[-1])][' < '.join(
            _line(f) for f in reversed(frames[-4:-1]))] += n
        for f in set(_function(f) for f in frames):
            inclusive[f] += n

    focus = {}
    for name in FOCUS:
        n = sum(c for f, c in inclusive.items()
                if f.split(' (')[0] == name)
        if n:
            focus[name] = round(100.0 * n / total, 1)

    def pct(counter: Counter[str]) -> List[List[Any]]:
        return [[round(100.0 * n / total, 1), k]
                for k, n in counter.most_common(top)]
    return {
        'samples': total,
        'self': pct(by_self),
        'self_lines': [[p, k, [[round(100.0 * n / total, 1), c] for c, n
                               in callers[k].most_common(2)]]
                       for p, k in pct(by_line)],
        'inclusive': pct(inclusive),
        'focus_inclusive': focus,
    }


def main(argv: Sequence[str]) -> None:
    s = summarise(argv[0], int(argv[1]) if len(argv) > 1 else 20)
    print('%d samples' % s['samples'])
    for title in ('self', 'inclusive'):
        print('-- %s' % title)
        for p, k in s[title]:
            print('%5.1f%%  %s' % (p, k))
    print('-- focus (inclusive)')
    for k, p in s['focus_inclusive'].items():
        print('%5.1f%%  %s' % (p, k))
    print('-- self, by line, with callers')
    for p, k, cs in s['self_lines']:
        print('%5.1f%%  %s' % (p, k))
        for cp, c in cs:
            print('         %5.1f%%  < %s' % (cp, c))


if __name__ == '__main__':
    main(sys.argv[1:])
