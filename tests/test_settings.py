"""The zcasync.* settings: what parses, and how a bad value is reported."""
import dataclasses
import os

import pytest
from pyramid.exceptions import ConfigurationError

from pyramid_zcasync.settings import (
    UUID_ENV, SettingsSchema, ZcasyncSettings, parse_settings)

KNOWN = [child.name for child in SettingsSchema().children]


@pytest.fixture(autouse=True)
def no_uuid_env(monkeypatch):
    """The developer's own ZC_ASYNC_UUID must not leak into the results."""
    monkeypatch.delenv(UUID_ENV, raising=False)


def test_defaults():
    assert parse_settings({}) == ZcasyncSettings()
    assert parse_settings({}) == ZcasyncSettings(
        dispatcher=False, database=None, uuid_file=None, poll_interval=5.0,
        queues=('',), agent_size=3, ping_interval=30.0,
        ping_death_interval=60.0, admin_permission='zcasync.admin',
        route_prefix='/_async')


def test_the_dataclass_has_the_settings_names_and_is_frozen():
    fields = [field.name for field in dataclasses.fields(ZcasyncSettings)]
    assert fields == KNOWN
    with pytest.raises(dataclasses.FrozenInstanceError):
        ZcasyncSettings().poll_interval = 1


GOOD = [
    # (setting without prefix, value as given, parsed value)
    ('dispatcher', 'true', True),
    ('dispatcher', 'false', False),
    ('dispatcher', 'yes', True),
    ('dispatcher', 'no', False),
    ('dispatcher', 'on', True),
    ('dispatcher', 'off', False),
    ('dispatcher', '1', True),
    ('dispatcher', '0', False),
    ('dispatcher', ' TRUE ', True),
    ('dispatcher', True, True),
    ('dispatcher', False, False),
    ('dispatcher', '', False),
    ('database', 'async', 'async'),
    ('database', ' async ', 'async'),
    ('database', '', None),
    ('database', None, None),
    ('poll_interval', '2.5', 2.5),
    ('poll_interval', '0.1', 0.1),
    ('poll_interval', 7, 7.0),
    ('poll_interval', '  ', 5.0),
    ('queues', '', ('',)),
    ('queues', "''", ('',)),
    ('queues', '""', ('',)),
    ('queues', "'' reports", ('', 'reports')),
    ('queues', "'', reports,mail", ('', 'reports', 'mail')),
    ('queues', "\n''\nreports\n  mail\n", ('', 'reports', 'mail')),
    ('queues', 'reports', ('reports',)),
    ('queues', 'default', ('default',)),
    ('queues', 'a b a', ('a', 'b')),
    ('queues', ['', 'reports'], ('', 'reports')),
    ('queues', (), ('',)),
    ('agent_size', '5', 5),
    ('agent_size', '1', 1),
    ('agent_size', 4, 4),
    ('agent_size', '3.0', 3),
    ('ping_interval', '10', 10.0),
    ('ping_interval', 59.5, 59.5),
    ('ping_death_interval', '120', 120.0),
    ('admin_permission', 'edit', 'edit'),
    ('admin_permission', '', 'zcasync.admin'),
    ('route_prefix', '/admin/async', '/admin/async'),
    ('route_prefix', '/admin/async/', '/admin/async'),
    ('route_prefix', ' /jobs ', '/jobs'),
    ('route_prefix', '', '/_async'),
]


@pytest.mark.parametrize('name, value, expected', GOOD)
def test_good_value(name, value, expected):
    parsed = parse_settings({'zcasync.' + name: value})
    assert getattr(parsed, name) == expected
    assert type(getattr(parsed, name)) is type(expected)


def test_other_settings_are_left_alone():
    parsed = parse_settings({'zodbconn.uri': 'memory://', 'zcasync': 'x',
                             'pyramid.includes': 'pyramid_tm', 1: 2})
    assert parsed == ZcasyncSettings()


def test_ping_death_interval_just_above_ping_interval():
    parsed = parse_settings({'zcasync.ping_interval': '10',
                             'zcasync.ping_death_interval': '10.5'})
    assert (parsed.ping_interval, parsed.ping_death_interval) == (10, 10.5)


# uuid_file: (setting, env ZC_ASYNC_UUID, ini_dir, expected); 'TMP' stands
# for a temporary directory, which is also the cwd.
UUID_FILES = [
    ('/srv/app/uuid.txt', None, None, '/srv/app/uuid.txt'),
    ('/srv/app/uuid.txt', None, 'TMP/etc', '/srv/app/uuid.txt'),
    ('var/id.txt', None, 'TMP/etc', 'TMP/etc/var/id.txt'),
    ('../var/id.txt', None, 'TMP/etc', 'TMP/var/id.txt'),
    ('var/id.txt', '/env/uuid.txt', 'TMP/etc', 'TMP/etc/var/id.txt'),
    (None, '/env/uuid.txt', 'TMP/etc', '/env/uuid.txt'),
    (None, 'env-uuid.txt', None, 'TMP/env-uuid.txt'),
    (None, '  ', 'TMP/etc', 'TMP/etc/var/uuid.txt'),
    (None, None, 'TMP/etc', 'TMP/etc/var/uuid.txt'),
    ('', None, 'TMP/etc', 'TMP/etc/var/uuid.txt'),
    (None, None, None, None),
]


@pytest.mark.parametrize('setting, env, ini_dir, expected', UUID_FILES)
def test_uuid_file(tmp_path, monkeypatch, setting, env, ini_dir, expected):
    def tmp(path):
        return path and path.replace('TMP', str(tmp_path))

    monkeypatch.chdir(tmp_path)
    if env is not None:
        monkeypatch.setenv(UUID_ENV, env)
    settings = {} if setting is None else {'zcasync.uuid_file': setting}
    parsed = parse_settings(settings, ini_dir=tmp(ini_dir))
    assert parsed.uuid_file == tmp(expected)
    assert not os.listdir(tmp_path)  # neither read nor created here


def test_uuid_file_relative_ini_dir_is_pinned_to_the_cwd_of_parsing(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parsed = parse_settings({'zcasync.uuid_file': 'id.txt'}, ini_dir='etc')
    assert parsed.uuid_file == str(tmp_path / 'etc' / 'id.txt')


def test_uuid_file_home_is_expanded(monkeypatch):
    monkeypatch.setenv('HOME', '/home/someone')
    parsed = parse_settings({'zcasync.uuid_file': '~/uuid.txt'})
    assert parsed.uuid_file == '/home/someone/uuid.txt'


BAD = [
    # (setting without prefix, bad value, words of the reason)
    ('poll_interval', '-1', 'not greater than 0'),
    ('poll_interval', '0', 'not greater than 0'),
    ('poll_interval', 0, 'not greater than 0'),
    ('ping_interval', '-30', 'not greater than 0'),
    ('ping_death_interval', '0', 'not greater than 0'),
    ('poll_interval', 'five', 'not a number'),
    ('poll_interval', '5s', 'not a number'),
    ('poll_interval', 'nan', 'not a finite number'),
    ('ping_interval', 'inf', 'not a finite number'),
    ('poll_interval', True, 'not a number'),
    ('agent_size', '2.5', 'not a whole number'),
    ('agent_size', 2.5, 'not a whole number'),
    ('agent_size', 'three', 'not a number'),
    ('agent_size', '0', 'not greater than 0'),
    ('agent_size', -1, 'not greater than 0'),
    ('ping_death_interval', '30', 'not greater than zcasync.ping_interval'),
    ('ping_death_interval', '29', 'not greater than zcasync.ping_interval'),
    ('uuid_file', 'var/uuid.txt', 'relative'),
    ('uuid_file', 7, 'not a path'),
    ('route_prefix', '_async', "starting with '/'"),
    ('route_prefix', '/', 'below the site root'),
    ('route_prefix', '/my jobs', 'not a URL path'),
    ('route_prefix', '//jobs', 'not a URL path'),
    ('dispatcher', 'ture', 'not a boolean'),
    ('dispatcher', 2, 'not a boolean'),
    ('queues', 5, 'not a list of names'),
    ('queues', ['', 1], 'not a list of names'),
    ('database', 5, 'not a string'),
    ('admin_permission', ['edit'], 'not a string'),
]


def _message(settings, **kw):
    with pytest.raises(ConfigurationError) as caught:
        parse_settings(settings, **kw)
    return str(caught.value)


@pytest.mark.parametrize('name, value, reason', BAD)
def test_bad_value_names_setting_and_value(name, value, reason):
    message = _message({'zcasync.' + name: value})
    assert f'zcasync.{name} = {value!r}: ' in message
    assert reason in message
    assert len(message.splitlines()) == 2  # the heading and this setting


def test_death_interval_not_set_but_below_ping_interval():
    message = _message({'zcasync.ping_interval': '90'})
    assert 'zcasync.ping_death_interval (not set): ' in message
    assert 'not greater than zcasync.ping_interval (90)' in message


@pytest.mark.parametrize('typo', ['zcasync.pol_interval',
                                  'zcasync.Dispatcher', 'zcasync.queue'])
def test_unknown_setting_is_named_with_the_known_ones(typo):
    message = _message({typo: '5', 'zcasync.agent_size': '2'})
    assert f"{typo} = '5': unknown setting; did you mean zcasync." in message
    known = message.split('known settings: ')[1]
    assert known.split(', ') == ['zcasync.' + name for name in KNOWN]


def test_every_bad_setting_is_in_one_message():
    message = _message({'zcasync.poll_interval': '-1',
                        'zcasync.agent_size': 'x',
                        'zcasync.route_prefix': 'jobs',
                        'zcasync.uuid_fil': '/tmp/u'})
    assert message.startswith('Bad pyramid_zcasync settings:\n')
    for words in ["zcasync.poll_interval = '-1'", "zcasync.agent_size = 'x'",
                  "zcasync.route_prefix = 'jobs'", "zcasync.uuid_fil = "]:
        assert words in message


@pytest.mark.parametrize('value, expected', [
    ('true', True), ('off', False), (True, True), ('', False)])
def test_eager_is_a_boolean(value, expected):
    assert parse_settings({'zcasync.eager': value}).eager is expected
    assert ZcasyncSettings().eager is False


@pytest.mark.parametrize('value', ['eagerly', 2])
def test_bad_eager_value_is_named(value):
    message = _message({'zcasync.eager': value})
    assert f'zcasync.eager = {value!r}: not a boolean; expected true or ' \
        'false' in message
    assert len(message.splitlines()) == 2
