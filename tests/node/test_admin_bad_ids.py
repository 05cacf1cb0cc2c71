"""Admin requests naming an unusable node id, on real processes: each is answered
``bad_request`` with a message saying what a node id may be, before anything is written.

Before the fix, ``add_node`` with a 300-character id wrote its address key through Raft
first, then built the ``ConfChange`` whose own check (``ukehi.raft.types.check_node_id``,
at most 256 characters) raised outside the admin's error handling: the client got
``internal`` (outcome unknown), the node logged ``level=error event=request-failed``, and
the address key stayed behind in every replica.
"""

from __future__ import annotations

import asyncio

from ukehi import wire
from ukehi.node.driver import ADDRESS_KEY_PREFIX
from ukehi.raft.types import MAX_NODE_ID_LEN

LONG = "x" * 300
UNSTARTABLE = "y" * 65  # within the core's bound, beyond what `ukehi node --id` accepts
NOWHERE = "127.0.0.1:1"  # a valid address: only the id is wrong


def test_bad_node_ids_are_refused_before_anything_is_written(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        founders = ["n1", "n2", "n3"]
        await cluster.wait_converged(founders)
        before = (await cluster.statuses([leader]))[leader]
        async with cluster.client([cluster.nodes[leader].address], timeout=10.0) as c:
            answers = {
                "add-long": await c.add_node(LONG, NOWHERE),
                "add-unstartable": await c.add_node(UNSTARTABLE, NOWHERE),
                "add-empty": await c.add_node("", NOWHERE),
                "add-colon": await c.add_node("n:9", NOWHERE),
                "add-tab": await c.add_node("n\t9", NOWHERE),
                "remove-long": await c.remove_node(LONG),
                "remove-empty": await c.remove_node(""),
                "remove-nobody": await c.remove_node("nobody"),
                "transfer-long": await c.transfer_leader(LONG),
                "transfer-nobody": await c.transfer_leader("nobody"),
            }
            for what, r in answers.items():
                assert r.failed and r.error == wire.ErrorCode.BAD_REQUEST.value, (what, r)
                assert r.message and len(r.message) < 400, (what, r)  # says why, without echoing 300 chars
            for what in ("add-long", "add-empty", "remove-long", "transfer-long"):
                # what a node id may be, from the one validator, and the admin's own rule
                message = answers[what].message
                assert f"at most {MAX_NODE_ID_LEN} chars" in message and "':'" in message, (what, message)
                assert "nothing was done" in message, (what, message)
            assert "(300 chars)" in answers["add-long"].message
            assert "64 characters `ukehi node --id` accepts" in answers["add-unstartable"].message
            assert "':'" in answers["add-colon"].message and "':'" in answers["add-tab"].message
            assert "not a member" in answers["remove-nobody"].message
            assert "not a voter" in answers["transfer-nobody"].message
            # nothing written: no address key, and the leader's log did not grow
            for node in (LONG, UNSTARTABLE, "", "n:9", "n\t9"):
                got = await c.get(ADDRESS_KEY_PREFIX + node)
                assert got.ok and got.value is None, (node, got)
        after = (await cluster.statuses([leader]))[leader]
        assert after["role"] == "leader" and after["term"] == before["term"]
        assert after["commit_index"] == before["commit_index"], (before, after)
        for s in (await cluster.statuses(founders)).values():
            assert sorted(s["members"]) == founders and not s["learners"] and not s["joint"], s

    asyncio.run(scenario())
    for node in cluster.nodes.values():
        errors = [line for line in node.log_text().splitlines() if "level=error" in line]
        assert not errors, (node.node_id, errors[:3])
