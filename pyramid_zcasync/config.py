"""``config.include('pyramid_zcasync')``: settings, queues, request API,
and the dispatcher started with the app.

Modelled on pyramid_zodbconn: settings are read once here, the databases
are pyramid_zodbconn's, and the queues are reached through the request's
own connection, so a ``put`` commits or aborts with the request.
"""
from __future__ import annotations

import atexit
import logging
import os
from typing import Any, Optional

from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError
from pyramid_zodbconn import get_connection

from . import dispatcher as dispatcher_module
from . import eager, extensions, wakeup
from .context import PyramidContext
from .install import install_queues
from .instance import ENV_VAR, DispatcherAlreadyRunning, UUIDFileError
from .interfaces import KEY
from .programs import (DISPATCHER_ENV, NO_DISPATCHER_PROGRAMS,  # noqa: F401
                       SERVING_PROGRAMS, already_running_help, decide)
from .settings import DEFAULT_QUEUE, ZcasyncSettings, parse_settings
from .zeoclient import forget_prefetched_oids_on_reconnect

log = logging.getLogger('pyramid_zcasync.events')


def includeme(config: Any) -> None:
    settings = parse_settings(config.get_settings(),
                              ini_dir=config.get_settings().get('here'))
    # Before any database opens: a bad name must not leave one open.
    found = _resolve_extensions(config, settings)
    config.include('pyramid_tm')
    config.include('pyramid_retry')
    config.include('pyramid_zodbconn')
    registry = config.registry
    main_db = _main_database(registry)
    for db in registry._zodb_databases.values():
        forget_prefetched_oids_on_reconnect(db.storage)
    _check_database_name(settings, registry)
    names = settings.queues
    if DEFAULT_QUEUE not in names:
        names = (DEFAULT_QUEUE,) + tuple(names)
    install_queues(main_db, names, database_name=settings.database)
    registry.zcasync_settings = settings
    registry.zcasync_dispatcher = None
    _add_extensions(config, settings, found)
    config.add_request_method(async_queues, 'async_queues', reify=True)
    config.add_request_method(async_queue, 'async_queue', reify=True)
    config.include('pyramid_zcasync.periodic_config')
    config.add_subscriber(_start_with_app, ApplicationCreated)
    config.include('pyramid_zcasync.views')


def _resolve_extensions(config: Any, settings: ZcasyncSettings
                        ) -> list:
    try:
        return extensions.from_setting(settings.extensions,
                                       config.maybe_dotted,
                                       config.get_settings())
    except ValueError as exc:
        raise ConfigurationError(
            'Bad pyramid_zcasync settings:\n  %s' % exc) from None


def _add_extensions(config: Any, settings: ZcasyncSettings,
                    found: list) -> None:
    """The app's context inside its jobs, then the setting's extensions,
    hooked into the queues' database (so puts from web-only processes
    see them too, not only the dispatcher's runs); eager runs last, so
    that the others' ``after_put`` see the put before the job runs."""
    db = queue_database(config.registry)
    extensions.add(db, PyramidContext(config.registry, settings.app_url))
    for extension in found:
        extensions.add(db, extension)
    # Web processes without a dispatcher too: their puts must wake the
    # dispatchers of other processes (PostgreSQL NOTIFY; nothing elsewhere).
    wakeup.announce_puts(db)
    if settings.eager:
        extensions.add(db, eager.EagerRun(db))


def async_queues(request: Any) -> Any:
    """The Queues mapping, in the request's connection and transaction."""
    settings: ZcasyncSettings = request.registry.zcasync_settings
    connection = get_connection(request, settings.database)
    return connection.root()[KEY]


def async_queue(request: Any) -> Any:
    """The default queue ``''``: ``request.async_queue.put(f, *args)``."""
    return request.async_queues[DEFAULT_QUEUE]


def _main_database(registry: Any) -> Any:
    databases = getattr(registry, '_zodb_databases', None) or {}
    if '' not in databases:
        raise ConfigurationError(
            'pyramid_zcasync needs a ZODB database: set zodbconn.uri (e.g. '
            'file://%(here)s/var/Data.fs) in the settings')
    return databases['']


def _check_database_name(settings: ZcasyncSettings, registry: Any) -> None:
    name = settings.database
    known = sorted(n for n in registry._zodb_databases if n)
    if name is not None and name not in registry._zodb_databases:
        raise ConfigurationError(
            'Bad pyramid_zcasync settings:\n  zcasync.database = %r: no such '
            'pyramid_zodbconn database; expected one of %s (named by '
            'zodbconn.uri.NAME settings)' % (name, known or 'none'))


def queue_database(registry: Any) -> Any:
    """The database whose root holds the queues."""
    databases = registry._zodb_databases
    return databases[registry.zcasync_settings.database or '']


def dispatcher_wanted(settings: ZcasyncSettings,
                      argv: Optional[list] = None) -> bool:
    """Whether this process starts a dispatcher: see :mod:`.programs`."""
    return decide(settings.dispatcher, argv)[0]


def _start_with_app(event: Any) -> None:
    registry = event.app.registry
    settings: ZcasyncSettings = registry.zcasync_settings
    atexit.register(close_databases, registry)
    if settings.eager:
        # Jobs run at their puts; a dispatcher would race them for each.
        if settings.dispatcher:
            log.info('no dispatcher in this process: zcasync.eager is '
                     'true (jobs run when their puts commit)')
        return
    wanted, why = decide(settings.dispatcher)
    if not wanted:
        if settings.dispatcher and os.environ.get(DISPATCHER_ENV) != '0':
            # the setting asked, the program rule said no: say why
            log.info('no dispatcher in this process: %s', why)
        return
    if settings.uuid_file is None and not os.environ.get(ENV_VAR):
        raise ConfigurationError(
            'Bad pyramid_zcasync settings:\n  zcasync.uuid_file (not set): '
            'the dispatcher needs a UUID file; set zcasync.uuid_file = '
            '%%(here)s/var/uuid.txt in the ini file, or %s' % ENV_VAR)
    try:
        registry.zcasync_dispatcher = dispatcher_module.start(
            queue_database(registry), uuid_file=settings.uuid_file,
            options=settings.dispatcher_options())
    except DispatcherAlreadyRunning as exc:
        raise DispatcherAlreadyRunning(
            already_running_help(str(exc), why)) from None
    except UUIDFileError as exc:
        raise ConfigurationError(
            'Bad pyramid_zcasync settings:\n  zcasync.uuid_file = %r: %s'
            % (settings.uuid_file or os.environ.get(ENV_VAR), exc)) from None


def close_databases(registry: Any) -> None:
    """Stop this app's dispatcher, then close pyramid_zodbconn's databases
    (it never does; an unclosed FileStorage rebuilds its index next
    start)."""
    running = getattr(registry, 'zcasync_dispatcher', None)
    if running is not None:
        running.stop()
    for db in list(getattr(registry, '_zodb_databases', {}).values()):
        try:
            db.close()
        except Exception:  # closing at exit: say so, carry on
            log.exception('closing database %r failed', db.database_name)
