"""A TCP proxy that injects network faults, for the chaos tests.

Clients connect to ``proxy.port`` on 127.0.0.1 instead of the server's
port; each connection is forwarded by a thread of its own.  At any time
the test may make the network slow (``latency``), silent (``stall``: bytes
are held, connections stay open, as a half-open link or a frozen switch
would), or broken (``reset``: every open connection is cut with a TCP
RST, mid-commit if one is under way; ``refuse``: new connections are
closed at once).  Real sockets, real servers: only the wire lies.
"""
from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from typing import List, Optional

#: Bytes read from one side at a time.
CHUNK = 65536


class FaultProxy:

    def __init__(self, target_port: int, target_host: str = '127.0.0.1'):
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.latency = 0.0
        self._stalled = threading.Event()
        self._refusing = False
        self._closing = False
        self._pairs: List[tuple] = []
        self._lock = threading.Lock()
        #: Faults injected so far, for the test's report.
        self.faults: List[str] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True,
                                          name='faultproxy-accept')
        self._accepter.start()

    # -- faults --------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk forwarded, both ways, by ``seconds``."""
        self.latency = seconds
        if seconds:
            self.faults.append('latency %.0f ms' % (seconds * 1000))

    @contextlib.contextmanager
    def stalled(self):
        """Hold every byte while inside; connections stay open."""
        self._stalled.set()
        self.faults.append('stall')
        try:
            yield
        finally:
            self._stalled.clear()

    def reset(self) -> int:
        """Cut every open connection with a TCP RST; how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _abort(sock)
        self.faults.append('reset %d connection(s)' % len(pairs))
        return len(pairs)

    @contextlib.contextmanager
    def refusing(self):
        """Close new connections at once while inside (and cut the open
        ones first): a server that cannot be reached."""
        self._refusing = True
        self.reset()
        self.faults.append('refuse')
        try:
            yield
        finally:
            self._refusing = False

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        self.reset()

    # -- forwarding ----------------------------------------------------

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _abort(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _abort(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._forward, args=(client, server),
                             daemon=True, name='faultproxy-pipe').start()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    self._hold()
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: reset() closed it
            return
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                if (client, server) in self._pairs:
                    self._pairs.remove((client, server))

    def _hold(self) -> None:
        while self._stalled.is_set() and not self._closing:
            time.sleep(0.01)
        if self.latency:
            time.sleep(self.latency)


def _abort(sock: Optional[socket.socket]) -> None:
    """Close with RST rather than FIN: the peer sees a reset connection."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack('ii', 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
