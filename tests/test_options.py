"""The dispatcher's options, its wake-up on commit, and the module layers
it was split along."""
import subprocess
import sys

import pytest
import transaction
import zope.event

from pyramid_zcasync import agent, extensions, process, registry
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.options import DEFAULTS, DispatcherOptions
from pyramid_zcasync.settings import ZcasyncSettings, parse_settings
from pyramid_zcasync.testing import (tear_down_dispatcher, wait_for_result,
                                     wait_until)


def test_each_default_is_defined_once():
    settings = ZcasyncSettings()
    assert DEFAULTS.ping_interval == \
        registry.PING_INTERVAL.total_seconds() == settings.ping_interval
    assert DEFAULTS.ping_death_interval == \
        registry.PING_DEATH_INTERVAL.total_seconds() == \
        settings.ping_death_interval
    assert settings.history_size == agent.HISTORY_SIZE
    assert settings.history_age == agent.HISTORY_AGE.total_seconds()
    assert settings.poll_interval == DEFAULTS.poll_interval
    assert settings.agent_size == DEFAULTS.agent_size


def test_settings_build_the_options():
    options = parse_settings({'zcasync.poll_interval': '0.5',
                              'zcasync.agent_size': '7'}).dispatcher_options()
    assert options == DispatcherOptions(
        poll_interval=0.5, agent_size=7, history_size=agent.HISTORY_SIZE,
        history_age=agent.HISTORY_AGE.total_seconds())


def test_options_are_frozen_and_checked():
    with pytest.raises(AttributeError):
        DEFAULTS.poll_interval = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match='poll_interval must be positive'):
        DispatcherOptions(poll_interval=0)
    assert DEFAULTS.replace(poll_interval=None) is DEFAULTS
    assert DEFAULTS.replace(agent_size=2).agent_size == 2


def test_start_takes_options_and_keywords_over_them(fs_db, tmp_path):
    started = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'uuid.txt'),
        options=DispatcherOptions(poll_interval=0.3, agent_size=2),
        agent_size=4, install_signal_handlers=False)
    try:
        assert started.options.poll_interval == started.poll_interval == 0.3
        assert started.options.agent_size == 4
    finally:
        tear_down_dispatcher(started)


def _wakers(db):
    return [e for e in extensions.of(db)
            if isinstance(e, dispatcher_module.WakeOnPut)]


def test_puts_wake_dispatchers_only_while_one_runs(fs_db, tmp_path):
    subscribers = list(zope.event.subscribers)
    assert _wakers(fs_db) == []
    started = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=60,
        install_signal_handlers=False)
    try:
        assert [w.dispatcher for w in _wakers(fs_db)] == [started]
        # Nothing process-wide: the zope subscribers are as they were.
        assert zope.event.subscribers == subscribers
        connection = fs_db.open()
        polls = started.polls.total
        job = IQueue(connection.root()).put(sum, [1, 2])
        transaction.commit()
        wait_until(lambda: started.polls.total > polls, 5,
                   'a poll woken by the commit')
        assert wait_for_result(job) == 3  # ran long before a 60 s poll
        connection.close()
    finally:
        tear_down_dispatcher(started)
    assert _wakers(fs_db) == []


def test_wake_after_commit_asks_once_per_transaction():
    txn = transaction.TransactionManager().get()
    process.wake_after_commit(txn)
    process.wake_after_commit(txn)
    assert list(txn.getAfterCommitHooks()) == [(process._wake_all, (), {})]


def test_the_periodic_model_loads_no_pyramid_and_no_config():
    code = ('import sys, pyramid_zcasync.periodic, pyramid_zcasync.options; '
            'print(sorted(m for m in ("pyramid", "twisted", '
            '"pyramid_zcasync.config", "pyramid_zcasync.dispatcher") '
            'if m in sys.modules))')
    found = subprocess.run([sys.executable, '-c', code], check=True,
                           capture_output=True, text=True).stdout
    assert found.strip() == '[]'
