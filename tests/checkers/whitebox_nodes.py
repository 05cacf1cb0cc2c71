"""Hand-made node directories for the white-box checker tests.

Files are written with the node's own storage writers (ukehi.storage: WAL, HardStateFile,
SnapshotStore) and its logfmt formatter, in the run-store layout
``<run>/nodes/<node>/{node.log, data/group-0/...}``, so the checkers read them exactly as
they read a real run's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from checkers.history import Op
from ukehi.kv import encode_command
from ukehi.nodelog import format_line
from ukehi.storage import CorruptionPolicy, HardState, HardStateFile, Snapshot, SnapshotStore, WAL, WalEntry

PEERS = "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003"
NOOP = b"\x01"


def put(key: str, value: Any) -> bytes:
    return b"\x00" + encode_command({"op": "put", "key": key, "value": value})


def acquire(lock: str, owner: str) -> bytes:
    return b"\x00" + encode_command({"op": "acquire", "lock": lock, "owner": owner, "ttl_ms": 500, "now_ms": 1})


def token(term: int, seq: int) -> int:
    return (term << 32) | seq


@dataclass(frozen=True)
class E:
    """An entry to write: (index, term, command, token)."""

    index: int
    term: int
    command: bytes
    token: int


def term_entries(term: int, first: int, commands: Iterable[bytes], seq: int = 1) -> list[E]:
    """Entries a leader of TERM appends from index FIRST: its tokens count from SEQ."""
    return [E(first + i, term, c, token(term, seq + i)) for i, c in enumerate(commands)]


class Node:
    """One node's directory under ``<run>/nodes/<name>``."""

    def __init__(self, run: Path, name: str) -> None:
        self.name = name
        self.dir = run / "nodes" / name
        self.group = self.dir / "data" / "group-0"
        self.lines: list[str] = []
        self.clock = 1_800_000_000.0
        self.pid = 100

    # -- files ------------------------------------------------------------------------
    def wal(self, entries: Iterable[E]) -> "Node":
        wal, _ = WAL.open(str(self.group / "wal"), CorruptionPolicy.TruncateToLastGood)
        with wal:
            wal.append([WalEntry(e.term, e.index, e.command, e.token) for e in entries], sync=True)
        return self

    def hard_state(self, term: int, commit: int, vote: str | None = None) -> "Node":
        self.group.mkdir(parents=True, exist_ok=True)
        HardStateFile(str(self.group / "hardstate")).save(HardState(term, vote, commit))
        return self

    def snapshot(self, index: int, term: int, voters: Iterable[str] = ("n1", "n2", "n3")) -> "Node":
        store = SnapshotStore(str(self.group / "snap"))
        store.save(Snapshot(index, term, b"", {"voters": sorted(voters), "outgoing": [], "learners": []}))
        return self

    # -- log lines --------------------------------------------------------------------
    def log(self, event: str, level: str = "info", **fields: Any) -> "Node":
        self.clock += 0.01
        self.lines.append(format_line(level, self.name, event, fields, self.clock))
        return self

    def start(self, *, policy: str = "truncate-to-last-good", join: bool = False, entries: int = 0,
              snapshot_index: int = 0, term: int = 0, commit: int = 0, last_index: int | None = None) -> "Node":
        self.pid += 1
        self.log("starting", pid=self.pid, policy=policy, join=join, peers=PEERS)
        return self.log("replay-done", entries=entries, snapshot_index=snapshot_index, term=term, commit=commit,
                        last_index=last_index if last_index is not None else entries + snapshot_index)

    def applied(self, entries: Iterable[E]) -> "Node":
        entries = list(entries)
        return self.log("applied", first=entries[0].index, last=entries[-1].index,
                        entries=",".join(f"{e.term}.{zlib.crc32(e.command):08x}" for e in entries))

    def leader(self, term: int) -> "Node":
        return self.log("became-leader", term=term, leader=self.name, role="leader")

    def follower(self, term: int, leader: str | None) -> "Node":
        return self.log("became-follower", term=term, leader=leader, role="follower")

    def shutdown(self, applied: int) -> "Node":
        return self.log("shutdown", applied=applied)

    def write_log(self, extra: str = "") -> "Node":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "node.log").write_text("\n".join(self.lines) + "\n" + extra, encoding="utf-8")
        return self


def ok_write(index: int, key: int, value: Any, process: int = 0) -> list[Op]:
    """An invoke/ok pair of a register write (history key K is node key register/K)."""
    return [Op(index, index * 10, process, "invoke", "write", key, value),
            Op(index + 1, index * 10 + 5, process, "ok", "write", key, value)]


# The healthy cluster every test starts from: n1 leads term 1; every node holds, has
# committed and has applied the no-op and five puts (register/1 .. register/5 = 10 .. 50).
LOG = term_entries(1, 1, [NOOP] + [put(f"register/{k}", k * 10) for k in range(1, 6)])
HISTORY = [op for k in range(1, 6) for op in ok_write(k * 2, k, k * 10, process=k)]


def healthy(run: Path, names: Iterable[str] = ("n1", "n2", "n3")) -> dict[str, Node]:
    """Write the healthy cluster's files, logs not yet written (call ``write_log``)."""
    nodes = {}
    for name in names:
        node = Node(run, name).wal(LOG).hard_state(1, 6, "n1")
        node.start()
        if name == "n1":
            node.leader(1)
        else:
            node.follower(1, "n1")
        node.applied(LOG)
        nodes[name] = node
    return nodes


def write_all(nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        node.write_log()


def corrupt(node: Node, index: int) -> None:
    """Flip a byte inside entry INDEX of NODE's WAL (its CRC then fails)."""
    from ukehi.storage import scan_wal

    scan = scan_wal(str(node.group / "wal"), with_locations=True)
    for entry, (segment, offset, _version) in zip(scan.entries, scan.locations or []):
        if entry.index == index:
            path = node.group / "wal" / segment
            data = bytearray(path.read_bytes())
            data[offset + 4 + 20] ^= 0xFF  # first byte of the command
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no index {index} in {node.name}'s WAL")
