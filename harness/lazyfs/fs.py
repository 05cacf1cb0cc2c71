"""LazyFS: a FUSE file system that keeps written data in memory until it is fsynced.

Jepsen's LazyFS idea, in a small Python form for this project's harness: the node's data
directory is a FUSE mount of this file system over a backing directory. ``write`` and
``truncate`` change only an in-memory image of the file (its "page cache"); reads see that
image. ``fsync``/``fdatasync`` write the file's dirty byte ranges (and its new length) to
the backing file and fsync it. Writing ``drop`` to the control file ``/.lazyfs-control``
throws every un-fsynced change away, as a power cut would; reading the control file
returns a JSON record of what the last drop lost.

What it models and what it does not:

- modelled: loss of file *data* (and length changes) that was written but never fsynced,
  file by file, at the moment of the drop;
- not modelled: loss of directory entries (create, rename, unlink and mkdir reach the
  backing directory at once, as if every directory operation were fsynced), torn or
  reordered writes inside a file (the fsynced state is all or nothing per file), and loss
  of data that another process could have seen through a shared kernel page cache (the
  mount uses direct I/O so that a drop is visible to the next reader at once).
"""

from __future__ import annotations

import errno
import json
import os
import threading
from typing import Any

import mfusepy
from mfusepy import FuseOSError, Operations

CONTROL = "/.lazyfs-control"


class _Image:
    """A file's in-memory contents and the byte ranges not yet fsynced."""

    __slots__ = ("data", "dirty", "length_dirty")

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.dirty: list[tuple[int, int]] = []  # (start, end) ranges written since the last fsync
        self.length_dirty = False

    @property
    def dirty_bytes(self) -> int:
        return sum(end - start for start, end in self.dirty)


class LazyOps(Operations):
    """Pass-through to ``backing`` with file data held in memory until fsync."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self.images: dict[str, _Image] = {}
        self._mutex = threading.RLock()
        self.last_drop: dict[str, Any] = {"drops": 0}

    # -- helpers -------------------------------------------------------------------------
    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _image(self, path: str) -> _Image:
        image = self.images.get(path)
        if image is None:
            try:
                with open(self._real(path), "rb") as f:
                    image = _Image(bytearray(f.read()))
            except OSError as err:
                raise FuseOSError(err.errno or errno.EIO) from None
            self.images[path] = image
        return image

    def drop(self) -> dict[str, Any]:
        """Forget every un-fsynced change (the power cut)."""
        with self._mutex:
            lost = {p: {"bytes": img.dirty_bytes, "length_changed": img.length_dirty}
                    for p, img in self.images.items() if img.dirty or img.length_dirty}
            self.images.clear()
            self.last_drop = {"drops": self.last_drop["drops"] + 1, "lost": lost,
                              "lost_bytes": sum(v["bytes"] for v in lost.values())}
            return self.last_drop

    # -- control file ----------------------------------------------------------------------
    def _control_bytes(self) -> bytes:
        return json.dumps(self.last_drop, sort_keys=True).encode() + b"\n"

    # -- metadata --------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == CONTROL:
            st = os.lstat(self.backing)
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": len(self._control_bytes()),
                    "st_uid": st.st_uid, "st_gid": st.st_gid, "st_atime": st.st_atime_ns,
                    "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}
        try:
            st = os.lstat(self._real(path))
        except OSError as err:
            raise FuseOSError(err.errno or errno.EIO) from None
        attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        with self._mutex:
            image = self.images.get(path)
            if image is not None:
                attrs["st_size"] = len(image.data)
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        try:
            return [".", "..", *os.listdir(self._real(path))]
        except OSError as err:
            raise FuseOSError(err.errno or errno.EIO) from None

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._real(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def access(self, path: str, amode: int) -> int:
        if path != CONTROL and not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        if path != CONTROL:
            os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))
        return 0

    # -- directory entries (applied at once: see the module doc) ----------------------------
    def mkdir(self, path: str, mode: int) -> int:
        self._call(os.mkdir, self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        self._call(os.rmdir, self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            self._call(os.unlink, self._real(path))
            self.images.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            self._call(os.rename, self._real(old), self._real(new))
            image = self.images.pop(old, None)
            self.images.pop(new, None)
            if image is not None:
                self.images[new] = image
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self._mutex:
            fd = self._call(os.open, self._real(path), os.O_WRONLY | os.O_CREAT, mode)
            os.close(fd)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        fd = self._call(os.open, self._real(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0

    @staticmethod
    def _call(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as err:
            raise FuseOSError(err.errno or errno.EIO) from None

    # -- file data -------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        if path != CONTROL and not os.path.exists(self._real(path)):
            raise FuseOSError(errno.ENOENT)
        if flags & os.O_TRUNC and path != CONTROL:
            self.truncate(path, 0)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path == CONTROL:
            return self._control_bytes()[offset:offset + size]
        with self._mutex:
            image = self.images.get(path)
            if image is not None:
                return bytes(image.data[offset:offset + size])
        try:
            with open(self._real(path), "rb") as f:
                f.seek(offset)
                return f.read(size)
        except OSError as err:
            raise FuseOSError(err.errno or errno.EIO) from None

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if path == CONTROL:
            if data.strip() == b"drop":
                self.drop()
                return len(data)
            raise FuseOSError(errno.EINVAL)
        with self._mutex:
            image = self._image(path)
            end = offset + len(data)
            if end > len(image.data):
                image.data.extend(b"\0" * (end - len(image.data)))
                image.length_dirty = True
            image.data[offset:end] = data
            image.dirty.append((offset, end))
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path == CONTROL:
            return 0
        with self._mutex:
            image = self._image(path)
            if length < len(image.data):
                del image.data[length:]
            else:
                image.data.extend(b"\0" * (length - len(image.data)))
            image.dirty = [(s, min(e, length)) for s, e in image.dirty if s < length]
            image.length_dirty = True
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if path == CONTROL:
            return 0
        with self._mutex:
            image = self.images.get(path)
            if image is None or not (image.dirty or image.length_dirty):
                return 0
            fd = self._call(os.open, self._real(path), os.O_WRONLY)
            try:
                if image.length_dirty:
                    os.ftruncate(fd, len(image.data))
                for start, end in image.dirty:
                    os.pwrite(fd, bytes(image.data[start:end]), start)
                os.fsync(fd)
            except OSError as err:
                raise FuseOSError(err.errno or errno.EIO) from None
            finally:
                os.close(fd)
            image.dirty = []
            image.length_dirty = False
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() makes nothing durable: that is the point

    def release(self, path: str, fh: int) -> int:
        return 0


def mount(backing: str, mountpoint: str) -> None:
    """Serve LazyFS over ``backing`` at ``mountpoint`` in the foreground until unmounted."""
    mfusepy.FUSE(LazyOps(backing), mountpoint, foreground=True, nothreads=True, direct_io=True,
                 attr_timeout=0, entry_timeout=0, negative_timeout=0, fsname="lazyfs")
