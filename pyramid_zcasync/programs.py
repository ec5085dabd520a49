"""Which processes start a dispatcher with the app.

Pyramid calls the app factory from many programs: the servers, but also
pshell & co, every script written with ``pyramid.paster.bootstrap(ini)``
and every test suite that builds the app from its ini file.  A dispatcher
in a script or a test run is a surprise: it runs jobs the script never
meant to run, and beside a running pserve on the same ini it dies on the
shared UUID file.  So ``zcasync.dispatcher = true`` means "in the
processes that serve the app": the programs of :data:`SERVING_PROGRAMS`
(``pzcasync-worker`` forces one in any case).  Any other program gets one
only when asked, through the environment variable :data:`DISPATCHER_ENV`.

The program is told by name because nothing else tells them apart: a
test suite's ``main({}, **get_appsettings(ini))`` and a server's
factory call see the same settings.  A server this list does not know
(a WSGI script of your own) sets ``ZCASYNC_DISPATCHER=1``; a line in the
log says so when the setting asked for a dispatcher and none started.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence, Tuple

from pyramid.exceptions import ConfigurationError

#: Programs that serve the app (or exist to run its jobs): there
#: ``zcasync.dispatcher = true`` starts a dispatcher.  Matched against the
#: script's name, or the module's for ``python -m`` (its full dotted name
#: or its last part).
SERVING_PROGRAMS = frozenset([
    'pserve', 'gunicorn', 'uwsgi', 'waitress-serve', 'waitress', 'mod_wsgi',
    'pzcasync-worker', 'pyramid_zcasync.demo'])
#: Console scripts of Pyramid that load the app without serving it.
NO_DISPATCHER_PROGRAMS = frozenset(
    ['pshell', 'proutes', 'pviews', 'prequest', 'ptweens', 'pdistreport'])
#: Environment override: ``1`` starts a dispatcher whatever the setting
#: and the program, ``0`` never, ``setting`` follows
#: ``zcasync.dispatcher`` in any program but pshell & co (a test suite
#: whose apps say in their settings whether they want one).
DISPATCHER_ENV = 'ZCASYNC_DISPATCHER'
ENV_VALUES = ('1', '0', 'setting')


def program_names(argv: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """The names this process goes by: the script's (``pserve`` for
    ``/venv/bin/pserve`` or ``pserve.py``); for ``python -m pkg.mod``
    also ``pkg.mod`` and ``mod``."""
    names = []
    if argv is None:
        argv = sys.argv
        spec = getattr(sys.modules.get('__main__'), '__spec__', None)
        if spec is not None and spec.name:
            dotted = spec.name
            if dotted.endswith('.__main__'):
                dotted = dotted[:-len('.__main__')]
            names += [dotted, dotted.rsplit('.', 1)[-1]]
    script = os.path.splitext(os.path.basename((list(argv) or [''])[0]))[0]
    return tuple(names) + (script,)


def decide(setting: bool, argv: Optional[Sequence[str]] = None
           ) -> Tuple[bool, str]:
    """(start a dispatcher?, why), the why being worth a log line or an
    error message."""
    forced = os.environ.get(DISPATCHER_ENV, '').strip()
    if forced and forced not in ENV_VALUES:
        raise ConfigurationError(
            'Bad pyramid_zcasync environment:\n  %s = %r: expected 1 (start '
            'a dispatcher), 0 (never) or setting (follow '
            'zcasync.dispatcher in any program)' % (DISPATCHER_ENV, forced))
    if forced in ('0', '1'):
        return forced == '1', '%s=%s' % (DISPATCHER_ENV, forced)
    if not setting:
        return False, 'zcasync.dispatcher is false'
    names = program_names(argv)
    program = names[0] if names else ''
    if NO_DISPATCHER_PROGRAMS.intersection(names):
        return False, '%r never starts one' % program
    if forced == 'setting':
        return True, ('zcasync.dispatcher is true and %s=setting'
                      % DISPATCHER_ENV)
    if SERVING_PROGRAMS.intersection(names):
        return True, ('zcasync.dispatcher is true and %r serves the app'
                      % program)
    return False, ('zcasync.dispatcher is true, but %r is not a program '
                   'that serves the app (%s): scripts and test suites '
                   'start a dispatcher only with %s=1'
                   % (program, ', '.join(sorted(SERVING_PROGRAMS)),
                      DISPATCHER_ENV))


def already_running_help(message: str, why: str) -> str:
    """DispatcherAlreadyRunning's message, plus why this process started
    one and what to do when it should not have."""
    return ('%s.  This process started one because %s; a script or a test '
            'run that should not run jobs sets %s=0 (scripts and test suites '
            'get none unless asked), and a second serving process needs '
            'its own zcasync.uuid_file' % (message.rstrip('.'), why,
                                           DISPATCHER_ENV))
