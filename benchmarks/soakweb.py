"""The soak's producers as production has them: a Pyramid app under
waitress whose requests put the jobs (``benchmarks.soak --web``).

    python -m benchmarks.soakweb ZEO_PORT HTTP_PORT

``POST /put`` with a JSON body ``{"jobs": [[key, seconds], ...],
"runs_log": PATH}`` puts one ``soak_job`` per pair in the request's
transaction (pyramid_tm; pyramid_retry runs a conflicting request
again) and answers ``{"oids": [hex, ...]}`` in the same order.  The app
runs no dispatcher (``zcasync.dispatcher = false``): the soak's workers
run the jobs.  Prints ``serving`` once the app is built; SIGTERM stops
it.  Listens on 127.0.0.1 only.
"""
import json
import signal
import sys
import urllib.request
from typing import Any, Dict, List, Sequence, Tuple

#: waitress threads: concurrent requests, as a web server has.
THREADS = 4


def put_view(request: Any) -> Dict[str, List[str]]:
    from pyramid_zodbconn import get_connection

    from benchmarks.soakprocs import soak_job
    body = request.json_body
    root = get_connection(request).root()
    queue = request.async_queue
    jobs = [queue.put(soak_job, root['soak_done'], key, seconds,
                      body['runs_log'])
            for key, seconds in body['jobs']]
    connection = get_connection(request)
    for job in jobs:  # oids now, so that the answer can name them
        if job._p_oid is None:
            connection.add(job)
    return {'oids': [job._p_oid.hex() for job in jobs]}


def make_app(zeo_port: int) -> Any:
    from pyramid.config import Configurator
    settings = {
        'zodbconn.uri': 'zeo://127.0.0.1:%d?wait_timeout=30' % zeo_port,
        'retry.attempts': '20',
        'zcasync.dispatcher': 'false',
    }
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        config.add_route('put', '/put')
        config.add_view(put_view, route_name='put', request_method='POST',
                        renderer='json')
        return config.make_wsgi_app()


def post_jobs(port: int, batch: Sequence[Tuple[str, float]],
              runs_log: str) -> List[bytes]:
    """One request putting ``batch``; the jobs' oids."""
    data = json.dumps({'jobs': list(batch), 'runs_log': runs_log}).encode()
    request = urllib.request.Request(
        'http://127.0.0.1:%d/put' % port, data=data,
        headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=60) as response:
        return [bytes.fromhex(oid)
                for oid in json.loads(response.read())['oids']]


def main(argv: Sequence[str]) -> None:
    import waitress
    zeo_port, http_port = int(argv[0]), int(argv[1])
    app = make_app(zeo_port)
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    print('serving', flush=True)
    waitress.serve(app, host='127.0.0.1', port=http_port, threads=THREADS,
                   _quiet=True)


if __name__ == '__main__':
    main(sys.argv[1:])
