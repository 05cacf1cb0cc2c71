"""The consistency check on real nodes: one committed entry at which every replica logs the
digest of its state (``ukehi kv checksum``; judged by checkers/whitebox/digests.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from checkers.whitebox import check_replica_agreement
from ukehi.nodelog import parse_line
from cluster import REPO
from test_sharded_cluster import expected_map, keys_off, sharded, wait_all_shards_led


def digests(cluster, index: int, group: int = 0) -> dict[str, str]:
    out = {}
    for nid, node in cluster.nodes.items():
        for line in node.log_text().splitlines():
            if "event=state-digest" in line:
                e = parse_line(line)
                if int(e["index"]) == index and int(e.get("group") or 0) == group:
                    out[nid] = e["digest"]
    return out


def test_every_replica_logs_the_same_digest_and_a_restarted_one_too(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with cluster.client(timeout=5.0) as c:
            for i in range(30):
                assert (await c.put(f"k{i}", f"v{i}")).ok
            assert (await c.delete("k3")).ok
            first = await c.checksum()
        assert first.ok, first
        index, digest = first.value["index"], first.value["digest"]
        assert first.value["keys"] == 29
        await cluster.wait_converged(list(cluster.nodes))
        assert digests(cluster, index) == {"n1": digest, "n2": digest, "n3": digest}
        # a follower rebuilt from its WAL after kill -9 agrees at the next check
        st = await cluster.statuses()
        follower = next(n for n, s in st.items() if s["role"] != "leader")
        cluster.nodes[follower].kill9()
        cluster.nodes[follower].start()
        await cluster.wait_converged(list(cluster.nodes))
        async with cluster.client(timeout=5.0) as c:
            second = await c.checksum()
        assert second.ok and second.value["index"] > index
        await cluster.wait_converged(list(cluster.nodes))
        assert set(digests(cluster, second.value["index"]).values()) == {second.value["digest"]}
        logs = {n: [parse_line(l) for l in node.log_text().splitlines() if l.startswith("ts=")]
                for n, node in cluster.nodes.items()}
        verdict = check_replica_agreement(logs)
        assert verdict["valid"] is True and verdict["compared"] == 2, verdict

    asyncio.run(scenario())


def test_the_command_line_prints_the_leaders_digest(make_cluster):
    cluster = make_cluster(3)
    cluster.start()
    asyncio.run(cluster.wait_for_leader())
    out = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "checksum", "--cluster", ",".join(cluster.addresses)],
                         capture_output=True, text=True, timeout=30, cwd=REPO,
                         env={**os.environ, "UKEHI_TLS_DIR": cluster.certs_dir})
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert set(fields) == {"index", "digest", "keys"} and len(fields["digest"]) == 16
    assert digests(cluster, int(fields["index"])).get("n1") in (fields["digest"], None)


def test_a_sharded_cluster_checks_each_shard_group(make_cluster):
    cluster = sharded(make_cluster, 4)

    async def scenario() -> None:
        await wait_all_shards_led(cluster)
        smap = expected_map(cluster)
        async with cluster.client(timeout=5.0) as c:
            for key in keys_off("n1", smap, 6):
                assert (await c.put(key, "x")).ok
            answers = {s: await c.checksum(shard=s) for s in range(smap.shards)}
        assert all(r.ok for r in answers.values()), answers
        await asyncio.sleep(1.0)  # the followers apply the entries within a heartbeat or two
        for s, r in answers.items():
            got = digests(cluster, r.value["index"], group=s + 1)
            # every member of the shard (rf 3), and nobody else, logs that group's digest
            assert set(got) == set(smap.members[s]) and set(got.values()) == {r.value["digest"]}, (s, got)

    asyncio.run(scenario())
