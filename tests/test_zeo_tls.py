"""``pzcasync-zeo`` with TLS client certificates, end to end, with a
throw-away CA made by the ``openssl`` command: a client without a
certificate (or without TLS) is refused, a ``pzcasync-worker`` whose
ZConfig file names its certificate runs jobs, and what the server
creates is its user's only."""
import os
import shutil
import subprocess

import pytest
import ZEO
from ZEO.Exceptions import ClientDisconnected

from pyramid_zcasync.demo import jobs as demo_jobs
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import wait_for_result

from conftest import TESTS_DIR, free_port, stop_process, wait_for_port
from test_scripts import (clean_env, command, make_site,  # noqa: F401
                          workers)

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None,
                                reason='needs the openssl command')

ZEO_SERVER = command('pzcasync-zeo', 'pyramid_zcasync.scripts.zeoserver')
#: Extensions of each certificate (X509_STRICT, as ZEO checks, wants
#: key identifiers and a critical CA constraint).
CA_EXT = ['-addext', 'basicConstraints=critical,CA:TRUE',
          '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
          '-addext', 'subjectKeyIdentifier=hash']
LEAF_EXT = ('basicConstraints=critical,CA:FALSE\n'
            'keyUsage=critical,digitalSignature\n'
            'subjectKeyIdentifier=hash\n'
            'authorityKeyIdentifier=keyid\n'
            'extendedKeyUsage=%s\n')
#: The client ZConfig file production.ini points to, shipped beside it.
SHIPPED_CLIENT_CONF = os.path.join(os.path.dirname(TESTS_DIR),
                                   'production-zeo-tls.conf')


def client_conf(port, ca):
    """The shipped file, on the test's port and certificate files."""
    with open(SHIPPED_CLIENT_CONF) as stream:
        text = stream.read()
    return (text.replace('127.0.0.1:8100', '127.0.0.1:%d' % port)
            .replace('/etc/zcasync/server-ca.pem', '%s/ca.pem' % ca)
            .replace('/etc/zcasync/', '%s/' % ca))


def openssl(directory, *args):
    subprocess.run(('openssl',) + args, cwd=str(directory), check=True,
                   capture_output=True, timeout=60)


def make_ca(directory):
    """ca.pem signing server.pem (for 127.0.0.1) and client.pem; keys
    beside them, mode 600."""
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
          '-nodes']
    openssl(directory, 'req', '-x509', *ec, '-keyout', 'ca.key', '-out',
            'ca.pem', '-days', '2', '-subj', '/CN=throw-away test CA',
            *CA_EXT)
    for name, usage, extra in (
            ('server', 'serverAuth', 'subjectAltName=IP:127.0.0.1\n'),
            ('client', 'clientAuth', '')):
        (directory / (name + '.ext')).write_text(LEAF_EXT % usage + extra)
        openssl(directory, 'req', *ec, '-keyout', name + '.key', '-out',
                name + '.csr', '-subj', '/CN=' + name)
        openssl(directory, 'x509', '-req', '-in', name + '.csr', '-CA',
                'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days',
                '2', '-out', name + '.pem', '-extfile', name + '.ext')
        os.chmod(str(directory / (name + '.key')), 0o600)
    return directory


@pytest.fixture
def tls_zeo(tmp_path):
    """``pzcasync-zeo --tls-*`` on a free port: (port, var, ca dir)."""
    ca = make_ca(tmp_path)
    port = free_port()
    var = tmp_path / 'zeo-var'
    log = open(str(tmp_path / 'zeo.out'), 'wb')
    process = subprocess.Popen(
        ZEO_SERVER + [
         '--address', '127.0.0.1:%d' % port, '--var', str(var),
         '--tls-certificate', str(ca / 'server.pem'),
         '--tls-key', str(ca / 'server.key'),
         '--tls-client-ca', str(ca / 'ca.pem')],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_for_port(port)
        yield port, var, ca
    finally:
        stop_process(process)
        log.close()


def client_db(port, ssl=None):
    return ZEO.DB(('127.0.0.1', port), storage='main', wait_timeout=3,
                  ssl=ssl)


def context(ca, with_certificate):
    import ssl
    made = ssl.create_default_context(cafile=str(ca / 'ca.pem'))
    if with_certificate:
        made.load_cert_chain(str(ca / 'client.pem'), str(ca / 'client.key'))
    return made


def test_only_clients_with_a_certificate_get_in(tls_zeo, tmp_path, workers):
    port, var, ca = tls_zeo
    for refused in (None, context(ca, with_certificate=False)):
        with pytest.raises(ClientDisconnected):
            client_db(port, refused)

    conf = tmp_path / 'zodb.conf'
    conf.write_text(client_conf(port, ca))
    worker = workers(make_site(tmp_path, uri='zconfig://%s#main' % conf))
    worker.wait_ready()
    db = ZEO.DB(('127.0.0.1', port), storage='main', wait_timeout=30,
                ssl=context(ca, with_certificate=True))
    try:
        with db.transaction() as conn:
            job = IQueue(conn.root()).put(demo_jobs.multiply, 6, 7)
        connection = db.open()
        try:
            assert wait_for_result(connection.get(job._p_oid), 30) == 42
        finally:
            connection.close()
    finally:
        db.close()

    assert oct(os.stat(str(var)).st_mode & 0o777) == '0o700'
    for name in ('zeo.conf', 'main.fs', 'async.fs', 'zeo.pid'):
        assert oct(os.stat(str(var / name)).st_mode & 0o777) == '0o600', name
    assert '<ssl>' in (var / 'zeo.conf').read_text()


def test_tls_options_go_together(tmp_path):
    result = subprocess.run(
        ZEO_SERVER + [
         '--var', str(tmp_path / 'var'), '--config-only',
         '--tls-certificate', str(tmp_path / 'missing.pem')],
        capture_output=True, text=True, env=clean_env(), timeout=60)
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr == (
        'pzcasync-zeo: error: TLS needs --tls-certificate, --tls-key and '
        '--tls-client-ca together; missing --tls-key, --tls-client-ca\n')
