"""The sim's WAL-damage fault records each damaged restart against the process that restart
started, even when one damage's restart comes from an undo and the next damage follows
before the first one's timer has fired.

Found by the correct-build sweep (list-append seed 5574 on 45f3944, corruption-policy
"zero-chunk damage ... was not reported at all"): the damage token was ``("damaged", n)``, so
the timer of a damage an undo had already restarted found a later damage's equal token,
restarted the node as the earlier damage, recorded it a second time and rewrote its pid;
the later damage was then judged against a process that had read a WAL it never damaged.
"""

from __future__ import annotations

import asyncio
import random

from harness.sim.runner import SimSettings, _History, _Nemesis, _world_options, swarm
from ukehi.sim.world import SimWorld


class _FixedUniform(random.Random):
    """An RNG whose ``uniform`` (the restart delay's factor) returns the next queued value."""

    def __init__(self, factors: list[float], seed: int) -> None:
        super().__init__(seed)
        self.factors = list(factors)

    def uniform(self, a: float, b: float) -> float:
        return self.factors.pop(0) if self.factors else super().uniform(a, b)


def test_an_earlier_damage_timer_does_not_restart_a_later_damage():
    settings = SimSettings(workload="register", nemeses=("damage",),
                           node_options=(("corruption_policy", "truncate-to-last-good"),))
    opts = swarm(1, settings)
    opts.update(nodes=3, founders=3, quick_restart=1.0, loss=0.0, duplicate=0.0)
    world = SimWorld(1, _world_options(opts, settings))
    hist = _History(world)
    nemesis = _Nemesis(world, hist, opts, random.Random(3))
    el = opts["election_ms"][0] / 1000.0
    starts: list[tuple[float, int | None]] = []

    async def scenario() -> None:
        for n in world.names:
            world.start(n)
        await asyncio.sleep(3 * opts["election_ms"][1] / 1000.0)  # an election: WAL entries on every node
        # Each damage's own timer would restart its node 1.5 x el after it.
        nemesis.rng = _FixedUniform([1.5], 7)
        damaged_at = world.now()
        nemesis._damage()
        victim = nemesis.damaged
        assert victim is not None, "nothing to damage: no entry was written"
        nemesis.undo(nemesis.active.pop(0))  # an undo restarts damage 1 first
        starts.append((world.now(), world.nodes[victim].current.node.pid))
        # Until the restarted node (its WAL cut) has entries again from the leader, and its
        # restart was recorded; well before damage 1's timer.
        for _ in range(200):
            if world.now() - damaged_at > 1.2 * el:
                break
            segs = [p for p in world.fs.files(world.nodes[victim].prefix) if p.endswith(".seg")]
            recorded = any(o.f == "corrupt-wal" and o.type == "info" for o in hist.ops)
            if recorded and any(len(world.fs.read_bytes(p) or b"") > 13 for p in segs):
                break
            await asyncio.sleep(0.01)
        nemesis.rng = _FixedUniform([1.5], 1)  # draws a bit flip: fits a log of one entry
        nemesis._damage()  # damage 2, before damage 1's timer fires
        assert len(nemesis.active) == 1, "damage 2 did not happen"
        await asyncio.sleep(damaged_at + 1.6 * el - world.now())  # damage 1's stale timer fired
        starts.append((world.now(), world.nodes[victim].current.node.pid if world.nodes[victim].up else None))
        await asyncio.sleep(1.5 * el)  # damage 2's own timer restarts it
        await asyncio.sleep(0.5)
        nemesis.heal_all()
        await asyncio.sleep(0.2)
        await world.stop_all()

    world.run(scenario())
    records = [o.value["nodes"] for o in hist.ops if o.f == "corrupt-wal" and o.type == "info"]
    assert len(records) == 2, records  # one record per damage (before: damage 1 twice)
    assert all(records), records  # both damages were applied (none read as a crash tail)
    (n1, first), = records[0].items()
    (n2, second), = records[1].items()
    assert n1 == n2
    # Damage 1's record keeps the pid its own restart started.
    assert first["pid"] == starts[0][1]
    # Damage 2's node stayed down until its own restart: no process of it ran in between.
    assert starts[1][1] is None, "an earlier damage's timer restarted the node during damage 2"
    assert second["pid"] > first["pid"] and second["started"] is True
    assert first["changes"] != second["changes"]


# ---------------------------------------------------------------- damage a crash could explain

def _segment(n: int) -> bytes:
    from ukehi.storage.format import WalEntry, encode_entry, encode_header

    return encode_header(1) + b"".join(encode_entry(WalEntry(1, i, b"put k%d" % i, (1 << 32) | i))
                                       for i in range(1, n + 1))


def test_damage_that_reads_as_a_crash_tail_is_told_apart_from_damage_replay_sees():
    from harness.sim.runner import _replay_sees_damage

    seg = _segment(4)
    last = len(seg) - len(_segment(4)) + len(_segment(3))  # start of entry 4, the last
    zero_to_end = seg[:last] + bytes(len(seg) - last)  # entry 4 zeroed to the end of the file
    assert not _replay_sees_damage({"wal-00000001.seg": zero_to_end})
    # Zeroed after its length field, the frame is whole but wrong: corruption, not a crash.
    assert _replay_sees_damage({"wal-00000001.seg": seg[:last + 4] + bytes(len(seg) - last - 4)})
    only = _segment(1)  # sim seed 4551: the one entry of a segment zeroed whole
    assert not _replay_sees_damage({"wal-00000001.seg": only[:12] + bytes(len(only) - 12)})
    length_past_end = bytearray(seg)
    length_past_end[last + 2] ^= 0x10  # entry 4's length now runs past the file: a torn write
    assert not _replay_sees_damage({"wal-00000001.seg": bytes(length_past_end)})
    mid = bytearray(seg)
    mid[12 + 30] ^= 0x01  # a bit of entry 1: the CRC sees it
    assert _replay_sees_damage({"wal-00000001.seg": bytes(mid)})
    # The same zeroed tail in a segment that is not the last: never a crash's.
    later = _segment(5)[:12].replace(b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", 1)
    assert _replay_sees_damage({"wal-00000001.seg": zero_to_end, "wal-00000002.seg": later})


def test_the_sim_applies_no_damage_that_replay_would_cut_as_a_crash_tail():
    # Seeds 209, 231 and 237 (these settings) each made one before: a zeroed chunk reaching
    # the end of the last segment, a bit flip or copied chunk in the last entry read as torn;
    # the node dropped entries it had acknowledged and the policy checker had to excuse it.
    informational = {"torn-tail", "zero-filled-tail"}
    settings = SimSettings(workload="register", nemeses=("damage", "partition"), duration=6.0)
    judged = 0
    for seed in (209, 231, 237):
        from harness.sim.runner import run_seed

        r = run_seed(seed, settings)
        for e in (r.checkers.get("corruption-policy") or {}).get("nodes", {}).values():
            for f in e["faults"]:
                if f["observed"]:
                    judged += 1
                    kinds = {x["kind"] for x in f["observed"]["reports"]}
                    assert kinds - informational, (seed, f["observed"])
        assert r.valid is True, (seed, r.failing_checkers())
    assert judged >= 3
