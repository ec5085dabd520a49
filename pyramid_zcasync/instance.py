"""The instance UUID file, and the OS lock that tells a live twin from a
crashed one.

The UUID names this process's dispatcher in every queue, so a restarted
process finds (and at once recovers) the jobs its previous life left.  The
file is read when the dispatcher starts, never at import, and never from a
path silently relative to the working directory.  zc.async wrote the UUID
as 32 hex digits after a comment; both that and the hyphenated form are
read.

Both files are private to the process's user (mode 0600) and never
followed through a symbolic link when written: a link planted at the lock
file's path would otherwise make the process truncate and write the file
it points to.  An error names the file, never its contents (the path
may be a mistake pointing at a file holding a secret).
"""
from __future__ import annotations

import errno
import fcntl
import os
import uuid as uuid_module
from typing import Optional

#: Environment variable naming the UUID file, as in zc.async.
ENV_VAR = 'ZC_ASYNC_UUID'

#: Mode of the UUID file and its lock: the owner's only.
PRIVATE = 0o600

_HEADER = ('# This file holds the UUID of a pyramid_zcasync dispatcher '
           'instance.\n# Each process running a dispatcher needs its own.\n')


class UUIDFileError(ValueError):
    """The UUID file cannot be read, written or understood."""


class DispatcherAlreadyRunning(RuntimeError):
    """Another live process holds the lock of this UUID."""


def resolve_uuid_file(uuid_file: Optional[str]) -> str:
    """``uuid_file``, else the file named by ``$ZC_ASYNC_UUID``; absolute."""
    path = uuid_file or os.environ.get(ENV_VAR)
    if not path:
        raise UUIDFileError(
            'no instance UUID: pass uuid= or uuid_file=, or set the %s '
            'environment variable to the path of a UUID file' % ENV_VAR)
    if not os.path.isabs(path):
        raise UUIDFileError(
            'the UUID file path %r is relative; give an absolute path (a '
            'relative one would depend on the working directory)' % path)
    return path


def read_uuid(path: str, create: bool = True) -> str:
    """The UUID in ``path`` (hyphenated); a new file if missing."""
    try:
        with open(path) as stream:
            text = stream.read()
    except FileNotFoundError:
        if not create:
            raise UUIDFileError('UUID file %r does not exist' % path) from None
        return _create(path)
    except OSError as exc:
        raise UUIDFileError('cannot read UUID file %r: %s'
                            % (path, exc.strerror)) from None
    return parse_uuid(text, path)


def parse_uuid(text: str, path: str = '<text>') -> str:
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith('#')]
    if len(lines) != 1:
        raise UUIDFileError('UUID file %r should hold one UUID line (and '
                            '# comments), found %d lines' % (path, len(lines)))
    try:
        return str(uuid_module.UUID(lines[0]))
    except ValueError:
        raise UUIDFileError('UUID file %r does not hold a UUID: expected 32 '
                            'hex digits, with or without hyphens' % path
                            ) from None


def _create(path: str) -> str:
    value = str(uuid_module.uuid1())
    directory = os.path.dirname(path)
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | os.O_NOFOLLOW, PRIVATE)
        with os.fdopen(fd, 'w') as stream:
            stream.write(_HEADER + value.replace('-', '') + '\n')
    except FileExistsError:
        return read_uuid(path, create=False)  # another process won the race
    except OSError as exc:
        raise UUIDFileError('cannot create UUID file %r: %s'
                            % (path, exc.strerror)) from None
    return value


class InstanceLock:
    """An exclusive ``flock`` on ``<uuid file>.lock`` for the process's life.

    The kernel drops it when the process dies, even by kill -9, so a lock
    that can be taken means the previous holder is gone and its jobs can
    be recovered at once; one that cannot means a live twin.
    """

    def __init__(self, uuid_path: str):
        self.path = uuid_path + '.lock'
        self._fd: Optional[int] = None

    def acquire(self, uuid: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                         PRIVATE)
        except OSError as exc:
            if os.path.islink(self.path):
                raise UUIDFileError(
                    'the lock file %s is a symbolic link; refusing to write '
                    'through it (remove it: the dispatcher creates its own)'
                    % self.path) from None
            raise UUIDFileError('cannot open the lock file %s: %s'
                                % (self.path, exc.strerror)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode('ascii', 'replace').strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise DispatcherAlreadyRunning(
                'a dispatcher with UUID %s is already running (process %s '
                'holds %s); give each process its own UUID file'
                % (uuid, holder or 'unknown', self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode('ascii'), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
