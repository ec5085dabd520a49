"""The ``zcasync.*`` settings, read and checked in one place.

Everything is checked at include time so that a bad ini value stops
start-up with one message naming the setting, its value and what was
expected, instead of a traceback from the dispatcher thread later on.
Values may be strings (from an ini file) or already typed (from Python);
a blank value means "use the default".

``zcasync.queues`` lists names separated by whitespace, commas or newlines.
Quotes around a name are dropped, which is how the default queue, named by
the empty string, is written: ``zcasync.queues = '' reports`` installs it
and ``reports``.  Any other token, ``default`` included, is taken literally.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from typing import Any, Mapping, Optional

import colander
from pyramid.exceptions import ConfigurationError
from pyramid.settings import falsey, truthy

from .agent import HISTORY_AGE, HISTORY_SIZE
from .options import DEFAULTS as OPTIONS
from .options import DispatcherOptions

#: Prefix of every setting this package reads.
PREFIX = 'zcasync.'
#: Environment variable naming the UUID file when no setting does; zc.async's.
UUID_ENV = 'ZC_ASYNC_UUID'
#: The UUID file, relative to the ini file's directory, when nothing names one.
DEFAULT_UUID_FILE = os.path.join('var', 'uuid.txt')
#: Name of the default queue, the one ``request.async_queue`` gives.
DEFAULT_QUEUE = ''


@dataclasses.dataclass(frozen=True)
class ZcasyncSettings:
    """Checked settings, frozen so no part of the app changes them later.
    The defaults are those of a bare ``config.include('pyramid_zcasync')``."""

    #: Start the dispatcher thread at app start-up, in serving processes
    #: only unless asked (programs.py: scripts and test runs get none).
    dispatcher: bool = False
    #: pyramid_zodbconn database holding the queues; None: the main one.
    database: Optional[str] = None
    #: Absolute path of this process's UUID file; None: the caller decides.
    uuid_file: Optional[str] = None
    #: Seconds between polls of a dispatcher with nothing to wake it.
    poll_interval: float = OPTIONS.poll_interval
    #: Names of the queues to install; ``''`` is the default queue.
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    #: Concurrent jobs of the default agent ``main``.
    agent_size: int = OPTIONS.agent_size
    #: Seconds between a dispatcher's pings of its registration.
    ping_interval: float = OPTIONS.ping_interval
    #: Seconds of silence after which siblings declare a dispatcher dead.
    ping_death_interval: float = OPTIONS.ping_death_interval
    #: Permission protecting the admin views.
    admin_permission: str = 'zcasync.admin'
    #: Where the admin views live; no trailing slash.
    route_prefix: str = '/_async'
    #: Completed jobs each agent keeps for the reports (older ones are
    #: dropped, and packing the database then frees them).
    history_size: int = HISTORY_SIZE
    #: Seconds a completed job stays in its agent's history at most.
    history_age: float = HISTORY_AGE.total_seconds()
    #: The application's public URL, for URLs generated inside jobs
    #: (``pyramid_zcasync.local.get_request().route_url``); None: localhost.
    app_url: Optional[str] = None
    #: Dotted names of extensions (see extensions.py) hooked into the
    #: jobs of the queues' database, in order.
    extensions: tuple[str, ...] = ()
    #: Run each job in the putting thread as soon as its put commits
    #: (eager.py), for the app's unit tests; no dispatcher is started.
    eager: bool = False

    def dispatcher_options(self) -> DispatcherOptions:
        """What the dispatcher started with the app is told."""
        return DispatcherOptions(
            poll_interval=self.poll_interval, agent_size=self.agent_size,
            ping_interval=self.ping_interval,
            ping_death_interval=self.ping_death_interval,
            history_size=self.history_size, history_age=self.history_age)


_DEFAULTS = ZcasyncSettings()


class _Type(colander.SchemaType):
    """Unset settings go on to ``missing``; ``check`` sees only given ones."""

    def deserialize(self, node: colander.SchemaNode, value: Any) -> Any:
        return value if value is colander.null else self.check(node, value)


class _Bool(_Type):
    """Pyramid's ``asbool`` words, but a typo is refused, not read as false."""

    def check(self, node: colander.SchemaNode, value: Any) -> bool:
        word = str(value).strip().lower()
        if word in truthy or word in falsey:
            return word in truthy
        raise colander.Invalid(node, 'not a boolean')


class _Positive(_Type):
    """Every number here counts something, so 0 is as wrong as -1; refuses
    what Python would coerce quietly: ``True``, ``nan``, 2.5 jobs."""

    def __init__(self, whole: bool = False) -> None:
        self.whole = whole

    def check(self, node: colander.SchemaNode, value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise TypeError('a boolean is not a number')
            number = float(value)
        except (TypeError, ValueError):
            raise colander.Invalid(node, 'not a number') from None
        if not math.isfinite(number):
            raise colander.Invalid(node, 'not a finite number')
        if self.whole and number != int(number):
            raise colander.Invalid(node, 'not a whole number')
        if number <= 0:
            raise colander.Invalid(node, 'not greater than 0')
        return int(number) if self.whole else number


class _Text(_Type):
    """colander.String would turn ``5`` or ``['x']`` into text; refuse them."""

    def check(self, node: colander.SchemaNode, value: Any) -> str:
        if isinstance(value, str):
            return value.strip()
        raise colander.Invalid(node, 'not a string')


class _Names(_Type):
    """Queue names from one ini line, or a list of str from Python."""

    def check(self, node: colander.SchemaNode, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [token.strip('\'"') for token in re.split(r'[\s,]+', value)
                     if token]
        elif not isinstance(value, (list, tuple, set, frozenset)) or not all(
                isinstance(name, str) for name in value):
            raise colander.Invalid(node, 'not a list of names')
        return tuple(dict.fromkeys(value)) or (DEFAULT_QUEUE,)


class _DottedNames(_Type):
    """Dotted names from one ini line, or a list of them (or of the
    objects themselves) from Python; resolved by config.py, which names
    the one that does not import."""

    def check(self, node: colander.SchemaNode, value: Any) -> tuple:
        if isinstance(value, str):
            return tuple(value.split())
        if not isinstance(value, (list, tuple)):
            raise colander.Invalid(node, 'not a list of dotted names')
        return tuple(value)


class _Path(_Type):
    """A path that never depends on the cwd of whoever started the process."""

    def check(self, node: colander.SchemaNode, value: Any) -> str:
        if not isinstance(value, (str, os.PathLike)):
            raise colander.Invalid(node, 'not a path')
        path = os.path.expanduser(os.fsdecode(value).strip())
        ini_dir = node.bindings.get('ini_dir')
        if not os.path.isabs(path) and ini_dir is None:
            raise colander.Invalid(node, 'relative, and no ini file directory'
                                   ' was given to resolve it against')
        return os.path.normpath(os.path.join(ini_dir or '', path))


#: A literal URL path: segments of RFC 3986's unreserved characters, so
#: nothing Pyramid's route patterns read as a placeholder (``{x}``,
#: ``*x``, ``:x``) and no ``.`` or ``..`` segment.
_LITERAL_PATH = re.compile(r'(/(?!\.\.?(/|$))[A-Za-z0-9._~-]+)+')


def _route_prefix(node: colander.SchemaNode, value: str) -> None:
    """A placeholder would make the admin routes match, and hide, the
    app's own URLs: only a literal path is accepted."""
    if not _LITERAL_PATH.fullmatch(value):
        raise colander.Invalid(
            node, 'not a URL path below the site root made of literal '
            "segments (letters, digits and '-._~'), e.g. /_async")


def _app_url(node: colander.SchemaNode, value: str) -> None:
    if not re.fullmatch(r'https?://[^/\s]+(/\S*)?', value):
        raise colander.Invalid(node, 'not an absolute http(s) URL')


def _node(typ: colander.SchemaType, name: str, description: str,
          **kw: Any) -> colander.SchemaNode:
    return colander.SchemaNode(typ, missing=getattr(_DEFAULTS, name),
                               description=description, **kw)


class SettingsSchema(colander.MappingSchema):
    """The settings without their prefix.  Each description says what is
    expected, since it is quoted in the error message."""

    dispatcher = _node(_Bool(), 'dispatcher',
                       'true or false (also yes/no, on/off, 1/0)')
    database = _node(_Text(), 'database', 'a pyramid_zodbconn database name'
                     ' (default: the main one)')
    uuid_file = _node(_Path(), 'uuid_file',
                      'an absolute path, or one relative to the ini file')
    poll_interval = _node(_Positive(), 'poll_interval',
                          'seconds, a number greater than 0')
    queues = _node(_Names(), 'queues', "queue names separated by spaces,"
                   " commas or newlines; '' is the default queue")
    agent_size = _node(_Positive(whole=True), 'agent_size',
                       'a whole number, at least 1')
    ping_interval = _node(_Positive(), 'ping_interval',
                          'seconds, a number greater than 0')
    ping_death_interval = _node(_Positive(), 'ping_death_interval',
                                'seconds, more than %sping_interval' % PREFIX)
    admin_permission = _node(_Text(), 'admin_permission', 'a permission name')
    route_prefix = _node(
        _Text(), 'route_prefix', "a URL path starting with '/'",
        preparer=lambda v: v.rstrip('/') if isinstance(v, str) else v,
        validator=_route_prefix)
    history_size = _node(_Positive(whole=True), 'history_size',
                         'a whole number of jobs, at least 1')
    history_age = _node(_Positive(), 'history_age',
                        'seconds, a number greater than 0')
    app_url = _node(
        _Text(), 'app_url', 'the http(s) URL the application is served at',
        preparer=lambda v: v.rstrip('/') if isinstance(v, str) else v,
        validator=_app_url)
    extensions = _node(
        _DottedNames(), 'extensions', 'dotted names of '
        'pyramid_zcasync.extensions.Extension classes or factories, '
        'separated by spaces or newlines')
    eager = _node(_Bool(), 'eager',
                  'true or false (also yes/no, on/off, 1/0)')

    def validator(self, node: colander.SchemaNode, appstruct: dict) -> None:
        # A dispatcher declared dead between two of its own pings would
        # have its jobs recovered while it still runs them.
        ping = appstruct['ping_interval']
        if appstruct['ping_death_interval'] <= ping:
            error = colander.Invalid(node)
            error['ping_death_interval'] = (
                'not greater than %sping_interval (%g)' % (PREFIX, ping))
            raise error


def parse_settings(settings: Mapping[str, Any],
                   ini_dir: Optional[str] = None) -> ZcasyncSettings:
    """Check every ``zcasync.*`` setting at once, so that one start-up
    attempt reports every mistake, in a ``ConfigurationError``.

    ``ini_dir`` is the ini file's directory (paste's ``here``): relative
    paths are read against it, as the cwd of ``pserve`` is an accident.
    The UUID file is not read here: that is the dispatcher's start-up's job.
    """
    schema = SettingsSchema()
    ini_dir = None if ini_dir is None else os.path.abspath(ini_dir)
    known = [child.name for child in schema.children]
    errors = _unknown(settings, known)
    given = {name: value for name in known  # blank or None: the default
             if (value := settings.get(PREFIX + name)) is not None
             and not (isinstance(value, str) and not value.strip())}
    try:
        values = schema.bind(ini_dir=ini_dir).deserialize(given)
    except colander.Invalid as invalid:
        reasons = invalid.asdict()
        errors[:0] = [_describe(node, settings, reasons[node.name])
                      for node in schema.children if node.name in reasons]
    if errors:
        raise ConfigurationError(
            'Bad pyramid_zcasync settings:\n  ' + '\n  '.join(errors))
    if values['uuid_file'] is None:
        values['uuid_file'] = _default_uuid_file(ini_dir)
    return ZcasyncSettings(**values)


def _describe(node: colander.SchemaNode, settings: Mapping[str, Any],
              reason: str) -> str:
    key = PREFIX + node.name
    shown = ('%s = %r' % (key, settings[key]) if key in settings
             else '%s (not set)' % key)
    default = ('' if node.missing in (None, (DEFAULT_QUEUE,))
               else ' (default %s)' % node.missing)
    return '%s: %s; expected %s%s' % (shown, reason, node.description, default)


def _unknown(settings: Mapping[str, Any], known: list[str]) -> list[str]:
    """Unknown keys are almost always typos of known ones, silently unused."""
    known = [PREFIX + name for name in known]
    errors = []
    for key in sorted(k for k in settings
                      if isinstance(k, str) and k.startswith(PREFIX)
                      and k not in known):
        close = difflib.get_close_matches(key, known, n=1)
        hint = '; did you mean %s?' % close[0] if close else ''
        errors.append(f'{key} = {settings[key]!r}: unknown setting{hint}')
    if errors:
        errors.append('known settings: ' + ', '.join(known))
    return errors


def _default_uuid_file(ini_dir: Optional[str]) -> Optional[str]:
    from_env = os.environ.get(UUID_ENV, '').strip()
    if from_env:
        # Set in a shell, so relative to that shell's directory: pin it now.
        return os.path.abspath(os.path.expanduser(from_env))
    return os.path.join(ini_dir, DEFAULT_UUID_FILE) if ini_dir else None
