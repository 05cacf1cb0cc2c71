"""The file system the storage code talks to: the real one, or a simulated one.

Every storage module does ``from .vfs import os`` and calls ``os.open``, ``os.write``,
``os.fsync``, ``os.path.exists``... exactly as with the real module. By default each call
goes to the real ``os`` (looked up at call time, so tests that wrap ``os.fsync`` still
count fsyncs); the simulator (``ukehi.sim.disk``) installs its in-memory file system for the
duration of a simulation with :func:`use`, so the *same* WAL, hard-state, snapshot and
replay code runs over a disk that loses un-fsynced writes at a crash.
"""

from __future__ import annotations

import contextlib
import os as _real_os
from typing import Any, Iterator

__all__ = ["os", "use", "current"]


class _RealOS:
    def __getattr__(self, name: str) -> Any:
        return getattr(_real_os, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_real_os, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_real_os, name)


_REAL = _RealOS()
_current: Any = _REAL


class _Proxy:
    """``os`` as the storage modules see it: forwards to the installed file system."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_current, name)

    def __setattr__(self, name: str, value: Any) -> None:  # monkeypatch.setattr(fsutil.os, ...)
        setattr(_current, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_current, name)


os: Any = _Proxy()


def current() -> Any:
    return _current


@contextlib.contextmanager
def use(fs: Any) -> Iterator[Any]:
    """Route the storage code's file system calls to ``fs`` inside the block."""
    global _current
    previous, _current = _current, fs
    try:
        yield fs
    finally:
        _current = previous
