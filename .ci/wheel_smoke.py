"""Run a small app's job from the *installed* wheel, not the checkout.

Run by .ci/run with the Python of a fresh virtualenv into which only the
built wheel was installed.  It copies .ci/smokeapp.py and .ci/smoke.ini
into a temporary directory (outside the checkout, so the checkout cannot
be imported by accident), serves the app with that virtualenv's
``pserve``, queues a job over HTTP, waits for its result, checks that
the admin views and their template ship in the wheel, stops pserve with
SIGTERM and reads the stopped database with the wheel's ``pzcasync``.
Prints one line per step; exits non-zero on the first failure.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
#: Seconds any one step may take.
STEP_TIMEOUT = 30


def check(condition, message):
    if not condition:
        sys.exit('wheel smoke test FAILED: %s' % message)
    print('ok:', message, flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def fetch(port, path, data=None, headers=()):
    """(status, body) of one request to the served app."""
    body = urllib.parse.urlencode(data).encode() if data else None
    request = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path),
                                     body, dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(condition, what):
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if condition():
                print('ok:', what, flush=True)
                return
        except OSError:
            pass
        time.sleep(0.1)
    check(False, what)


def check_installed_copy():
    import pyramid_zcasync
    location = os.path.realpath(pyramid_zcasync.__file__)
    check(location.startswith(os.path.realpath(sys.prefix)),
          'pyramid_zcasync imported from the wheel (%s)' % location)


def serve_and_run_a_job(site, port):
    log = open(os.path.join(site, 'pserve.log'), 'w')
    env = dict(os.environ, PYTHONPATH=site)
    env.pop('ZCASYNC_DISPATCHER', None)
    server = subprocess.Popen(
        [os.path.join(BIN, 'pserve'), 'smoke.ini', 'http_port=%d' % port],
        cwd=site, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: fetch(port, '/_async/health')[0] in (200, 503),
                 'pserve serves the app on port %d' % port)
        status, body = fetch(port, '/queue', {'number': '12'})
        check(status == 200, 'POST /queue answers 200 (%s %s)'
              % (status, body[:200]))
        oid = json.loads(body)['oid']
        wait_for(lambda: json.loads(fetch(port, '/job/%d' % oid)[1])[
            'result'] == 144, 'job %d completes with 144' % oid)
        admin = {'X-Smoke-Admin': 'yes'}
        status, body = fetch(port, '/_async/status', headers=admin)
        check(status == 200 and 'uuid' in json.loads(body),
              '/_async/status answers the admin')
        status, body = fetch(port, '/_async/', headers=admin)
        check(status == 200 and '<html' in body.lower(),
              'the dashboard renders (its template is in the wheel)')
        check(fetch(port, '/_async/status')[0] == 403,
              '/_async/status refuses anonymous visitors')
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    with open(os.path.join(site, 'pserve.log')) as stream:
        output = stream.read()
    stopped = 'stopped' in output and 'Traceback' not in output
    check(stopped, 'pserve stopped its dispatcher on SIGTERM'
          + ('' if stopped else ':\n' + output[-2000:]))


def main():
    check_installed_copy()
    site = tempfile.mkdtemp(prefix='zcasync-wheel-')
    try:
        for name in ('smokeapp.py', 'smoke.ini'):
            shutil.copy(os.path.join(HERE, name), site)
        os.mkdir(os.path.join(site, 'var'))  # FileStorage makes no dirs
        serve_and_run_a_job(site, free_port())
        result = subprocess.run(
            [os.path.join(BIN, 'pzcasync'), 'smoke.ini', 'count', '--json'],
            cwd=site, capture_output=True, text=True, timeout=STEP_TIMEOUT,
            env=dict(os.environ, PYTHONPATH=site))
        check(result.returncode == 0 and result.stdout.strip() == '1',
              'pzcasync counts the one job in the stopped database (%s%s)'
              % (result.stdout.strip(), result.stderr.strip()))
    finally:
        shutil.rmtree(site, ignore_errors=True)
    print('wheel smoke test passed', flush=True)


if __name__ == '__main__':
    main()
