"""UkehiDB whose nodes keep their data directories on LazyFS (used with --nemesis lazyfs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..db import DBError, UkehiDB
from .mount import LazyMount


@dataclass
class LazyUkehiDB(UkehiDB):
    """Each node's data dir is a LazyFS mount over ``<workdir>/data.lazyfs-backing``.

    Mounted before the node's first start (and again if the daemon died), unmounted after
    the nodes stop. The backing directory keeps the node's data after the run.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lazy_mounts: dict[str, LazyMount] = {}

    def _ensure_mounted(self, name: str) -> None:
        mount = self.lazy_mounts.get(name)
        if mount is not None and mount.mounted:
            return
        workdir = Path(self.nodes[name].workdir)
        mount = LazyMount(workdir / "data.lazyfs-backing", self.data_dir(name), workdir / "lazyfs.log")
        mount.mount()
        self.lazy_mounts[name] = mount

    def start(self, name: str) -> int:
        self._ensure_mounted(name)
        return super().start(name)

    def drop_unfsynced(self, name: str) -> dict[str, Any]:
        """Lose the node's writes that were never fsynced (call it with the node dead)."""
        mount = self.lazy_mounts.get(name)
        if mount is None or not mount.mounted:
            raise DBError(f"node {name} has no live lazyfs mount (see {self.nodes[name].workdir}/lazyfs.log)")
        return mount.drop()

    def stop_all(self) -> None:
        try:
            super().stop_all()
        finally:
            for mount in self.lazy_mounts.values():
                mount.unmount()
            self.lazy_mounts.clear()
