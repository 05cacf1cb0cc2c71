"""The one gate between a URL and the file system: names in, paths under the root out.

Every path the browser asks for goes through :func:`safe_path`. A name is served only when
each of its parts is a plain file or directory name (letters, digits and ``_ . + - =``,
not starting with a dot), every part below the root is a real directory or file (never a
symlink, so nothing can lead out of the results dir), and the resolved path is still
under the resolved root. Anything else is :class:`NotFound`, which the app answers with a
404 that does not say which rule refused the name.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterable

# A part of a name we serve: what the store writes (test names, timestamps, node names,
# plot and log files), nothing that starts with a dot, no separators, no '%', no NUL.
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,200}$")


class NotFound(Exception):
    """The name does not lead to something we serve (the app answers 404)."""


def valid_part(part: str) -> bool:
    return bool(_PART.match(part)) and part not in (".", "..")


def split_name(name: str) -> list[str]:
    """``"a/b/c"`` -> ``["a", "b", "c"]``; NotFound for an empty part or any odd one."""
    parts = name.split("/")
    if not parts or any(not valid_part(p) for p in parts):
        raise NotFound(name)
    return parts


def safe_path(root: Path, parts: Iterable[str], *, want: str | None = None) -> Path:
    """The path under ``root`` that ``parts`` name, checked part by part (see the module doc).

    ``want`` is ``"file"`` or ``"dir"`` to insist on one kind. ``root`` must be resolved.
    """
    path = root
    for part in parts:
        if not valid_part(part):
            raise NotFound(part)
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            raise NotFound(str(path)) from None
        if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise NotFound(str(path))  # symlinks (in or out of the root), fifos, devices
    try:
        path.resolve(strict=True).relative_to(root)
    except (OSError, ValueError):
        raise NotFound(str(path)) from None
    mode = os.lstat(path).st_mode
    if want == "file" and not stat.S_ISREG(mode):
        raise NotFound(str(path))
    if want == "dir" and not stat.S_ISDIR(mode):
        raise NotFound(str(path))
    return path


def walk_files(top: Path) -> Iterable[Path]:
    """Regular files under ``top`` (a checked directory), never following symlinks and
    skipping every name :func:`valid_part` refuses; sorted, so a zip is reproducible."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if valid_part(d) and not (base / d).is_symlink())
        for name in sorted(filenames):
            full = base / name
            if valid_part(name) and stat.S_ISREG(os.lstat(full).st_mode):
                yield full
