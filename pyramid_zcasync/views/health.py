"""``/health`` for load balancers: 200 up or 503 down, and nothing else.

Public on purpose (a load balancer has no credentials), so the body says
only ``up`` or ``down``.  Up means the database answers and, when this
process should run a dispatcher, that it is RUNNING (not stuck) and that
none of its workers waits for the storage to commit again (its server
away, its disk full).
"""
from __future__ import annotations

import logging
from typing import Any

from .. import dispatcher as dispatcher_module
from .. import transact
from ..config import queue_database
from . import route_name

log = logging.getLogger('pyramid_zcasync.trace')


def database_answers(db: Any) -> bool:
    storage = db.storage
    is_connected = getattr(storage, 'is_connected', None)
    if is_connected is not None and not is_connected():
        return False  # a ZEO client waiting for its server
    try:
        transact.read(db, lambda connection: connection.root()._p_activate())
    except Exception:
        log.exception('health: the database does not answer')
        return False
    return True


def dispatcher_ok(registry: Any) -> bool:
    running = getattr(registry, 'zcasync_dispatcher', None)
    if running is None:
        return True  # this process runs no dispatcher: not its job
    # Polling, and able to commit: a full disk lets small commits (pings)
    # through while the jobs' fail, and those workers wait.
    return (running.status == dispatcher_module.RUNNING
            and not running.storage_trouble)


def health(request: Any) -> Any:
    up = (database_answers(queue_database(request.registry))
          and dispatcher_ok(request.registry))
    response = request.response
    response.status_int = 200 if up else 503
    response.content_type = 'text/plain'
    response.cache_control = 'no-store'
    response.text = 'up\n' if up else 'down\n'
    return response


def includeme(config: Any) -> None:
    config.add_view(health, route_name=route_name('health'),
                    request_method=('GET', 'HEAD'))
