"""Shared helpers for the benchmark scripts.

Everything here is small and dependency-free (standard library only) so that
the peer benchmarks and, later, the pyramid_zcasync rows can share the same
timing, reporting and process-handling code.
"""
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import (IO, Any, Callable, Dict, Iterable, Optional, Sequence,
                    TypeVar)

T = TypeVar('T')
JSON = Dict[str, Any]


RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'results')


class Skipped(Exception):
    """A benchmark cannot run here (a missing package or server binary):
    its row says why, and the rest of the suite still runs."""


# -- statistics -------------------------------------------------------------

def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0..100) of ``values``, linear interpolation
    between closest ranks (same as numpy's default).  Callers check for
    no values: an empty sample has no percentile to report."""
    data = sorted(values)
    if not data:
        raise ValueError('no values')
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * (p / 100.0)
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def latency_summary(seconds: Iterable[float]) -> Dict[str, Any]:
    """Summarise a list of latencies given in seconds, as milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    if not ms:
        return {'n': 0}
    return {
        'n': len(ms),
        'p50_ms': round(percentile(ms, 50), 3),
        'p95_ms': round(percentile(ms, 95), 3),
        'min_ms': round(min(ms), 3),
        'max_ms': round(max(ms), 3),
        'mean_ms': round(statistics.fmean(ms), 3),
    }


def attempt(out: JSON, key: str, measure: Callable[[], T],
            log: Callable[[str], None] = print) -> Optional[T]:
    """Run one phase of a suite, recording in ``out`` its seconds, the load
    average around it, and why it was skipped or failed: one phase failing
    must not lose the others' figures.  Returns what ``measure()`` did, or
    None."""
    started = time.perf_counter()
    load = out.setdefault('load_average', {})[key] = {
        'before': os.getloadavg()}
    log('running %s ...' % key)
    try:
        return measure()
    except Skipped as e:
        out.setdefault('skipped', {})[key] = str(e)
        log('  skipped: %s' % e)
    except Exception as e:
        out.setdefault('errors', {})[key] = '%s: %s' % (type(e).__name__, e)
        log('  error: %s: %s' % (type(e).__name__, e))
    finally:
        seconds = out.setdefault('phase_seconds', {})[key] = round(
            time.perf_counter() - started, 1)
        load['after'] = os.getloadavg()
        log('  (%.1f s, load average %.1f)' % (seconds, load['after'][0]))
    return None


# -- waiting, bounded -------------------------------------------------------

class Timeout(Exception):
    pass


def wait_until(predicate: Callable[[], T], timeout: float,
               interval: float = 0.002, what: str = 'condition') -> T:
    """Call ``predicate`` every ``interval`` s until it returns a true value
    (which is returned) or ``timeout`` s have passed (raises Timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Timeout('timed out after %.1f s waiting for %s'
                          % (timeout, what))
        time.sleep(interval)


def process_cpu_seconds() -> float:
    """This process's user + system CPU time so far: on a shared machine
    CPU per job moves far less than wall time does."""
    t = os.times()
    return t.user + t.system


# -- the queue, duck-typed (this module imports no ZODB) ---------------------

def queue_drained(manager: Any, connection: Any,
                  queue_of: Callable[[Any], Any]) -> bool:
    """No job pending in ``queue_of(connection)`` and no agent holding
    one, seen in a fresh transaction of ``manager``: the end of a drain."""
    manager.begin()
    try:
        queue = queue_of(connection)
        return len(queue) == 0 and all(
            len(agent) == 0 for registration in queue.dispatchers.values()
            for agent in registration.values())
    finally:
        manager.abort()


# -- processes and ports ----------------------------------------------------

def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: 'subprocess.Popen[Any]', timeout: float = 5.0,
                 sig: int = signal.SIGTERM) -> int:
    """Stop one child process by its PID: ``sig`` first, SIGKILL if it has
    not exited after ``timeout`` s.  Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout)


def project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_env() -> Dict[str, str]:
    """Environment for child Python processes: the project root on
    sys.path so that ``benchmarks.*`` imports resolve."""
    env = dict(os.environ)
    root = project_root()
    env['PYTHONPATH'] = (root + os.pathsep + env['PYTHONPATH']
                         if env.get('PYTHONPATH') else root)
    return env


def code_version(root: Optional[str] = None) -> Dict[str, Any]:
    """The commit of the checkout at ``root`` (this one by default), and
    the package's files that differ from it: a figure is only as good as
    the knowledge of what code it measured."""
    root = root or project_root()

    def git(*args: str) -> Optional[str]:
        try:
            return subprocess.run(
                ['git'] + list(args), cwd=root, capture_output=True,
                text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    dirty = git('status', '--porcelain', '--', 'pyramid_zcasync')
    return {'commit': git('rev-parse', 'HEAD') or None,
            'subject': git('log', '-1', '--format=%s') or None,
            'package_changes_not_committed': dirty.splitlines()
            if dirty else []}


# -- machine description ----------------------------------------------------

def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> Optional[int]:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def machine_description(packages: Sequence[str] = (
        'ZODB', 'persistent', 'transaction', 'huey', 'rq',
        'redis')) -> JSON:
    ram = _ram_bytes()
    return {
        'cpu_model': _cpu_model(),
        'cores': os.cpu_count(),
        'ram_gib': round(ram / 2 ** 30, 1) if ram else None,
        'python': platform.python_version(),
        'python_implementation': platform.python_implementation(),
        'platform': platform.platform(),
        'packages': {p: _version(p) for p in packages},
    }


def describe_machine(m: Optional[JSON] = None) -> str:
    m = m or machine_description()
    pk = ', '.join('%s %s' % (k, v) for k, v in m['packages'].items() if v)
    return ('%s, %s cores, %s GiB RAM, %s %s, %s\n%s'
            % (m['cpu_model'], m['cores'], m['ram_gib'],
               m['python_implementation'], m['python'], m['platform'], pk))


# -- output -----------------------------------------------------------------

def fmt(value: Any, digits: Optional[int] = None) -> str:
    """Cell text: '-' for None; floats with 1 decimal (2 below 10)."""
    if value is None:
        return '-'
    if isinstance(value, float):
        if digits is None:
            digits = 2 if abs(value) < 10 else 1
        return '%.*f' % (digits, value)
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                out: Optional[IO[str]] = None) -> None:
    """Print ``rows`` (lists of cells) under ``headers`` as a plain text
    table; cells are formatted with ``fmt``; numbers right-aligned."""
    out = out or sys.stdout
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None
                   for r in rows) and rows for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return '  '.join(c.rjust(w) if numeric[i] else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))
    print(line(headers), file=out)
    print('  '.join('-' * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)


def write_json(name: str, data: Any) -> str:
    """Write ``data`` to benchmarks/results/<name>.json; return the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    return write_json_path(os.path.join(RESULTS_DIR, name + '.json'), data)


def write_result(name: str, data: Any, path: Optional[str] = None) -> str:
    """Write ``data`` to ``path`` (as ``--json`` gives it), else to the
    scratch file benchmarks/results/<name>.json; return the path."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return write_json_path(path, data)
    return write_json(name, data)


def report_and_write(name: str, result: JSON, path: Optional[str],
                     print_report: Callable[[JSON], None]) -> str:
    """The end of a standalone benchmark: the machine noted, the report
    printed, the JSON written (see ``write_result``)."""
    result['machine'] = machine_description()
    print_report(result)
    written = write_result(name, result, path)
    print('wrote %s (%.1f s)' % (written, result['duration_s']))
    return written


def log_to_stderr(text: str) -> None:
    """Progress lines go to stderr, so stdout holds the report alone."""
    print(text, file=sys.stderr, flush=True)


def write_dated_json(name: str, data: Any,
                     path: Optional[str] = None) -> str:
    """Write ``data`` to ``path``, or by default to
    benchmarks/results/<name>-YYYY-MM-DD.json (today's date, UTC): the
    dated files are the ones kept in the repository."""
    if path:
        return write_result(name, data, path)
    return write_json('%s-%s' % (name, time.strftime('%Y-%m-%d',
                                                    time.gmtime())), data)


def write_json_path(path: str, data: Any) -> str:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)
    return path
