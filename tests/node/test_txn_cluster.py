"""append and txn on a real 3-node cluster: one entry per transaction, replies carry the
log index, read-only transactions go through ReadIndex, and `ukehi kv txn` works."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys


async def _transactions(cluster) -> None:
    await cluster.wait_for_leader()
    async with cluster.client() as c:
        r = await c.append("x", 1)
        assert r.ok and isinstance(r.value["index"], int), r
        first = r.value["index"]
        r = await c.txn([["r", "x", None], ["append", "x", 2], ["w", "y", "v"], ["r", "x", None]])
        assert r.ok, r
        assert r.value["ops"] == [["r", "x", [1]], ["append", "x", 2], ["w", "y", "v"], ["r", "x", [1, 2]]]
        assert r.value["index"] > first
        ro = await c.txn([["r", "x", None], ["r", "y", None], ["r", "absent", None]])
        assert ro.ok and ro.value == {"ops": [["r", "x", [1, 2]], ["r", "y", "v"], ["r", "absent", None]]}
        # concurrent transactions get distinct indices and each sees a prefix of the final list
        results = await asyncio.gather(*(c.txn([["append", "z", i], ["r", "z", None]]) for i in range(20)))
        assert all(r.ok for r in results)
        indexes = [r.value["index"] for r in results]
        assert len(set(indexes)) == 20
        final = (await c.txn([["r", "z", None]])).value["ops"][0][2]
        assert sorted(final) == list(range(20))
        by_index = [r.value["ops"][0][2] for r in sorted(results, key=lambda r: r.value["index"])]
        assert by_index == final  # the log order is the list order
        for r in results:
            seen = r.value["ops"][1][2]
            assert seen == final[:len(seen)] and seen[-1] == r.value["ops"][0][2]
        refused = await c.txn([["w", "s", 1], ["append", "s", 2]])
        assert refused.failed and refused.error == "bad_request"
        assert (await c.get("s")).value is None
    # a follower's state matches after convergence: the transactions were replicated
    await cluster.wait_converged(list(cluster.nodes))


def test_transactions_on_a_real_cluster(make_cluster):
    cluster = make_cluster(3)
    cluster.start()
    asyncio.run(_transactions(cluster))
    env = {**os.environ, "UKEHI_TLS_DIR": cluster.certs_dir}  # the cluster's client certificates
    done = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "txn", "r:x", "append:x:3", "r:x", "--json",
                           "--cluster", ",".join(cluster.addresses)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["value"]["ops"] == [["r", "x", [1, 2]], ["append", "x", 3], ["r", "x", [1, 2, 3]]]
    human = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "txn", "r:x", "w:y:hello",
                            "--cluster", ",".join(cluster.addresses)],
                           capture_output=True, text=True, timeout=60, env=env)
    assert human.returncode == 0 and "r x [1, 2, 3]" in human.stdout and "w y \"hello\"" in human.stdout
    assert "index: " in human.stdout
    bad = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "txn", "inc:x:1",
                          "--cluster", cluster.addresses[0]], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 254 and "r:KEY" in bad.stderr
