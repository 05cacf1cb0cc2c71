"""At most K replica moves in flight in the whole cluster (--max-moves), exact because a move
is recorded by a compare-and-set on the shard map."""

from __future__ import annotations

import asyncio

import pytest

from ukehi.client import UkehiClient
from ukehi.config import ConfigError, build_config
from ukehi.shardmap import ShardMap
from test_shard_moves import RF, SHARDS, leader_of, wait_all_shards_led


def test_a_second_move_waits_for_the_first_when_the_limit_is_one(make_cluster):
    cluster = make_cluster(4, extra_args=["--shards", str(SHARDS), "--replication-factor", str(RF),
                                          "--max-moves", "1"], tls=False)
    cluster.start()
    smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
    missing = {s: next(n for n in cluster.nodes if n not in smap.members[s]) for s in range(SHARDS)}
    first = 0
    dst = missing[first]
    second = next(s for s in range(SHARDS) if missing[s] != dst)
    dst2 = missing[second]

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster)
        src = next(n for n in smap.members[first] if n != leader_of(statuses, first))
        src2 = next(n for n in smap.members[second] if n != leader_of(statuses, second) and n != dst)
        cluster.nodes[dst].kill9()  # the first move's learner cannot catch up: it stays in flight
        up = [n for n in cluster.nodes if n != dst]
        async with UkehiClient([cluster.nodes[n].address for n in up], timeout=60.0) as admin:
            move = asyncio.create_task(admin.move_replica(first, src, dst, timeout=60.0))
            await cluster.wait_until(lambda st: len(st) == len(up) and all(s.get("moves") for s in st.values()),
                                     20.0, "every running node to know the first move from the map", up)
            refused = await admin.move_replica(second, src2, dst2, timeout=20.0)
            assert not refused.ok and refused.error == "cas_failed", refused
            assert "at most 1 at once (--max-moves)" in refused.message, refused.message
            assert f"shard {first} {src}->{dst}" in refused.message, refused.message
            cluster.nodes[dst].start()
            done = await move
            assert done.ok, (done, cluster.tails())
            again = await admin.move_replica(second, src2, dst2, timeout=60.0)
            assert again.ok, (again, cluster.tails())
            assert dst2 in again.value["members"] and src2 not in again.value["members"]

    asyncio.run(scenario())


def test_max_moves_is_checked_and_needs_shards(tmp_path):
    base = {"id": "n1", "listen": "127.0.0.1:7001", "peers": "n1=127.0.0.1:7001", "data_dir": str(tmp_path),
            "insecure": True}
    with pytest.raises(ConfigError, match="--max-moves only applies to a sharded cluster"):
        build_config({**base, "max_moves": 3})
    with pytest.raises(ConfigError, match="--max-moves must be a whole number >= 1"):
        build_config({**base, "shards": 4, "replication_factor": 1, "max_moves": 0})
    assert build_config({**base, "shards": 4, "replication_factor": 1}).max_moves == 2
