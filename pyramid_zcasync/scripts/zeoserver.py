"""``pzcasync-zeo``: the ZEO server of production.ini, in one command.

    pzcasync-zeo [--address 127.0.0.1:8100] [--var ./var] [--config-only]
                 [--transaction-timeout 60]
                 [--tls-certificate PEM --tls-key PEM --tls-client-ca PEM]

Fills in the shipped ZConfig template ``zeo.conf`` (two file storages,
``main`` for the application and ``async`` for the job queues, both under
``--var``), writes it to ``VAR/zeo.conf`` and runs ZEO's ``runzeo -C`` on it
in this process, so the process's PID is the server's: SIGTERM or SIGINT
stops it cleanly.  The clients name the storages in their URIs::

    zodbconn.uri       = zeo://127.0.0.1:8100?storage=main
    zodbconn.uri.async = zeo://127.0.0.1:8100?storage=async

ZEO has no passwords, so the default address is the loopback interface.
Anyone who can reach the port can put a job that the web process runs
(``queue.put(os.system, ...)``), and loopback is no boundary on a host
with other users: the ``--tls-*`` options make the server speak TLS and
accept only clients presenting a certificate signed by ``--tls-client-ca``
(clients then connect through a ZConfig file, see README "Production").
Everything the command creates (the directory, zeo.conf, the storages,
the PID file) is readable by its user only.  A bad address, an unusable
directory or a missing certificate file is reported in one line naming
the value, before runzeo starts.

A client stopped between its vote and the end of its commit (SIGSTOP, a
paused VM) holds its storage's commit lock, and every other client's
commits wait.  ``--transaction-timeout`` ends such a commit: the server
aborts it and closes that client's connection.  ZEO's own timeout (6.2)
closes the connection without aborting the transaction, which keeps the
lock taken until the server restarts, even after the client is killed;
this command makes the server abort the transaction of every connection
it closes (:func:`abort_on_close`), so it writes the timeout into the
configuration it serves, when that worked, and leaves it out of one
written for plain ``runzeo`` (``--config-only``).
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import socket
import sys
import tempfile
from importlib import resources
from typing import Any, Optional, Sequence

#: Where the server listens unless told: loopback only, ZEO's usual port.
DEFAULT_ADDRESS = '127.0.0.1:8100'
#: Host used when ``--address`` gives only a port (never all interfaces).
DEFAULT_HOST = '127.0.0.1'
#: Storage directory unless told, relative to the working directory.
DEFAULT_VAR = 'var'
#: The shipped template, in this package.
TEMPLATE = 'zeo.conf'
#: Name of the filled-in configuration written into the storage directory.
CONFIG_NAME = 'zeo.conf'
#: Storage names of the template, as the clients' ``storage=`` asks them.
STORAGES = ('main', 'async')

#: File creation mask while the server runs: storages, zeo.conf and the
#: PID file are its user's only (a storage holds every job's arguments).
UMASK = 0o077
#: The TLS options, and the ``<ssl>`` keys of ZEO's server schema they fill.
TLS_OPTIONS = (('tls_certificate', 'certificate'), ('tls_key', 'key'),
               ('tls_client_ca', 'authenticate'))

PROGRAM = 'pzcasync-zeo'
_PLACEHOLDER = re.compile(r'\{(address|var|ssl|timeout)\}')
NO_ZEO = 'ZEO is not installed: pip install "pyramid_zcasync[zeo]"'
#: Seconds a client may hold a storage's commit lock (from its vote to
#: its tpc_finish, normally milliseconds) before the server aborts it.
DEFAULT_TRANSACTION_TIMEOUT = 60.0


class UsageError(Exception):
    """A bad option value; the message names it."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1)."""
    value = text.strip()
    host, sep, port = value.rpartition(':')
    if not sep:
        host, port = DEFAULT_HOST, value
    elif host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    elif ':' in host:
        raise UsageError('--address %r: put an IPv6 address in brackets, '
                         'e.g. [::1]:8100' % text)
    if not host or any(c.isspace() or c in '/[]' for c in host):
        raise UsageError('--address %r: expected HOST:PORT, e.g. %s'
                         % (text, DEFAULT_ADDRESS))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError('--address %r: expected HOST:PORT (e.g. %s) or '
                         'PORT; %r is not a port number from 1 to 65535'
                         % (text, DEFAULT_ADDRESS, port))
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)


def check_address(text: str, host: str, port: int) -> str:
    """Bind and release the address, so that a typo or a busy port is
    reported here in one line rather than by runzeo's usage message;
    return the IP address it binds."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError('--address %r: unknown host %r (%s)'
                         % (text, host, exc.strerror)) from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = 'the port is already in use'
            elif exc.errno == errno.EADDRNOTAVAIL:
                reason = '%s is not an address of this machine' % host
            else:
                reason = exc.strerror or str(exc)
            raise UsageError('--address %r: cannot listen there: %s'
                             % (text, reason)) from None
    return str(sockaddr[0])


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split('%')[0]).is_loopback
    except ValueError:
        return False


def prepare_var(text: str) -> str:
    """The storage directory, absolute, created if missing, and writable."""
    if '\n' in text or '\r' in text:
        raise UsageError('--var %r: a line break in a path' % text)
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError('--var %r: %s exists and is not a directory'
                         % (text, path))
    try:
        os.makedirs(path, exist_ok=True)
        # os.access lies for root and on some network file systems.
        with tempfile.TemporaryFile(dir=path, prefix='.write-test-'):
            pass
    except OSError as exc:
        raise UsageError('--var %r: cannot write in %s: %s'
                         % (text, path, exc.strerror or exc)) from None
    return path


def check_unlocked(text: str, var: str) -> None:
    """Refuse a directory whose storages a running server has open, before
    runzeo overwrites that server's zeo.conf and removes its PID file."""
    try:
        from zc.lockfile import LockError, LockFile
    except ImportError:  # pragma: no cover - ZODB depends on zc.lockfile
        return
    for name in STORAGES:
        # FileStorage's own lock file: taken and released at once.
        path = os.path.join(var, name + '.fs.lock')
        try:
            LockFile(path).close()
        except LockError:
            raise UsageError(
                '--var %r: storage %r there is in use by another running ZEO'
                ' server (lock %s; its PID is in %s)' % (
                    text, name, path, os.path.join(var, 'zeo.pid'))) from None
        except OSError as exc:
            raise UsageError('--var %r: cannot lock %s: %s' % (
                text, path, exc.strerror or exc)) from None


def zconfig_value(path: str) -> str:
    """A path as a ZConfig value: its ``$`` kept literal."""
    return path.replace('$', '$$')


def tls_files(options: argparse.Namespace) -> dict:
    """The ``<ssl>`` keys from the ``--tls-*`` options: all three or none,
    each an absolute path to a readable file."""
    given = {key: getattr(options, name) for name, key in TLS_OPTIONS
             if getattr(options, name)}
    if not given:
        return {}
    missing = ['--' + name.replace('_', '-') for name, key in TLS_OPTIONS
               if key not in given]
    if missing:
        raise UsageError('TLS needs --tls-certificate, --tls-key and '
                         '--tls-client-ca together; missing %s'
                         % ', '.join(missing))
    files = {}
    for name, key in TLS_OPTIONS:
        text = given[key]
        path = os.path.abspath(os.path.expanduser(text))
        option = '--' + name.replace('_', '-')
        if '\n' in path or not os.path.exists(path):
            raise UsageError('%s %r: no such file' % (option, text))
        if not os.access(path, os.R_OK):
            raise UsageError('%s %r: not readable' % (option, text))
        files[key] = path
    return files


def warn_if_readable(path: str) -> None:
    """A private key others can read is no secret: say so."""
    if os.stat(path).st_mode & 0o077:
        print('%s: warning: the private key %s is readable by other users;'
              ' chmod 600 it' % (PROGRAM, path), file=sys.stderr)


def ssl_section(files: dict) -> str:
    """The ``<ssl>`` section of ``<zeo>``, or nothing without TLS."""
    if not files:
        return ''
    lines = ['', '  # Written from the --tls-* options: clients must present '
             'a certificate', '  # signed by the "authenticate" CA.',
             '  <ssl>']
    lines += ['    %s %s' % (key, zconfig_value(files[key]))
              for _, key in TLS_OPTIONS]
    lines.append('  </ssl>')
    return '\n'.join(lines)


def timeout_line(seconds: Optional[float]) -> str:
    """The ``<zeo>`` line of the transaction timeout, or nothing."""
    if not seconds:
        return ('\n  # No transaction-timeout: ZEO 6.2 would close a slow '
                "client's connection\n  # without aborting its transaction "
                '(pzcasync-zeo makes it abort).')
    return ('\n  # A commit that holds the lock this long (a client stopped '
            'mid-commit)\n  # is aborted: pzcasync-zeo makes the server '
            'abort what it closes.\n  transaction-timeout %g' % seconds)


def parse_timeout(text: str) -> float:
    """``--transaction-timeout``: seconds, 0 for none."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float('inf'):
        raise argparse.ArgumentTypeError(
            '%r: expected a number of seconds, 0 or more (0: none)' % text)
    return seconds


def render_config(address: str, var: str, tls: Optional[dict] = None,
                  timeout: Optional[float] = None) -> str:
    """The shipped template with its placeholders filled in."""
    try:
        template = resources.files(__package__).joinpath(TEMPLATE).read_text(
            encoding='utf-8')
    except FileNotFoundError:
        raise UsageError('the template %s is missing from the installed '
                         'package %s; reinstall pyramid_zcasync'
                         % (TEMPLATE, __package__)) from None
    # ZConfig substitutes $NAME in values: keep a path's '$' literal.
    values = {'address': address, 'var': zconfig_value(var),
              'ssl': ssl_section(tls or {}), 'timeout': timeout_line(timeout)}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def write_config(address: str, var: str, tls: Optional[dict] = None,
                 timeout: Optional[float] = None) -> str:
    path = os.path.join(var, CONFIG_NAME)
    text = ('# Written by %s from pyramid_zcasync/scripts/%s; rewritten at '
            'each start.\n' % (PROGRAM, TEMPLATE)) + render_config(
                address, var, tls, timeout)
    try:
        with open(path, 'w', encoding='utf-8') as stream:
            stream.write(text)
    except OSError as exc:
        raise UsageError('--var %r: cannot write %s: %s'
                         % (var, path, exc.strerror or exc)) from None
    return path


def abort_on_close() -> bool:
    """Make the ZEO server abort the transaction of each connection it
    closes itself, as it does for one the client drops.

    ZEO 6.2 skips that for a connection it closed on purpose, and its
    transaction timeout is such a close: the timed-out transaction kept
    its storage's commit lock until the server restarted.  False (and
    nothing changed) if ZEO's server is not shaped as expected."""
    try:
        from ZEO.asyncio.server import ServerProtocol
    except ImportError:
        raise UsageError(NO_ZEO) from None
    close = getattr(ServerProtocol, 'close', None)
    if close is None or getattr(close, 'aborts_transaction', False):
        return close is not None

    def close_and_abort(self: Any) -> None:
        storage = getattr(self, 'zeo_storage', None)
        if not getattr(self, 'closed', True) and storage is not None and \
                getattr(storage, 'transaction', None) is not None:
            storage.notify_disconnected()  # aborts it, frees the lock
        close(self)
    setattr(close_and_abort, 'aborts_transaction', True)
    ServerProtocol.close = close_and_abort
    return True


def served_timeout(options: argparse.Namespace) -> Optional[float]:
    """The transaction timeout to write into the configuration: none for
    plain runzeo (``--config-only``), nor for a server that could not be
    made to abort what it closes (there the timeout would keep the lock
    for good)."""
    if options.config_only or not options.transaction_timeout:
        return None
    if abort_on_close():
        return float(options.transaction_timeout)
    print('%s: warning: this ZEO cannot be made to abort a timed-out '
          'commit; serving without --transaction-timeout' % PROGRAM,
          file=sys.stderr)
    return None


def run_zeo(config: str, var: str) -> int:
    """Run runzeo in this process until a signal stops it."""
    try:
        from ZEO import runzeo
    except ImportError:
        raise UsageError(NO_ZEO) from None
    try:
        from zc.lockfile import LockError
    except ImportError:  # pragma: no cover - ZODB depends on zc.lockfile
        LockError = ()
    try:
        runzeo.main(['-C', config])
    except LockError:
        raise UsageError('--var %r: the storages there are locked by another'
                         ' running ZEO server (see %s)'
                         % (var, os.path.join(var, 'zeo.pid'))) from None
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description='Run the ZEO server of a pyramid_zcasync deployment: '
        'storages %s under --var, served by runzeo.'
        % ' and '.join(repr(name) for name in STORAGES))
    parser.add_argument(
        '--address', default=DEFAULT_ADDRESS, metavar='HOST:PORT',
        help='where to listen (default %(default)s; a bare PORT listens on '
        '127.0.0.1). ZEO has no authentication: keep it on loopback or a '
        'private network')
    parser.add_argument(
        '--var', default=DEFAULT_VAR, metavar='DIR',
        help='directory of the storage files, zeo.conf and zeo.pid, created '
        'if missing (default ./%(default)s)')
    parser.add_argument(
        '--transaction-timeout', type=parse_timeout,
        default=DEFAULT_TRANSACTION_TIMEOUT, metavar='SECONDS',
        help='abort a commit that holds its storage\'s lock this long, as a '
        'client stopped in the middle of one does (default %(default)g; 0: '
        'never). Not written with --config-only: plain runzeo would keep '
        'the lock')
    parser.add_argument(
        '--config-only', action='store_true',
        help='write DIR/zeo.conf, print its path and exit (to run runzeo -C '
        'yourself, e.g. under a process manager)')
    tls = parser.add_argument_group(
        'TLS with client certificates', 'all three together: the server '
        'then speaks TLS only, and refuses a client without a certificate '
        'signed by the client CA')
    tls.add_argument('--tls-certificate', metavar='PEM',
                     help="the server's certificate (chain)")
    tls.add_argument('--tls-key', metavar='PEM',
                     help="the server's private key (keep it mode 600)")
    tls.add_argument('--tls-client-ca', metavar='PEM',
                     help='the CA certificate(s) that sign the clients\' '
                     'certificates (a file, or a directory of hashed '
                     'certificates)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = make_parser().parse_args(argv)
    os.umask(UMASK)
    try:
        host, port = parse_address(options.address)
        tls = tls_files(options)
        var = prepare_var(options.var)
        check_unlocked(options.var, var)
        if tls:
            warn_if_readable(tls['key'])
        if not options.config_only:
            ip = check_address(options.address, host, port)
            if not is_loopback(ip) and not tls:
                print('%s: warning: listening on %s, not on loopback, '
                      'without TLS client certificates (--tls-*): anyone '
                      'reaching this port can run code in your app; '
                      'firewall it' % (PROGRAM, ip), file=sys.stderr)
        address = format_address(host, port)
        config = write_config(address, var, tls, served_timeout(options))
        if options.config_only:
            print(config)
            return 0
        print('%s: serving storages %s from %s on %s%s (config %s)'
              % (PROGRAM, ', '.join(STORAGES), var, address,
                 ' with TLS, client certificates required' if tls else '',
                 config),
              file=sys.stderr, flush=True)
        return run_zeo(config, var)
    except UsageError as exc:
        print('%s: error: %s' % (PROGRAM, exc), file=sys.stderr)
        return 2


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
