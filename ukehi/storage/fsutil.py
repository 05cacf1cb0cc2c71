"""Durability primitives: fsync of files and directories, atomic file replacement.

Every function looks ``os.fsync`` up at call time so tests can count fsyncs by
wrapping ``os.fsync``.
"""

from __future__ import annotations

from .vfs import os  # the real os, or the simulator's file system (vfs.use)

from .errors import StorageError


def fsync_fd(fd: int) -> None:
    """Flush one open file (data and the metadata needed to read it back) to stable storage."""
    os.fsync(fd)


def fsync_dir(path: str) -> None:
    """Make directory entries (created, renamed or removed files in ``path``) durable.

    Without this, a file that was fsynced can still vanish after a power loss because
    its name was never written out.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` (os.write may write fewer bytes than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than return 0 on files
            raise OSError("os.write wrote nothing")
        view = view[written:]


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that after a crash it holds the old or the new bytes.

    Steps: write ``path.tmp``, fsync it, rename over ``path``, fsync the directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            fsync_fd(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(directory)
    except PermissionError as exc:
        raise StorageError(
            f"cannot write {path}: permission denied ({exc.strerror}); "
            f"check the owner and mode of {directory}"
        ) from exc


def read_file(path: str, what: str) -> bytes:
    """Read a whole file, turning OS errors into StorageError messages that name ``what``."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)
    except PermissionError as exc:
        raise StorageError(
            f"cannot read {what} {path}: permission denied; check the owner and mode of the file"
        ) from exc
    except IsADirectoryError as exc:
        raise StorageError(f"{what} {path} is a directory, expected a file; move it away") from exc


def ensure_dir(path: str, what: str, create: bool) -> None:
    """Check that ``path`` is a usable directory (creating it when ``create``)."""
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(
                f"{what} {path} is not readable and writable by this user; fix its owner or mode"
            )
        return
    if os.path.exists(path):
        raise StorageError(f"{what} {path} exists but is not a directory; move it away or pick another path")
    if not create:
        raise StorageError(f"{what} {path} does not exist; check the path (or create it)")
    try:
        os.makedirs(path, exist_ok=True)
    except PermissionError as exc:
        raise StorageError(
            f"cannot create {what} {path}: permission denied; check the parent directory's owner and mode"
        ) from exc
    fsync_dir(os.path.dirname(os.path.abspath(path)))
