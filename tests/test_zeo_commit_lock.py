"""A client stopped between its vote and ``tpc_finish`` holds its
storage's commit lock on the ZEO server: every other client's commit
waits.  What frees it on the server ``pzcasync-zeo`` runs (the client
killed, or its ``--transaction-timeout``), and why plain ZEO's timeout
does not."""
import os
import signal
import subprocess
import sys
import threading

import pytest
import transaction
import ZEO
import ZODB

from conftest import free_port, wait_for_port
from test_production import start_zeo, zeo  # noqa: F401 (the shipped server)

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


def timeout_lines(config):
    return [line.strip() for line in config.splitlines()
            if line.strip().startswith('transaction-timeout')]


def test_a_client_killed_in_the_middle_of_a_commit_frees_the_lock(zeo):  # noqa: F811
    assert timeout_lines((zeo.var / 'zeo.conf').read_text()) == [
        'transaction-timeout 60']
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


def test_pzcasync_zeo_aborts_a_commit_held_past_its_timeout(tmp_path):
    """The stopped client is not killed: after ``--transaction-timeout``
    the server aborts its transaction and the others commit; resumed,
    the client learns its commit failed, and nothing of it was stored."""
    server = start_zeo(tmp_path, '--transaction-timeout', '1')
    voter = other = None
    try:
        voter = start_voter(server.port, 'async')
        other = Committing(server.port, 'async')
        assert other.done.wait(15), 'the timeout did not free the lock'
        assert other.error is None
        voter.send_signal(signal.SIGCONT)
        assert voter.wait(30) != 0  # its tpc_finish raised
        db = ZODB.DB(ZEO.client(('127.0.0.1', server.port),
                                storage='async', wait_timeout=30))
        with db.transaction() as connection:
            root = connection.root()
            assert (root.get('other'), root.get('voter')) == (1, None)
        db.close()
    finally:
        if voter is not None:
            end(voter)
        if other is not None:
            other.close()
        server.stop()


def test_config_only_leaves_the_timeout_to_pzcasync_zeo(tmp_path):
    """A configuration written for plain runzeo sets no timeout (there
    it would keep the lock for good, as above)."""
    from pyramid_zcasync.scripts import zeoserver
    var = tmp_path / 'var'
    assert zeoserver.main(['--var', str(var), '--config-only']) == 0
    assert timeout_lines((var / 'zeo.conf').read_text()) == []


def test_a_bad_timeout_is_one_clear_line(tmp_path, capsys):
    from pyramid_zcasync.scripts import zeoserver
    for value in ('-1', 'soon', 'nan', 'inf'):
        with pytest.raises(SystemExit) as exit:
            zeoserver.main(['--var', str(tmp_path / 'var'),
                            '--transaction-timeout', value])
        err = capsys.readouterr().err
        assert exit.value.code == 2
        assert err.splitlines()[-1] == (
            "pzcasync-zeo: error: argument --transaction-timeout: %r: "
            'expected a number of seconds, 0 or more (0: none)' % value)
    assert not (tmp_path / 'var').exists()  # refused before anything


def test_no_timeout_is_served_where_the_server_cannot_abort(
        monkeypatch, capsys):
    """Should ZEO change so that the abort cannot be added, the timeout
    is left out (it would keep the lock for good), and the operator
    told."""
    from pyramid_zcasync.scripts import zeoserver
    options = zeoserver.make_parser().parse_args([])
    assert zeoserver.served_timeout(options) == 60.0
    monkeypatch.setattr(zeoserver, 'abort_on_close', lambda: False)
    assert zeoserver.served_timeout(options) is None
    assert capsys.readouterr().err == (
        'pzcasync-zeo: warning: this ZEO cannot be made to abort a '
        'timed-out commit; serving without --transaction-timeout\n')
