"""What ``pzcasync`` and ``pzcasync-worker`` share: loading the app from
an ini file the way pserve does, and turning every way that can fail into
one line an operator can act on (never a traceback from deep inside
PasteDeploy, ZODB or colander).

Both scripts load the *application*, not just its settings, so that the
databases and the pyramid_zcasync settings are exactly those the app's
own ``includeme`` sets up: a deployment has one source of truth, the ini
file, whatever the app adds around ``config.include('pyramid_zcasync')``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, Optional, Sequence

from ..config import DISPATCHER_ENV


class ScriptError(Exception):
    """A failure worth one line on stderr, and an exit status."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.message = one_line(message)
        self.status = status


def one_line(text: str) -> str:
    """Multi-line messages (colander's, configparser's) on one line."""
    out = ''
    for line in (line.strip() for line in str(text).splitlines()):
        if not line:
            continue
        out = line if not out else out + (' ' if out.endswith(':')
                                          else '; ') + line
    return out


def ini_path(config_uri: str) -> str:
    """The file of ``config_uri`` (``FILE.ini`` or ``FILE.ini#section``)."""
    return config_uri.split('#', 1)[0]


def check_ini(config_uri: str) -> None:
    """A missing or unreadable ini file, said before PasteDeploy does."""
    path = ini_path(config_uri)
    if not os.path.exists(path):
        raise ScriptError('%s: no such file' % path, 2)
    if os.path.isdir(path):
        raise ScriptError('%s: is a directory, not an ini file' % path, 2)
    if not os.access(path, os.R_OK):
        raise ScriptError('%s: not readable' % path, 2)


def parse_options(pairs: Sequence[str]) -> Dict[str, str]:
    """``name=value`` arguments: variables of the ini file, as for pserve
    (``%(name)s`` and ``get name = ...`` see them)."""
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition('=')
        if not sep or not name.strip():
            raise ScriptError('%r: expected name=value (a variable for the '
                              'ini file)' % pair, 2)
        options[name.strip()] = value
    return options


def setup_logging(config_uri: str, options: Dict[str, str]) -> None:
    """The ini's ``[loggers]`` etc., as pserve and pshell use them."""
    from pyramid.paster import setup_logging as paster_setup_logging
    try:
        paster_setup_logging(config_uri, global_conf=options)
    except Exception as exc:
        # e.g. a log file in a directory that does not exist
        raise ScriptError('%s: cannot set up logging from it: %s'
                          % (ini_path(config_uri), describe_error(exc)), 2)


@contextlib.contextmanager
def dispatcher_env(value: str) -> Iterator[None]:
    """``ZCASYNC_DISPATCHER`` set while the app loads (config.py reads it
    when the app is created), then as it was, so that processes our jobs
    start do not inherit it."""
    previous = os.environ.get(DISPATCHER_ENV)
    os.environ[DISPATCHER_ENV] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DISPATCHER_ENV, None)
        else:
            os.environ[DISPATCHER_ENV] = previous


def describe_error(exc: BaseException) -> str:
    text = one_line(str(exc))
    name = type(exc).__name__
    return '%s: %s' % (name, text) if text else name


def lock_error_type() -> tuple:
    try:
        from zc.lockfile import LockError
    except ImportError:  # pragma: no cover - ZODB depends on zc.lockfile
        return ()
    return (LockError,)


def bootstrap(config_uri: str, options: Dict[str, str], dispatcher: bool,
              locked_hint: str = '') -> Dict[str, Any]:
    """``pyramid.paster.bootstrap``, the dispatcher forced on or off, with
    errors made :class:`ScriptError` (status 2: the configuration is
    wrong; status 1: something else holds what we need)."""
    from pyramid.exceptions import ConfigurationError
    from pyramid.paster import bootstrap as paster_bootstrap

    from ..instance import DispatcherAlreadyRunning
    path = ini_path(config_uri)
    try:
        with dispatcher_env('1' if dispatcher else '0'):
            env = paster_bootstrap(config_uri, options=options)
    except lock_error_type() as exc:
        raise ScriptError(
            '%s: the database is locked by another process (%s): a '
            'FileStorage can be open in one process only%s'
            % (path, describe_error(exc), locked_hint), 1) from None
    except DispatcherAlreadyRunning as exc:
        raise ScriptError('%s: %s' % (path, describe_error(exc)), 1) from None
    except ConfigurationError as exc:
        raise ScriptError('%s: %s' % (path, one_line(str(exc))), 2) from None
    except Exception as exc:
        raise ScriptError('%s: cannot load the app: %s'
                          % (path, describe_error(exc)), 2) from None
    registry = env['registry']
    if getattr(registry, 'zcasync_settings', None) is None:
        close_app(env)
        raise ScriptError('%s: the app does not include pyramid_zcasync '
                          "(config.include('pyramid_zcasync') in its "
                          'factory)' % path, 2)
    return env


def close_app(env: Optional[dict]) -> None:
    """End the bootstrap request, stop the dispatcher, close the
    databases: a FileStorage closed cleanly does not rebuild its index at
    the next start."""
    if env is None:
        return
    from ..config import close_databases
    try:
        env['closer']()
    finally:
        close_databases(env['registry'])
