"""README's "Guarantees", shown over a real ZEO server: a worker frozen
with SIGSTOP in the middle of a job is declared dead and its job re-run
by a sibling; when the frozen worker resumes, its run finishes (its
outside effect happens a second time) but the database keeps the
sibling's result: exactly once in ZODB, at least once outside."""
import os
import signal
import time

import pytest

import pyramid_zcasync
import pyramid_zcasync.instance
from pyramid_zcasync.interfaces import COMPLETED
from pyramid_zcasync.testing import wait_until

import jobs
from test_crash import job_state, put_held_job, started_by
from test_reliability import registration_info

pytestmark = pytest.mark.chaos

#: poll, ping, death (seconds): the frozen worker is found dead quickly.
FAST = (0.2, 0.3, 2.0)


def freeze_outside_a_commit(db, frozen, sibling_uuid, attempts=3):
    """SIGSTOP ``frozen`` mid-job, but not mid-commit: stopped between its
    vote and its tpc_finish it holds the ZEO server's commit lock, every
    other client's commit waits, and no sibling can ping, judge it dead
    or re-run its job until it resumes.  The sibling's start-up commits
    wake the worker to poll, so right after the sibling is ready the
    freeze caught it there about one run in five.  Frozen there, it is
    resumed and frozen again a moment later; the sibling's pings going
    through say it is not."""
    for _ in range(attempts):
        os.kill(frozen.pid, signal.SIGSTOP)
        before = registration_info(db, sibling_uuid)['last_ping']
        try:
            wait_until(lambda: registration_info(
                db, sibling_uuid)['last_ping'] != before, 3,
                "the sibling's next ping")
            return
        except AssertionError:
            os.kill(frozen.pid, signal.SIGCONT)
            time.sleep(0.5)
    raise AssertionError('the frozen worker held the commit lock %d times'
                         % attempts)


def ended_by(log, name, pid):
    return [r for r in jobs.runs(log, name) if r[0] == 'end' and r[1] == pid]


def test_a_frozen_workers_late_commit_is_refused(tmp_path, zeo_server,
                                                 workers):
    db = zeo_server.db()
    try:
        pyramid_zcasync.install_queues(db)
        oid, log, hold = put_held_job(db, tmp_path)
        storage = 'zeo:%d' % zeo_server.port
        frozen = workers(storage, tmp_path / 'a.txt',
                         FAST + ('--log', str(tmp_path / 'a.log')))
        assert frozen.first_line == 'ready'
        wait_until(lambda: started_by(log, 'j1'), 15, 'the first run')
        sibling = workers(storage, tmp_path / 'b.txt', FAST)
        assert sibling.first_line == 'ready'
        sibling_uuid = pyramid_zcasync.instance.read_uuid(
            str(tmp_path / 'b.txt'))

        freeze_outside_a_commit(db, frozen, sibling_uuid)
        try:
            rerun = wait_until(lambda: started_by(log, 'j1', 2), 20,
                               'the re-run')
            assert [r[1] for r in rerun] == [frozen.pid, sibling.pid]
            os.remove(hold)  # both runs may end now

            def completed():
                db.storage.sync()
                return job_state(db, oid)[0] == COMPLETED
            wait_until(completed, 15, 'completion by the sibling')
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        # The frozen run ends too: its outside effect happened twice.
        wait_until(lambda: ended_by(log, 'j1', frozen.pid), 15,
                   'the frozen run to end')
        # It notices it was declared dead and registers again.
        uuid = pyramid_zcasync.instance.read_uuid(str(tmp_path / 'a.txt'))
        wait_until(lambda: 'found itself deactivated' in
                   (tmp_path / 'a.log').read_text(), 15, 'the re-activation')
        wait_until(lambda: registration_info(db, uuid)['activated'], 15,
                   'its registration active again')
        frozen.stop()  # its commit was tried before it could exit
        assert frozen.process.returncode == 0

        db.storage.sync()
        status, result, started = job_state(db, oid)
        assert (status, result, started) == (COMPLETED, sibling.pid,
                                             sibling.pid)
        assert [r[1] for r in jobs.runs(log, 'j1') if r[0] == 'end'] \
            .count(sibling.pid) == 1
    finally:
        db.close()
