"""The disk nemesis: its damage is exactly what it records, and it acts on a real node's WAL.

The unit tests damage synthetic WAL segments and check every recorded change against the
bytes; the scanner (ukehi.storage) then tells which damage a policy must decide about. The
cluster test stops a real 3-node cluster, copies every WAL, lets the package damage and
restart a victim under RefuseStart, and compares the files with the copies.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from checkers.history import Op
from checkers.policy import check_policy
from harness.backends.local import LocalCluster
from harness.db import UkehiDB
from harness.registry import parse_nemeses
from harness.run import RunContext
from nemeses import disk
from ukehi.client import UkehiClient
from ukehi.storage.format import HEADER_SIZE, WalEntry, encode_entry, encode_header
from ukehi.storage.policy import CorruptionPolicy
from ukehi.storage.scan import scan_wal


def segment(entries: int = 40, segment_id: int = 1) -> bytes:
    body = b"".join(encode_entry(WalEntry(1, i, f"command {i} ".encode() * (1 + i % 3), (1 << 32) + i))
                    for i in range(1, entries + 1))
    return encode_header(segment_id) + body


def apply_changes(original: bytes, changes: list[dict[str, Any]]) -> bytes:
    """Rebuild the damaged file from the original and the record alone."""
    out = bytearray(original)
    for change in sorted(changes, key=lambda c: c["offset"], reverse=True):
        at, before = change["offset"], bytes.fromhex(change["before"])
        assert out[at:at + len(before)] == before, f"recorded 'before' bytes at {at} are not the file's"
        out[at:at + change["before_len"]] = bytes.fromhex(change["after"])
    return bytes(out)


def changed_offsets(a: bytes, b: bytes) -> set[int]:
    return {i for i in range(min(len(a), len(b))) if a[i] != b[i]}


@pytest.mark.parametrize("kind", disk.KINDS)
def test_damage_changes_exactly_the_recorded_bytes(kind: str) -> None:
    original = segment()
    for seed in range(25):
        hit = disk.damage(original, kind, random.Random(seed))
        assert hit.data != original
        assert apply_changes(original, hit.changes) == hit.data
        recorded = {c["offset"] + i for c in hit.changes for i in range(c["after_len"])}
        if kind in disk.MID_LOG_KINDS:
            assert len(hit.data) == len(original)
            # Every differing byte is inside a recorded change, and the header is never touched.
            assert changed_offsets(original, hit.data) <= recorded
            assert changed_offsets(original, hit.data), "an in-place change must change something"
            assert all(c["offset"] >= HEADER_SIZE for c in hit.changes)
        else:
            (cut,) = hit.changes
            assert hit.data == original[:cut["offset"]] and cut["before_len"] == len(original) - cut["offset"]
            assert cut["offset"] >= HEADER_SIZE


def test_torn_tail_cuts_inside_the_last_entry_and_every_policy_sees_a_crash_tail(tmp_path: Path) -> None:
    original = segment()
    last = disk.entry_starts(original)[-1]
    for seed in range(10):
        hit = disk.damage(original, "torn-tail", random.Random(seed))
        assert last < len(hit.data) < len(original)
        wal = tmp_path / f"s{seed}"
        wal.mkdir()
        (wal / "wal-00000001.seg").write_bytes(hit.data)
        report = scan_wal(str(wal), CorruptionPolicy.RefuseStart).report
        assert report.clean and [f.kind for f in report.findings] == ["torn-tail"], report.summary()


@pytest.mark.parametrize("kind", disk.MID_LOG_KINDS)
def test_mid_log_damage_is_corruption_a_policy_must_decide_about(tmp_path: Path, kind: str) -> None:
    # The matrix relies on this: its damage always reaches the policy (never a silent read).
    original = segment()
    for seed in range(20):
        wal = tmp_path / f"{kind}-{seed}"
        wal.mkdir()
        (wal / "wal-00000001.seg").write_bytes(disk.damage(original, kind, random.Random(seed)).data)
        report = scan_wal(str(wal), CorruptionPolicy.AlertAndContinue).report
        assert report.findings, f"{kind} seed {seed}: the scanner saw nothing"


def test_targets_name_nested_victim_counts_and_bad_arguments_say_what_to_give() -> None:
    assert [disk.victim_count(t, 5) for t in ("one", "minority", "majority", "all")] == [1, 2, 3, 5]
    assert [disk.victim_count(t, 3) for t in ("one", "minority", "majority")] == [1, 1, 2]
    with pytest.raises(ValueError, match="choose from"):
        disk.package(object(), targets=("leader",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="choose from"):
        disk.package(object(), kinds=("melt",))  # type: ignore[arg-type]
    with pytest.raises(disk.DiskFaultError, match="no entries"):
        disk.damage(encode_header(1), "bitflip", random.Random(0))
    with pytest.raises(ValueError, match="variants of one fault"):
        parse_nemeses("disk,disk-majority")


# ---------------------------------------------------------------------------- real cluster


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _fill(db: UkehiDB, count: int) -> None:
    async with UkehiClient(db.addresses(), timeout=5.0) as client:
        for i in range(count):
            result = await client.put(f"k{i % 7}", f"value-{i}-" + "x" * (i % 13))
            assert result.ok, result


def _wals(cluster: LocalCluster) -> dict[str, dict[str, bytes]]:
    return {name: {seg: node.read_file(disk.wal_path(node, seg)) for seg in disk.list_segments(node)}
            for name, node in cluster.nodes.items()}


def test_refused_restart_leaves_the_damage_exactly_as_recorded(tmp_path: Path) -> None:
    with LocalCluster(["n1", "n2", "n3"], results_dir=tmp_path) as cluster:
        db = UkehiDB(cluster, corruption_policy="refuse-start")
        ctx = RunContext(cluster, db)
        try:
            db.start_all()
            _run(db.wait_for_leader())
            _run(_fill(db, 60))
            db.stop_all()  # stopped before the copy, so nothing writes between copy and damage
            pristine = _wals(cluster)
            for round_, kind in enumerate(disk.MID_LOG_KINDS):
                pkg = disk.package(ctx, targets=("one",), kinds=(kind,))
                op = pkg.generator(random.Random(round_))
                value = _run(pkg.invoke(op))
                (victim,) = value["victims"]
                record = value["nodes"][victim]
                node = cluster.nodes[victim]
                # The policy did its job: exit 4, files untouched, node left down.
                assert record["started"] is False and record["exit_code"] == 4, record
                assert record["refused"] and record["wal_unchanged"] is True
                assert not node.is_running()
                now = _wals(cluster)
                before = pristine[victim][record["segment"]]
                after = now[victim][record["segment"]]
                recorded = {c["offset"] + i for c in record["changes"] for i in range(c["after_len"])}
                assert changed_offsets(before, after) and changed_offsets(before, after) <= recorded
                assert apply_changes(before, record["changes"]) == after
                assert record["file"].endswith(record["segment"])
                # Nothing else on any node changed.
                for name in cluster.nodes:
                    for seg, data in now[name].items():
                        if (name, seg) != (victim, record["segment"]):
                            assert data == pristine[name][seg], (name, seg)
                # The final heal does not pretend the refused node is up.
                healed = _run(pkg.invoke(pkg.final()[0]))
                assert victim in healed["down"] and healed["restarted"] == {}
                assert not node.is_running()
                # The conformance checker reads the same story from the node's log.
                history = [Op(index=1, time=1, process="nemesis", type="info", f=disk.CORRUPT, value=value)]
                verdict = check_policy(history, {victim: node.workdir / "node.log"}, "refuse-start")
                assert verdict["valid"] is True, verdict["explanation"]
                # Put the pristine WAL back for the next kind.
                node.write_file(disk.wal_path(node, record["segment"]), before)
        finally:
            db.stop_all()


class FileNode:
    """A stopped node's files in a temp dir, behind the verbs the package uses."""

    def __init__(self, workdir: Path) -> None:
        self.name, self.workdir = "n1", workdir

    def exec(self, argv: list[str], timeout: float = 10.0) -> tuple[int, str, str]:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.workdir)
        return done.returncode, done.stdout, done.stderr

    def read_file(self, path: str) -> bytes:
        return (self.workdir / path).read_bytes()

    def write_file(self, path: str, data: bytes) -> None:
        (self.workdir / path).write_bytes(data)


def test_segment_choice_across_several_segments_and_the_record_digests(tmp_path: Path) -> None:
    node = FileNode(tmp_path)
    wal = tmp_path / disk.WAL_DIR
    wal.mkdir(parents=True)
    for seg_id in (3, 4, 5):
        (wal / f"wal-{seg_id:08}.seg").write_bytes(segment(20, seg_id))
    (wal / "notes.txt").write_text("not a segment")
    assert disk.list_segments(node) == ["wal-00000003.seg", "wal-00000004.seg", "wal-00000005.seg"]
    assert disk.corrupt_node(node, "bitflip", "first", random.Random(1))["segment"] == "wal-00000003.seg"
    # A torn tail can only be the newest segment's, whatever was asked.
    torn = disk.corrupt_node(node, "torn-tail", "first", random.Random(2))
    assert torn["segment"] == "wal-00000005.seg" and torn["size_after"] < torn["size_before"]
    picked = {disk.corrupt_node(node, "zero-chunk", "random", random.Random(s))["segment"] for s in range(12)}
    assert len(picked) >= 2
    named = disk.corrupt_node(node, "copy-chunk", "wal-00000004.seg", random.Random(3))
    assert named["segment"] == "wal-00000004.seg"
    assert named["wal_after"] == disk.wal_digest(node) and len(named["wal_after"]) == 3
    with pytest.raises(disk.DiskFaultError, match="is not on the node"):
        disk.corrupt_node(node, "bitflip", "wal-00000009.seg", random.Random(0))
    empty = FileNode(tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    with pytest.raises(disk.DiskFaultError, match="cannot list the WAL"):
        disk.corrupt_node(empty, "bitflip", "random", random.Random(0))
