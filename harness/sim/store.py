"""Store a simulated run in the results store exactly like a real run.

``results/sim-<workload>/<timestamp>/``: ``test.json`` (a TestSpec ``analyze`` can read,
plus a ``simulated`` block: seed, settings, swarm options, digest, replay command),
``history.jsonl``, ``nodes/<node>/{node.log,data/}``, ``sim.json`` (faults, digest) and
what ``check_run`` writes (``results.json``, plots, timeline, counterexample page).

``test.json`` says ``backend: local``: TestSpec only knows real backends, so the
``simulated`` block is what marks the run as one from the simulator.
"""

from __future__ import annotations

import shlex
from typing import Any

from .runner import SimResult, SimSettings, availability_inputs, history_text, settings_dict


def replay_command(seed: int, settings: SimSettings, schedule: str | None = None) -> str:
    parts = ["ukehi-jepsen", "sim", "--seed", str(seed), "--workload", settings.workload,
             "--nemesis", ",".join(settings.nemeses), "--duration", f"{settings.duration:g}"]
    for k, v in settings.node_options:
        parts += ["--node-option", f"{k}={v}"]
    if settings.max_steps:
        parts += ["--max-steps", str(settings.max_steps)]
    if schedule is not None:
        parts += ["--schedule", schedule]
    env = "UKEHI_I_KNOW_THIS_IS_UNSAFE=1 " if settings.option("unsafe_bug") else ""
    return env + " ".join(shlex.quote(p) for p in parts)


def store_result(result: SimResult, settings: SimSettings, results_dir: str,
                 shrunk_from: SimResult | None = None) -> str:
    """Store ``result``; ``shrunk_from``: it is the shrunk schedule of that failing run
    (``schedule.json`` then holds what was left out, for ``sim --seed K --schedule``)."""
    from harness.analysis import check_run
    from harness.store import new_run

    assert result.world is not None, "run_seed(keep_world=True) keeps the node files to store"
    run = new_run(results_dir, f"sim-{settings.workload}", latest=False)
    world = result.world
    test: dict[str, Any] = {
        "name": f"sim-{settings.workload}", "workload": settings.workload, "nodes": list(world.names),
        "backend": "local", "nemeses": [], "concurrency": result.options["clients"],
        "time_limit": settings.duration, "seed": result.seed,
        # the seed's workload options (e.g. fencing's ttl_ms): analyze builds the same checkers
        "workload_options": result.options.get("workload_options", {}),
        "node_options": dict(settings.node_options), "insecure": True,
        "simulated": {"seed": result.seed, "settings": settings_dict(settings), "options": result.options,
                      "digest": result.digest, "replay": replay_command(result.seed, settings)},
    }
    schedule = None
    if settings.skip_faults or settings.only_ops is not None:
        schedule = str(run.path / "schedule.json")
        run.write_json("schedule.json", {
            "seed": result.seed, "skip_faults": list(settings.skip_faults),
            "only_ops": None if settings.only_ops is None else [list(x) for x in settings.only_ops],
            "shrunk_from": None if shrunk_from is None else {
                "fault_steps": shrunk_from.fault_steps, "client_ops": len(shrunk_from.client_ops),
                "digest": shrunk_from.digest}})
        test["simulated"]["replay"] = replay_command(result.seed, settings, schedule=schedule)
        test["simulated"]["shrunk"] = True
    run.write_json("test.json", test)
    run.history.write_text(history_text(result.history), encoding="utf-8")
    run.mark_history_closed()
    world.export(str(run.path / "nodes"))
    # The availability verdict's facts (as a real run's availability.json), so that analyze
    # judges the stored seed as the simulator did.
    from checkers.availability import FACTS_FILE, sim_facts

    run.write_json(FACTS_FILE, sim_facts(result.history, **availability_inputs(world, result.history,
                                                                              result.options, settings),
                                         idle=result.idle))
    run.write_json("sim.json", {"seed": result.seed, "digest": result.digest, "faults": result.faults,
                                "virtual_seconds": result.virtual_seconds, "sim_verdict": result.valid,
                                "failing": result.failing_checkers(),
                                "replay": test["simulated"]["replay"]})
    check_run(run)
    return str(run.path)
