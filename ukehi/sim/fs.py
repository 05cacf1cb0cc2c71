"""An in-memory file system with crash semantics, for the storage code in a simulation.

Installed with ``ukehi.storage.vfs.use(fs)``: the WAL, hard state, snapshot and replay code
call ``os.open/write/fsync/ftruncate/replace/listdir...`` on it as on the real ``os``.

Durability model (LazyFS-like, per file and per directory):

- a file's bytes survive a crash only up to its last ``fsync``; bytes written since are lost
  at a crash, except that a *torn* tail may survive (a random prefix of the unsynced
  append, as a power cut mid-write leaves);
- a directory entry (created, renamed, removed file) survives only once the directory is
  fsynced; before that a crash brings the old entries back;
- damage (the disk nemesis's kinds) hits synced bytes: bit flips, zeroed chunks, copied
  chunks; the storage code's CRC and CorruptionPolicy must deal with them at replay;
- a crashed node's subtree is *dead* until it restarts: every call under it fails (EIO),
  so nothing the dying process still tries to do reaches the disk.

Wasted work: an ``fsync`` of a regular file that had no write, truncation or ``O_TRUNC``
open since its last fsync (a *clean* file) changes nothing and is the most expensive call
a node makes; each one is counted in ``clean_fsyncs`` (path -> [count, first time]), which
the harness's ``redundant-fsync`` checker (checkers/whitebox/wasted.py) judges. A file is
dirty from its creation until its first fsync, and again after a fault rewrote it (a
crash's revert, damage, an overwrite): a recovering process may sync what it found.
Directories are not counted (a directory fsync makes entries durable, which a file write
never marks).

Durable bytes (the ``durable-cut`` checker, checkers/whitebox/durable_cut.py): each file
keeps the length it had at its last fsync (``fsynced_len``; a crash's torn tail survives
above it but was never synced) and its *live damage*: each damage fault's offset, with the
file's length at the first node start after it (the bytes a recovering replay saw damaged;
bytes appended after that replay are not excused by it). A truncation below a damaged
offset removes that damage. At each node start (:meth:`revive`) ``starts`` records per file
(fsynced length, live damage as (offset, extent) pairs).
``damaged`` keeps every damage fault's (virtual time, offset) by path.

Every choice (torn length, where damage lands) comes from the random generator the
simulation passes in, so a seed decides it.
"""

from __future__ import annotations

import errno
import os as _os
import posixpath
import random
import stat as _stat
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SimFS"]

_PARTS_CACHE_MAX = 4096  # paths whose split form is kept (SimFS._parts)


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    # What a crash leaves: ``_synced``, or while that is None the first ``_synced_len`` bytes
    # of ``data`` (an fsync only notes the length: copying the whole file at every fsync
    # cost a WAL segment's size per persist). A change below that length copies them first
    # (``keep_synced``); appends, the usual write, never do.
    _synced: bytes | None = b""
    _synced_len: int = 0
    # Written (or truncated, or made) since the last fsync; an fsync of a clean file is
    # counted as wasted work (``SimFS.clean_fsyncs``).
    dirty: bool = True
    # Length at the last fsync (what a crash cannot take away; a torn tail lies above it).
    fsynced_len: int = 0
    # Live damage: [offset, file length at the first start after it (None until then)].
    damage: list[list[Any]] = field(default_factory=list)

    @property
    def synced(self) -> bytes:
        """The bytes a crash leaves (the last fsync's, or what a fault made durable)."""
        if self._synced is None:
            return bytes(self.data[:self._synced_len])
        return self._synced

    @synced.setter
    def synced(self, value: bytes) -> None:
        self._synced = bytes(value)
        self._synced_len = len(value)

    def mark_synced(self) -> None:
        """An fsync: what the file holds now is what a crash leaves."""
        self._synced = None
        self._synced_len = len(self.data)

    def keep_synced(self, offset: int) -> None:
        """Before ``data`` changes at ``offset``: keep the synced bytes it would change."""
        if self._synced is None and offset < self._synced_len:
            self._synced = bytes(self.data[:self._synced_len])


@dataclass
class _Dir:
    entries: dict[str, Any] = field(default_factory=dict)  # name -> _Inode | _Dir
    durable: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Handle:
    node: Any
    path: str
    append: bool
    writable: bool
    pos: int = 0
    generation: int = 0
    prefix: str | None = None  # the node prefix the path lies under (fixed at open)


def _err(code: int, path: str) -> OSError:
    return OSError(code, _os.strerror(code), path)


class _Path:
    """``os.path`` over the simulated tree (pure path helpers from posixpath)."""

    def __init__(self, fs: "SimFS") -> None:
        self._fs = fs
        self.join = posixpath.join
        self.basename = posixpath.basename
        self.dirname = posixpath.dirname
        self.normpath = posixpath.normpath
        self.abspath = posixpath.normpath  # every simulated path is absolute
        self.sep = "/"

    def exists(self, path: str) -> bool:
        return self._fs._lookup(path) is not None

    def isdir(self, path: str) -> bool:
        return isinstance(self._fs._lookup(path), _Dir)

    def isfile(self, path: str) -> bool:
        return isinstance(self._fs._lookup(path), _Inode)

    def getsize(self, path: str) -> int:
        node = self._fs._lookup(path)
        if node is None:
            raise _err(errno.ENOENT, path)
        return len(node.data) if isinstance(node, _Inode) else 0


class SimFS:
    """The whole cluster's disks in one tree; each node lives under its own prefix."""

    O_RDONLY = _os.O_RDONLY
    O_WRONLY = _os.O_WRONLY
    O_RDWR = _os.O_RDWR
    O_CREAT = _os.O_CREAT
    O_EXCL = _os.O_EXCL
    O_TRUNC = _os.O_TRUNC
    O_APPEND = _os.O_APPEND
    O_DIRECTORY = getattr(_os, "O_DIRECTORY", 0)
    PathLike = _os.PathLike
    fspath = staticmethod(_os.fspath)
    sep = "/"
    R_OK, W_OK, X_OK = _os.R_OK, _os.W_OK, _os.X_OK

    def __init__(self) -> None:
        self.root = _Dir()
        self.path = _Path(self)
        self._fds: dict[int, _Handle] = {}
        self._next_fd = 100
        self._dead: set[str] = set()  # prefixes of crashed nodes
        self._generation: dict[str, int] = {}
        self.fsyncs = 0
        self.bytes_written = 0
        # Regular files fsynced while clean: path -> [count, virtual time of the first].
        self.clean_fsyncs: dict[str, list[float]] = {}
        self.clock: Any = None  # the world's virtual clock (a callable), for the times above
        # Node prefix -> one record per start (revive): (virtual time, {file path: (fsynced
        # length, live damage as (offset, extent) pairs)}); path -> [(virtual time, offset)]
        # of every damage fault to the file (the durable-cut checker's inputs).
        self.starts: dict[str, list[tuple[float, dict[str, tuple[int, tuple[tuple[int, int], ...]]]]]] = {}
        self.damaged: dict[str, list[tuple[float, int]]] = {}
        self._parts_cache: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ tree
    def _parts(self, path: str) -> tuple[str, ...]:
        # Cached: the storage code names the same few dozen paths over and over.
        parts = self._parts_cache.get(path)
        if parts is None:
            parts = tuple(p for p in posixpath.normpath(path).split("/") if p not in ("", "."))
            if len(self._parts_cache) >= _PARTS_CACHE_MAX:
                self._parts_cache.clear()
            self._parts_cache[path] = parts
        return parts

    def _lookup(self, path: str) -> Any:
        node: Any = self.root
        for part in self._parts(path):
            if not isinstance(node, _Dir):
                return None
            node = node.entries.get(part)
            if node is None:
                return None
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if not isinstance(parent, _Dir):
            raise _err(errno.ENOENT, path)
        return parent, parts[-1]

    def _check_alive(self, path: str) -> None:
        if not self._dead:
            return
        norm = posixpath.normpath(path)
        for prefix in self._dead:
            if norm == prefix or norm.startswith(prefix + "/"):
                raise _err(errno.EIO, path)

    def _prefix_of(self, path: str) -> str | None:
        norm = posixpath.normpath(path)
        for prefix in self._generation:
            if norm == prefix or norm.startswith(prefix + "/"):
                return prefix
        return None

    # ------------------------------------------------------------------ os calls
    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        self._check_alive(path)
        node: _Dir = self.root
        for part in self._parts(path):
            child = node.entries.get(part)
            if child is None:
                child = _Dir()
                # A new directory's own entry is made durable with it (the storage code
                # fsyncs the parent right after makedirs).
                node.entries[part] = child
                node.durable[part] = child
            elif not isinstance(child, _Dir):
                raise _err(errno.ENOTDIR, path)
            node = child

    def access(self, path: str, mode: int) -> bool:
        return self._lookup(path) is not None

    def listdir(self, path: str) -> list[str]:
        self._check_alive(path)
        node = self._lookup(path)
        if node is None:
            raise _err(errno.ENOENT, path)
        if not isinstance(node, _Dir):
            raise _err(errno.ENOTDIR, path)
        return sorted(node.entries)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self._check_alive(path)
        node = self._lookup(path)
        if flags & self.O_CREAT:
            if node is not None and flags & self.O_EXCL:
                raise _err(errno.EEXIST, path)
            if node is None:
                parent, name = self._parent(path)
                node = _Inode()
                parent.entries[name] = node
        if node is None:
            raise _err(errno.ENOENT, path)
        writable = bool(flags & (self.O_WRONLY | self.O_RDWR))
        if isinstance(node, _Dir) and writable:
            raise _err(errno.EISDIR, path)
        if isinstance(node, _Inode) and flags & self.O_TRUNC and writable:
            node.keep_synced(0)
            del node.data[:]
            node.dirty = True
            node.damage = []
        prefix = self._prefix_of(path)
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = _Handle(node, posixpath.normpath(path), bool(flags & self.O_APPEND), writable,
                                generation=self._generation.get(prefix, 0) if prefix else 0, prefix=prefix)
        return fd

    def _handle(self, fd: int) -> _Handle:
        h = self._fds.get(fd)
        if h is None:
            raise _err(errno.EBADF, str(fd))
        prefix = h.prefix
        if prefix is not None and (prefix in self._dead or self._generation.get(prefix, 0) != h.generation):
            raise _err(errno.EIO, h.path)  # the process that opened it crashed
        return h

    def write(self, fd: int, data: Any) -> int:
        h = self._handle(fd)
        node = h.node
        if not isinstance(node, _Inode) or not h.writable:
            raise _err(errno.EBADF, h.path)
        b = data if type(data) is bytes else bytes(data)  # immutable already: no copy
        buf = node.data
        node.dirty = True
        if h.append:
            buf += b
        else:
            node.keep_synced(h.pos)
            end = h.pos + len(b)
            if end > len(buf):
                buf.extend(b"\0" * (end - len(buf)))
            buf[h.pos:end] = b
            h.pos = end
        self.bytes_written += len(b)
        return len(b)

    def read(self, fd: int, n: int) -> bytes:
        h = self._handle(fd)
        if isinstance(h.node, _Dir):
            raise _err(errno.EISDIR, h.path)
        with memoryview(h.node.data) as view:  # one copy (a bytearray slice would be a second)
            out = bytes(view[h.pos:h.pos + n])
        h.pos += len(out)
        return out

    def fsync(self, fd: int) -> None:
        h = self._handle(fd)
        self.fsyncs += 1
        if isinstance(h.node, _Dir):
            h.node.durable = dict(h.node.entries)
        else:
            if not h.node.dirty:
                seen = self.clean_fsyncs.get(h.path)
                if seen is None:
                    self.clean_fsyncs[h.path] = [1, self.clock() if self.clock is not None else 0.0]
                else:
                    seen[0] += 1
            h.node.dirty = False
            h.node.mark_synced()
            h.node.fsynced_len = len(h.node.data)

    def ftruncate(self, fd: int, size: int) -> None:
        h = self._handle(fd)
        buf = h.node.data
        h.node.dirty = True
        if size < len(buf):
            h.node.keep_synced(size)
            del buf[size:]
            h.node.damage = [[d, e if e is None else min(e, size)] for d, e in h.node.damage if d < size]
        else:
            buf.extend(b"\0" * (size - len(buf)))

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)  # closing never fails, not even for a dead process

    def fstat(self, fd: int) -> Any:
        h = self._handle(fd)
        size = len(h.node.data) if isinstance(h.node, _Inode) else 0
        mode = _stat.S_IFDIR if isinstance(h.node, _Dir) else _stat.S_IFREG
        return _os.stat_result((mode, 0, 0, 1, 0, 0, size, 0, 0, 0))

    def remove(self, path: str) -> None:
        self._check_alive(path)
        parent, name = self._parent(path)
        if not isinstance(parent.entries.get(name), _Inode):
            raise _err(errno.ENOENT, path)
        del parent.entries[name]

    unlink = remove

    def replace(self, src: str, dst: str) -> None:
        self._check_alive(src)
        sp, sn = self._parent(src)
        node = sp.entries.get(sn)
        if node is None:
            raise _err(errno.ENOENT, src)
        dp, dn = self._parent(dst)
        del sp.entries[sn]
        dp.entries[dn] = node

    rename = replace

    # ------------------------------------------------------------------ faults
    def register_node(self, prefix: str) -> None:
        self._generation.setdefault(posixpath.normpath(prefix), 0)

    def crash(self, prefix: str, rng: random.Random, torn_probability: float = 0.0) -> dict[str, int]:
        """Power cut under ``prefix``: unsynced bytes and entries are gone (a torn tail may
        survive); the subtree stays dead until :meth:`revive`. Returns what was lost."""
        prefix = posixpath.normpath(prefix)
        self._dead.add(prefix)
        self._generation[prefix] = self._generation.get(prefix, 0) + 1
        lost = {"bytes": 0, "torn": 0, "entries": 0}
        top = self._lookup(prefix)
        if isinstance(top, _Dir):
            self._revert(top, rng, torn_probability, lost)
        return lost

    def _revert(self, d: _Dir, rng: random.Random, torn_p: float, lost: dict[str, int]) -> None:
        if d.entries != d.durable:
            lost["entries"] += len(set(d.entries) ^ set(d.durable))
        d.entries = dict(d.durable)
        for name in sorted(d.entries):
            child = d.entries[name]
            if isinstance(child, _Dir):
                self._revert(child, rng, torn_p, lost)
                continue
            data, synced = child.data, child.synced
            if bytes(data) == synced:
                continue
            keep = synced
            if torn_p and len(data) > len(synced) and data[:len(synced)] == synced and rng.random() < torn_p:
                extra = len(data) - len(synced)
                keep = bytes(data[:len(synced) + rng.randrange(1, extra + 1)])
                lost["torn"] += 1
            lost["bytes"] += abs(len(data) - len(keep))
            child.data = bytearray(keep)
            child.synced = bytes(keep)
            child.dirty = True

    def revive(self, prefix: str) -> None:
        prefix = posixpath.normpath(prefix)
        self._dead.discard(prefix)
        now = self.clock() if self.clock is not None else 0.0
        record: dict[str, tuple[int, tuple[tuple[int, int], ...]]] = {}
        for p in self.files(prefix):
            node = self._lookup(p)
            for dmg in node.damage:
                if dmg[1] is None:
                    dmg[1] = len(node.data)  # what this start's replay finds damaged
            record[p] = (min(node.fsynced_len, len(node.data)), tuple((d, e) for d, e in node.damage))
        self.starts.setdefault(prefix, []).append((now, record))

    def _note_damage(self, node: _Inode, path: str, offset: int) -> None:
        node.damage.append([offset, None])
        now = self.clock() if self.clock is not None else 0.0
        self.damaged.setdefault(posixpath.normpath(path), []).append((now, offset))

    def wipe(self, path: str) -> None:
        """``rm -rf path`` made durable (an operator wiping a stopped node's data dir)."""
        parts = self._parts(path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if isinstance(parent, _Dir):
            parent.entries.pop(parts[-1], None)
            parent.durable.pop(parts[-1], None)

    def overwrite(self, path: str, data: bytes) -> None:
        """Replace an existing file's bytes, durably (a disk fault applied to a stopped
        node's file: it is what the disk holds now, synced or not)."""
        node = self._lookup(path)
        if not isinstance(node, _Inode):
            raise _err(errno.ENOENT, path)
        old = bytes(node.data)
        first = next((i for i, (a, b) in enumerate(zip(old, data)) if a != b), min(len(old), len(data)))
        if old != bytes(data):
            self._note_damage(node, path, first)
        node.data = bytearray(data)
        node.synced = bytes(data)
        node.fsynced_len = len(data)
        node.dirty = True

    def read_bytes(self, path: str) -> bytes | None:
        """The current bytes of ``path`` (a harness's look, not a process's read); None if absent."""
        try:
            node = self._lookup(path)
        except OSError:
            return None
        return bytes(node.data) if isinstance(node, _Inode) else None

    def files(self, prefix: str) -> list[str]:
        """Every file under ``prefix`` (sorted)."""
        out: list[str] = []

        def walk(d: _Dir, base: str) -> None:
            for name in sorted(d.entries):
                child = d.entries[name]
                p = f"{base}/{name}"
                if isinstance(child, _Dir):
                    walk(child, p)
                else:
                    out.append(p)

        top = self._lookup(prefix)
        if isinstance(top, _Dir):
            walk(top, posixpath.normpath(prefix))
        return out

    def damage(self, path: str, kind: str, rng: random.Random, *, skip: int = 0) -> dict[str, Any] | None:
        """Damage synced bytes of ``path`` past offset ``skip`` (a segment header, say):
        ``bitflip``, ``zero`` (a chunk zeroed) or ``copy`` (a chunk copied over another)."""
        node = self._lookup(path)
        if not isinstance(node, _Inode) or len(node.data) <= skip + 1:
            return None
        size = len(node.data)
        at = rng.randrange(skip, size)
        if kind == "bitflip":
            node.data[at] ^= 1 << rng.randrange(8)
            length = 1
        elif kind == "zero":
            length = min(size - at, rng.randrange(1, 64))
            node.data[at:at + length] = b"\0" * length
        elif kind == "copy":
            length = min(size - at, rng.randrange(1, 64))
            src = rng.randrange(skip, size - length + 1)
            node.data[at:at + length] = bytes(node.data[src:src + length])
        else:
            raise ValueError(f"unknown damage kind {kind!r}")
        node.synced = bytes(node.data)
        node.dirty = True
        self._note_damage(node, path, at)
        return {"path": path, "kind": kind, "offset": at, "length": length}

    def export(self, prefix: str, target: str) -> int:
        """Write every file under ``prefix`` to the real directory ``target`` (for the
        white-box checkers, which read node data dirs from the run store). Returns the count."""
        files = self.files(prefix)
        base = posixpath.normpath(prefix)
        for p in files:
            rel = p[len(base) + 1:]
            real = _os.path.join(target, *rel.split("/"))
            _os.makedirs(_os.path.dirname(real), exist_ok=True)
            with open(real, "wb") as f:
                f.write(bytes(self._lookup(p).data))
        return len(files)
