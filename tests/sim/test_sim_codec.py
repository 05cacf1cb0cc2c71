"""The simulator hands most Raft messages over as objects and samples the wire codec
(ukehi.sim.world): the sampled share really goes through encode -> bytes -> decode ->
validate, and a bug in the codec real nodes run is still caught."""

from __future__ import annotations

import pytest

from harness.sim.runner import SimSettings, run_seed
from ukehi.node import driver
from ukehi.sim.world import SimWorld, WorldOptions


def _elect(opts: WorldOptions) -> SimWorld:
    world = SimWorld(5, opts)
    for n in world.names:
        world.start(n)
    world.run_until(8.0)
    return world


def _leaders(world: SimWorld) -> list[str]:
    return [n for n, h in world.nodes.items()
            if h.current is not None and h.current.node is not None and h.current.node.core is not None
            and h.current.node.core.role.name == "LEADER"]


@pytest.mark.parametrize("every", [1, 8])
def test_sampled_messages_go_through_the_codec_and_the_cluster_works_either_way(every):
    world = _elect(WorldOptions(wire_every=every))
    try:
        assert len(_leaders(world)) == 1
        assert world.messages_sent > 50
        if every == 1:
            assert world.messages_coded == world.messages_sent
        else:
            # Each message drawn with p = 1/8: far from none and far from all.
            assert 0.05 * world.messages_sent < world.messages_coded < 0.3 * world.messages_sent
    finally:
        world.run(world.stop_all())


def test_wire_every_is_drawn_per_seed_and_bad_values_are_refused():
    drawn = {SimWorld(s, WorldOptions()).wire_every for s in range(40)}
    assert drawn == {1, 8}
    with pytest.raises(ValueError, match="wire_every must be 1 or more"):
        SimWorld(0, WorldOptions(wire_every=0))


def test_a_codec_bug_that_corrupts_entries_on_the_wire_is_caught(monkeypatch):
    # A mutant in the real encoder (driver.encode_message -> message_to_dict): the last
    # entry of an append is sent with other bytes. Seed 0 samples 1 message in 8 (not all),
    # so this also shows the sampling leaves such a bug visible.
    real = driver.message_to_dict

    def corrupting(m):
        d = real(m)
        if d["type"] == "append_entries" and d["entries"] and d["entries"][-1][3]:
            e = list(d["entries"][-1])
            e[3] = bytes(reversed(e[3])) + b"!"
            d["entries"] = [*d["entries"][:-1], e]
        return d

    assert SimWorld(0, WorldOptions()).wire_every == 8
    monkeypatch.setattr(driver, "message_to_dict", corrupting)
    r = run_seed(0, SimSettings(duration=4.0))
    assert r.failed, r.checkers
    assert "state-machine-safety" in r.failing_checkers()
