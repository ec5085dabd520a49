"""A client stopped between its vote and ``tpc_finish`` holds its
storage's commit lock on the ZEO server: every other client's commit
waits.  What frees it, on the server ``pzcasync-zeo`` runs, and why that
server's configuration sets no ``transaction-timeout``."""
import os
import signal
import subprocess
import sys
import threading

import transaction
import ZEO
import ZODB

from conftest import free_port, wait_for_port
from test_production import zeo  # noqa: F401 (the shipped server)

#: A client that commits up to its vote, says so, and stops itself
#: (SIGSTOP) before ``tpc_finish``: a frozen process holding the lock.
VOTE_THEN_STOP = '''
import os, signal, sys, transaction, ZEO, ZODB
port, storage = int(sys.argv[1]), sys.argv[2]
db = ZODB.DB(ZEO.client(('127.0.0.1', port), storage=storage,
                        wait_timeout=30))
manager = transaction.TransactionManager()
connection = db.open(transaction_manager=manager)
txn = manager.begin()
connection.root()['voter'] = 1
connection.tpc_begin(txn)
connection.commit(txn)
connection.tpc_vote(txn)
print('voted', flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
connection.tpc_finish(txn)
'''


def start_voter(port, storage):
    """The voter's process, once it has voted (it holds the lock)."""
    voter = subprocess.Popen([sys.executable, '-c', VOTE_THEN_STOP,
                              str(port), storage], stdout=subprocess.PIPE)
    line = voter.stdout.readline()
    assert line == b'voted\n', line
    return voter


class Committing:
    """Another client's commit, in a thread: ``done`` once it returned."""

    def __init__(self, port, storage):
        self.db = ZODB.DB(ZEO.client(('127.0.0.1', port), storage=storage,
                                     wait_timeout=30))
        self.done = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._commit, daemon=True)
        self.thread.start()

    def _commit(self):
        manager = transaction.TransactionManager()
        connection = self.db.open(transaction_manager=manager)
        try:
            manager.begin()
            connection.root()['other'] = 1
            manager.commit()
        except Exception as exc:  # the server stopped under it
            self.error = exc
        finally:
            self.done.set()

    def close(self):
        if not self.done.is_set():
            self.db.storage.close()  # fails the commit still waiting
        self.thread.join(30)
        assert self.done.is_set()
        self.db.close()


def end(voter):
    if voter.poll() is None:
        voter.kill()
    voter.wait(10)
    voter.stdout.close()


def test_a_client_killed_in_the_middle_of_a_commit_frees_the_lock(zeo):  # noqa: F811
    config = (zeo.var / 'zeo.conf').read_text()
    assert not [line for line in config.splitlines()
                if line.strip().startswith('transaction-timeout')], config
    voter = start_voter(zeo.port, 'async')
    other = None
    try:
        other = Committing(zeo.port, 'async')
        assert not other.done.wait(1.5)  # the voter holds the lock
        voter.kill()  # as an operator or the OOM killer would
        assert other.done.wait(10), 'the lock was never freed'
        assert other.error is None
    finally:
        end(voter)
        if other is not None:
            other.close()


def test_zeos_transaction_timeout_keeps_the_lock_for_good(tmp_path):
    """Why the shipped configuration has no ``transaction-timeout``: when
    it expires, ZEO (6.2) closes the voter's connection without aborting
    its transaction (its ``connection_lost`` then skips the abort, the
    connection being closed on purpose), and the commit lock stays taken
    even after the voter is killed: every commit waits until the server
    restarts.  Should ZEO fix this, this test fails, and the option may
    come back."""
    port = free_port()
    config = tmp_path / 'zeo.conf'
    config.write_text('<zeo>\n  address 127.0.0.1:%d\n'
                      '  transaction-timeout 1\n</zeo>\n'
                      '<filestorage 1>\n  path %s\n</filestorage>\n'
                      % (port, tmp_path / 'Data.fs'))
    runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
    command = ([runzeo] if os.path.exists(runzeo)
               else [sys.executable, '-m', 'ZEO.runzeo'])
    server = subprocess.Popen(command + ['-C', str(config)],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    voter = other = None
    try:
        wait_for_port(port)
        voter = start_voter(port, '1')
        other = Committing(port, '1')
        assert not other.done.wait(2.5)  # the timeout (1 s) has expired
        voter.kill()
        assert not other.done.wait(3), 'ZEO now frees the lock'
    finally:
        if voter is not None:
            end(voter)
        server.kill()  # (a SIGTERM waits for the lock too)
        server.wait(10)
        if other is not None:
            other.close()
