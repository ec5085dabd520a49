"""The processes of a soak (benchmarks/soak.py): the job, and a
dispatcher-only worker process, started and stopped by PID (the ZEO
server is zeo.py's).

    python -m benchmarks.soakprocs --worker zeo:PORT UUID_FILE POLL PING
                                   DEATH AGENT_SIZE HISTORY_SIZE
                                   JOB_HISTORY LOG

JOB_HISTORY 0 keeps the package's bound of in-memory job records.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks import common


def soak_job(done: Any, key: int, seconds: float, runs_log: str) -> int:
    """Note the run, maybe sleep, count the key once in ZODB."""
    with open(runs_log, 'a') as stream:
        stream.write('%s %d\n' % (key, os.getpid()))
    if seconds:
        time.sleep(seconds)
    done[key] = done.get(key, 0) + 1
    return key


def worker_main(argv: Sequence[str]) -> None:
    """``--worker zeo:PORT UUID_FILE POLL PING DEATH AGENT_SIZE HISTORY_SIZE
    JOB_HISTORY LOG``"""
    import logging

    import ZEO

    from benchmarks._zc_worker import serve_dispatcher
    from benchmarks.soakmem import start_from_environment
    storage, uuid_file, poll, ping, death, size, history, records, log = argv
    logging.basicConfig(
        filename=log, level=logging.WARNING,
        format='%(asctime)s %(process)d %(threadName)s %(name)s '
               '%(levelname)s %(message)s')
    db = ZEO.DB(('127.0.0.1', int(storage.split(':')[1])), wait_timeout=30)
    start_from_environment(db, os.path.basename(log)[:-len('.log')])
    serve_dispatcher(db, dict(
        uuid_file=uuid_file, poll_interval=float(poll),
        ping_interval=float(ping), ping_death_interval=float(death),
        agent_size=int(size), history_size=int(history)),
        stop_dispatchers=False, job_history=int(records) or None)


class Worker:
    """One dispatcher process; restartable with the same UUID file."""

    def __init__(self, name: str, directory: str, port: int,
                 params: Dict[str, Any]) -> None:
        self.name = name
        self.uuid_file = os.path.join(directory, name + '.uuid')
        self.log = os.path.join(directory, name + '.log')
        self.port = port
        self.params = params
        self.process: Optional['subprocess.Popen[str]'] = None
        self.ready = threading.Event()
        self.pids: List[int] = []

    def start(self) -> None:
        self.ready = threading.Event()
        p = self.params
        self.process = process = subprocess.Popen(
            [sys.executable, '-m', 'benchmarks.soakprocs', '--worker',
             'zeo:%d' % self.port, self.uuid_file, str(p['poll_interval']),
             str(p['ping_interval']), str(p['death']), str(p['agent_size']),
             str(p['history_size']), str(p.get('job_history') or 0),
             self.log],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=common.project_root(), env=common.python_env())
        self.pids.append(process.pid)
        threading.Thread(target=self._read, args=(process, self.ready),
                         daemon=True).start()

    @staticmethod
    def _read(process: 'subprocess.Popen[str]',
              ready: threading.Event) -> None:
        assert process.stdout is not None   # stdout=PIPE
        for line in process.stdout:
            if line.strip() == 'ready':
                ready.set()
        process.stdout.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            common.stop_process(self.process, timeout=10)

    @property
    def uuid(self) -> str:
        from pyramid_zcasync.instance import read_uuid
        return read_uuid(self.uuid_file)


class WebProducer:
    """benchmarks/soakweb.py under waitress, in a process of its own:
    the soak's producers put through its HTTP requests (``--web``)."""

    def __init__(self, directory: str, zeo_port: int,
                 timeout: float = 30.0) -> None:
        self.port = common.free_port()
        self.log = os.path.join(directory, 'web.log')
        with open(self.log, 'ab') as log:  # a pipe nobody reads blocks
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'benchmarks.soakweb', str(zeo_port),
                 str(self.port)], stdout=subprocess.PIPE, stderr=log,
                text=True, cwd=common.project_root(), env=common.python_env())
        assert self.process.stdout is not None   # stdout=PIPE
        if self.process.stdout.readline().strip() != 'serving':
            raise RuntimeError('the web producer did not start; see %s'
                               % self.log)
        common.wait_until(self._listening, timeout, 0.05,
                          'the web producer to listen')

    def _listening(self) -> bool:
        import socket
        with socket.socket() as sock:
            return sock.connect_ex(('127.0.0.1', self.port)) == 0

    def stop(self) -> None:
        common.stop_process(self.process, timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']:
        worker_main(sys.argv[2:])
    else:
        sys.exit(__doc__)
