"""A producer: a Pyramid app on waitress whose requests enqueue jobs, with
no dispatcher of its own, for the producer/consumer test.

    python producer_app.py ZODB_URI HTTP_PORT

``POST /enqueue`` with ``key=K`` puts ``jobs.append_with_pid(done, pids,
K)`` and, in the same transaction, records ``K`` in the app's own data
(``root['posted']``).  With ``hot=1`` it also bumps ``root['hot']['n']``,
a plain PersistentMapping every such request writes: concurrent requests
conflict there, and pyramid_retry runs them again.  The response is JSON
and says in ``X-Retry-Attempt`` which attempt (0 = first) succeeded.
Prints ``serving`` once the app is built; stop it with SIGTERM.
"""
import signal
import sys

import BTrees.OOBTree
import persistent.mapping
import transaction
from pyramid.config import Configurator
from pyramid_zodbconn import get_connection

import jobs


def ensure_data(registry):
    db = registry._zodb_databases['']
    connection = db.open()
    try:
        with transaction.manager:
            root = connection.root()
            for name in ('posted', 'done', 'pids'):
                if name not in root:
                    root[name] = BTrees.OOBTree.OOBTree()
            if 'hot' not in root:
                root['hot'] = persistent.mapping.PersistentMapping(n=0)
    finally:
        connection.close()


def enqueue(request):
    key = request.POST['key']
    root = get_connection(request).root()
    request.async_queue.put(jobs.append_with_pid, root['done'], root['pids'],
                            key)
    attempt = request.environ.get('retry.attempt', 0)  # pyramid_retry's
    root['posted'][key] = attempt
    if request.POST.get('hot') == '1':
        root['hot']['n'] += 1
    request.response.headers['X-Retry-Attempt'] = str(attempt)
    return {'key': key, 'attempt': attempt}


def make_app(uri):
    settings = {
        'zodbconn.uri': uri,
        'retry.attempts': '5',
        'zcasync.dispatcher': 'false',
    }
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        config.add_route('enqueue', '/enqueue')
        config.add_view(enqueue, route_name='enqueue', request_method='POST',
                        renderer='json')
        app = config.make_wsgi_app()
    ensure_data(app.registry)
    return app


def main(argv):
    import waitress
    uri, http_port = argv[0], int(argv[1])
    app = make_app(uri)
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    print('serving', flush=True)
    waitress.serve(app, host='127.0.0.1', port=http_port, threads=8,
                   _quiet=True)


if __name__ == '__main__':
    main(sys.argv[1:])
