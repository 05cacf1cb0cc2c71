"""Each CorruptionPolicy against a really corrupted WAL at start-up of a real node."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys

from cluster import REPO
from ukehi.nodelog import parse_line

ENTRY_CMD_OFFSET = 4 + 8 + 8 + 4  # entry_len, term, index, cmd_len: then the command bytes


def wal_entries(data_dir: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "ukehi.cli", "wal", "dump", os.path.join(data_dir, "group-0", "wal")],
        capture_output=True, text=True, cwd=REPO, timeout=30,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"segment"')]


def corrupt_entry(data_dir: str, position: float) -> dict:
    """Flip one byte inside the command of an entry `position` (0..1) of the way into the WAL."""
    entries = wal_entries(data_dir)
    assert len(entries) > 10, f"too few WAL entries to corrupt: {len(entries)}"
    victim = entries[int(len(entries) * position)]
    path = os.path.join(data_dir, "group-0", "wal", victim["segment"])
    with open(path, "r+b") as f:
        f.seek(victim["offset"] + ENTRY_CMD_OFFSET + 1)
        byte = f.read(1)
        f.seek(victim["offset"] + ENTRY_CMD_OFFSET + 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    return victim


def wal_digest(data_dir: str) -> dict[str, str]:
    wal_dir = os.path.join(data_dir, "group-0", "wal")
    return {
        name: hashlib.sha256(open(os.path.join(wal_dir, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(wal_dir))
    }


def events(log_text: str, event: str) -> list[dict[str, str]]:
    return [parse_line(l) for l in log_text.splitlines() if f"event={event}" in l and l.startswith("ts=")]


async def fill(cluster, n: int, tag: str) -> dict[str, str]:
    acked = {}
    async with cluster.client(timeout=5.0) as c:
        for i in range(n):
            r = await c.put(f"{tag}{i}", f"{tag}-value-{i}")
            assert r.ok, r
            acked[f"{tag}{i}"] = f"{tag}-value-{i}"
    return acked


async def check_all(cluster, acked: dict[str, str]) -> None:
    async with cluster.client(timeout=5.0) as c:
        for key, value in acked.items():
            r = await c.get(key)
            assert r.ok and r.value == value, (key, r)


def with_policy(node, policy: str) -> None:
    args = node.args
    if "--corruption-policy" in args:
        i = args.index("--corruption-policy")
        del args[i:i + 2]
    args += ["--corruption-policy", policy]


def test_corruption_policies_on_a_real_wal(make_cluster):
    cluster = make_cluster(3)
    cluster.start()
    n3 = cluster.nodes["n3"]

    async def scenario() -> None:
        await cluster.wait_for_leader()
        acked = await fill(cluster, 40, "a")
        await cluster.wait_converged(list(cluster.nodes))
        assert n3.terminate() == 0

        # --- RefuseStart: exits non-zero, names segment and offset, changes nothing.
        victim = corrupt_entry(n3.data_dir, 0.5)
        before = wal_digest(n3.data_dir)
        with_policy(n3, "refuse-start")
        n3.start()
        code = n3.wait_exit(20)
        text = n3.log_text()
        assert code == 4, text[-2000:]
        assert victim["segment"] in text and "offset" in text, text[-2000:]
        refused = events(text, "refuse-start")
        assert refused and victim["segment"] in refused[-1]["reason"]
        assert wal_digest(n3.data_dir) == before, "RefuseStart changed the WAL files"

        # --- AlertAndContinue: starts, reports the skipped entry, converges with the cluster.
        with_policy(n3, "alert-and-continue")
        n3.start()
        await cluster.wait_until(lambda st: "n3" in st and st["n3"]["phase"] == "running",
                                 20, "n3 to start", ["n3"])
        # n3 lost an entry it had acknowledged (the hole); new writes make the same leader
        # probe n3, believe its shorter log, and overwrite everything after the hole.
        acked.update(await fill(cluster, 10, "b"))
        await cluster.wait_converged(list(cluster.nodes), timeout=20)
        reports = events(n3.log_text(), "corruption-report")
        skipped = [r for r in reports if r.get("action") == "skipped"]
        assert skipped, reports
        assert skipped[-1]["segment"] == victim["segment"]
        assert int(skipped[-1]["offset"]) == victim["offset"]
        await check_all(cluster, acked)
        assert n3.terminate() == 0

        # --- TruncateToLastGood, alone: cut, report, recovering, no votes, no campaign.
        corrupt_entry(n3.data_dir, 0.3)
        with_policy(n3, "truncate-to-last-good")
        for nid in ("n1", "n2"):
            assert cluster.nodes[nid].terminate() == 0
        n3.start()
        first = await cluster.wait_until(lambda st: "n3" in st and st["n3"]["phase"] == "running",
                                         20, "n3 to start", ["n3"])
        st = first["n3"]
        assert st["recovering"] is True and st["refuse_votes_until"] > 0
        term0 = st["term"]
        await asyncio.sleep(1.5)  # several election timeouts
        st = (await cluster.statuses(["n3"]))["n3"]
        assert st["role"] == "follower" and st["term"] == term0, st
        text = n3.log_text()
        assert any(r.get("action") == "cut" for r in events(text, "corruption-report")), text[-2000:]
        assert events(text, "recovering")
        async with cluster.client([n3.address], timeout=1.0) as c:
            r = await c.request("put", {"key": "x", "value": 1}, target=n3.address)
            assert r.failed and r.error == "recovering"

        # The others come back: n3 catches up past the cut, votes again, converges.
        cluster.start(["n1", "n2"])
        await cluster.wait_for_leader()
        await cluster.wait_until(lambda st: "n3" in st and st["n3"]["recovering"] is False, 20,
                                 "n3 to finish recovering", ["n3"])
        await cluster.wait_converged(list(cluster.nodes), timeout=20)
        assert events(n3.log_text(), "recovered")
        await check_all(cluster, acked)

        # --- TruncateToLastGood while the rest of the cluster keeps its leader.
        assert n3.terminate() == 0
        corrupt_entry(n3.data_dir, 0.6)
        n3.start()
        acked.update(await fill(cluster, 10, "c"))
        await cluster.wait_until(lambda st: "n3" in st and st["n3"]["phase"] == "running"
                                 and st["n3"]["recovering"] is False, 20, "n3 to recover again", ["n3"])
        await cluster.wait_converged(list(cluster.nodes), timeout=20)
        assert len(events(n3.log_text(), "recovered")) == 2
        await check_all(cluster, acked)

    asyncio.run(scenario())
