"""Bring each node's files into the run directory, so checkers read only the run store.

Local nodes and Docker containers (a bind mount) already write into ``<run>/nodes/<node>/``.
A node whose directory lives elsewhere (an SSH host) has its data directory copied here
through the backend's own file verbs (``exec`` to list, ``read_file`` to fetch) at the end
of the run, before the backend removes it; the SSH backend copies ``node.log`` itself.
The white-box checkers (``checkers/whitebox``) then work offline, in ``analyze`` too.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

log = logging.getLogger("ukehi_jepsen.nodefiles")

DATA = "data"  # the node's data directory, relative to its workdir (harness/db.py data_dir)
LIST_TIMEOUT = 30.0


def _same_place(remote: Path, local: Path) -> bool:
    try:
        return remote.resolve() == local.resolve()
    except OSError:
        return False


def collect_node_files(handles: Iterable[Any], run_path: str | Path) -> dict[str, str]:
    """Copy every file of each node's data directory into ``<run>/nodes/<node>/data``.

    Never raises: a node whose files cannot be fetched is logged and named in the returned
    ``{node: what happened}``, and the checkers then find no data for it.
    """
    outcome: dict[str, str] = {}
    for handle in handles:
        name = handle.name
        local = Path(run_path) / "nodes" / name
        remote = PurePosixPath(str(handle.workdir))
        if _same_place(Path(str(handle.workdir)), local):
            outcome[name] = "in the run directory already"
            continue
        try:
            rc, out, err = handle.exec(["find", str(remote / DATA), "-type", "f"], timeout=LIST_TIMEOUT)
            if rc != 0:
                raise OSError(f"listing {remote / DATA} failed (exit {rc}): {err.strip()[:200]}")
            count = 0
            for line in out.splitlines():
                path = PurePosixPath(line.strip())
                try:
                    rel = path.relative_to(remote)
                except ValueError:
                    continue  # not under the node's directory: not ours to copy
                if ".." in rel.parts:
                    continue
                target = local / Path(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(handle.read_file(str(path)))
                count += 1
            outcome[name] = f"{count} file(s) copied"
        except Exception as exc:  # noqa: BLE001 - a run's verdict must not depend on a copy
            outcome[name] = f"not copied: {exc}"
            log.warning("could not copy %s's data directory into the run store: %s", name, exc)
    return outcome
