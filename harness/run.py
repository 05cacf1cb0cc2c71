"""One test from start to verdict (DESIGN.md "Data flow of one run").

spec -> store -> backend cluster -> Ukehi nodes -> workload + nemeses ->
interpreter (history streamed to disk) -> heal -> final phase -> stop ->
check -> report. Teardown runs on every path: normal end, exception,
Ctrl-C (SIGINT) and SIGTERM; an interrupted run keeps a readable partial
history that ``analyze`` can check.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

from checkers.history import HistoryWriter
from nemeses import membership
from nemeses.package import compose

from .analysis import check_run
from .backends.base import Cluster
from .db import DBError, UkehiDB, endpoint
from .interpreter import Clock, Counters, Interpreter
from .nodefiles import collect_node_files
from .progress import Progress
from .registry import NEEDS_NETWORK_FAULTS, NEMESES, WORKLOADS, needs_fake_clock
from .spec import SpecError, TestSpec
from .store import RunDir, new_run

log = logging.getLogger("ukehi_jepsen.run")


@dataclass
class RunOutcome:
    run: RunDir
    verdict: dict[str, Any]
    interrupted: bool = False


class RunContext:
    """The FaultContext nemeses act through (nemeses/context.py)."""

    def __init__(self, cluster: Cluster, db: UkehiDB) -> None:
        self.cluster = cluster
        self.db = db

    @property
    def nodes(self) -> dict[str, Any]:
        return self.cluster.nodes

    async def start_node(self, name: str) -> int:
        return await self.db.start_node(name)

    async def leader(self) -> str | None:
        return await self.db.leader()

    async def node_clock(self, name: str) -> float | None:
        return await self.db.node_clock(name)

    def endpoint(self, name: str) -> str:
        return endpoint(self.cluster.nodes[name])

    async def statuses(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any] | None]:
        return await self.db.statuses(names=names)

    async def start_fresh(self, name: str) -> int:
        return await asyncio.to_thread(self.db.start_fresh, name)

    async def drop_unfsynced(self, name: str) -> dict[str, Any]:
        """--nemesis lazyfs: lose the node's un-fsynced writes (harness/lazyfs/db.py)."""
        return await asyncio.to_thread(self.db.drop_unfsynced, name)  # type: ignore[attr-defined]


def open_backend(spec: TestSpec, run: RunDir) -> Cluster:
    if spec.backend == "local":
        from .backends.local import LocalCluster

        return LocalCluster(list(spec.nodes), results_dir=run.path,
                            faketime=needs_fake_clock(spec.nemeses))
    if spec.backend == "ssh":
        from .backends.base import BackendError
        from .backends.ssh import SSHCluster
        from .backends.ssh_connection import SSHOptions

        try:
            options = SSHOptions(user=spec.ssh_user, key=spec.ssh_key, port=spec.ssh_port,
                                 host_key_policy=spec.ssh_host_key_policy, known_hosts=spec.ssh_known_hosts)
            return SSHCluster(list(spec.nodes), options, results_dir=run.path,
                              faketime=needs_fake_clock(spec.nemeses), node_port=spec.ssh_node_port)
        except BackendError as err:
            raise SpecError(str(err)) from None
    if spec.backend == "docker":
        from .backends.base import BackendError
        from .backends.docker import DockerCluster

        try:
            # Engine and image are checked here, so a missing one is a clear usage error (254)
            # that says how to fix it, not a crash in the middle of opening the cluster.
            return DockerCluster(list(spec.nodes), results_dir=run.path,
                                 faketime=needs_fake_clock(spec.nemeses)).preflight()
        except BackendError as err:
            raise SpecError(str(err)) from None
    raise SpecError(f"--backend {spec.backend}: not available yet in this version; use --backend local")


def _attach_run_log(run: RunDir) -> logging.Handler:
    handler = logging.FileHandler(run.run_log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("ukehi_jepsen")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


async def _drive(spec: TestSpec, run: RunDir, cluster: Cluster, db: UkehiDB, progress: Progress,
                 counters: Counters) -> None:
    rng = random.Random(spec.seed)
    db.start_all()
    leader = await db.wait_for_leader()
    log.info("cluster up: nodes %s, leader %s", ",".join(spec.nodes), leader)
    workload = WORKLOADS[spec.workload](db.addresses(), spec.concurrency, spec.workload_options)
    nemesis = compose([NEMESES[name](RunContext(cluster, db)) for name in spec.nemeses])
    with HistoryWriter(str(run.history)) as history:
        interp = Interpreter(history, Clock(), rng, spec.concurrency, counters)
        progress.set_phase("main")
        deadline = time.monotonic() + spec.time_limit
        tasks = [interp.run_clients(workload.generator, workload.open_client, deadline=deadline,
                                    rate=spec.rate)]
        if nemesis.packages:
            tasks.append(_nemesis_loop(interp, nemesis, spec, deadline, counters))
        await asyncio.gather(*tasks)
        progress.set_phase("heal")
        for op in nemesis.final_ops():
            await interp.nemesis_op(nemesis, op)
        counters.active_faults.clear()
        if workload.final_generator is not None:
            progress.set_phase("final")
            try:
                await db.wait_for_leader(timeout=spec.final_time_limit, nodes_may_be_down=True)
            except DBError as err:
                # The cluster could not elect (e.g. a majority refused to start): the final
                # reads still run, and their failures are the honest record of unavailability.
                log.warning("final phase on a cluster that is not ready: %s", err)
            await interp.run_clients(workload.final_generator(), workload.open_client,
                                     deadline=time.monotonic() + spec.final_time_limit)


async def _nemesis_loop(interp: Interpreter, nemesis: Any, spec: TestSpec, deadline: float,
                        counters: Counters) -> None:
    rng = random.Random(spec.seed + 1)
    opens = {f: s.name for s in nemesis.shading for f in s.start}
    closes = {f: s.name for s in nemesis.shading for f in s.stop}
    while True:
        delay = spec.nemesis_interval * (0.5 + rng.random())
        if deadline - time.monotonic() <= delay:
            return
        await asyncio.sleep(delay)
        op = nemesis.next(rng)
        if op is None:
            return
        await interp.nemesis_op(nemesis, op)
        if op["f"] in opens:
            counters.active_faults.add(opens[op["f"]])
        elif op["f"] in closes:
            counters.active_faults.discard(closes[op["f"]])


async def _with_progress(coro: Any, progress: Progress) -> None:
    ticker = asyncio.create_task(progress.run())
    try:
        await coro
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


def run_test(spec: TestSpec, *, progress_stream: Any = None) -> RunOutcome:
    """Run one test and judge it; SpecError when the settings cannot work on this machine."""
    run = new_run(spec.results_dir, spec.name)
    run.test.write_text(spec.to_json(), encoding="utf-8")
    handler = _attach_run_log(run)
    counters = Counters()
    progress = Progress(counters, spec.time_limit, stream=progress_stream)
    interrupted = False
    cluster = open_backend(spec, run)
    # The backend's run id names everything it creates (namespaces, containers, rules):
    # recorded so a person or `cleanup` can tell this run's leftovers from another's.
    run.test.write_text(spec.to_json(run_id=cluster.run_id, backend_class=type(cluster).__name__),
                        encoding="utf-8")
    if spec.leave_running:
        cluster.leave_running()
    try:
        with cluster:
            needs_net = [n for n in spec.nemeses if n in NEEDS_NETWORK_FAULTS]
            if needs_net and not cluster.network_faults_supported:
                raise SpecError(f"--nemesis {','.join(needs_net)} needs network namespaces "
                                f"(run as root with iproute2 and iptables); this run uses loopback: "
                                f"{getattr(cluster, 'loopback_reason', '')}")
            # With membership changes the last nodes are spares (started with --join).
            founders = membership.founding_voters(spec.nodes) if "membership" in spec.nemeses else None
            db_class = UkehiDB
            if any(n.startswith("lazyfs") for n in spec.nemeses):
                if spec.backend != "local":
                    raise SpecError("--nemesis lazyfs mounts a FUSE file system under each node's data "
                                    "directory on this host: use --backend local")
                from .lazyfs.db import LazyUkehiDB

                db_class = LazyUkehiDB  # data dirs on LazyFS, so un-fsynced writes can be lost
            db = db_class(cluster, spec.read_mode, spec.corruption_policy, spec.node_options,
                          use_fake_clock=needs_fake_clock(spec.nemeses), founders=founders)
            try:
                asyncio.run(_with_progress(_drive(spec, run, cluster, db, progress, counters), progress))
            except KeyboardInterrupt:
                interrupted = True
                log.warning("interrupted (SIGINT): tearing down; the history so far is kept")
            finally:
                if not spec.leave_running:
                    db.stop_all()
                    collect_node_files(cluster.nodes.values(), run.path)  # before the backend removes them
                else:
                    log.info("--leave-running: nodes left up at %s; remove them with "
                             "`ukehi-jepsen cleanup`", ",".join(db.addresses()))
        if not run.history.exists():
            run.history.write_text("", encoding="utf-8")
        verdict = check_run(run)
        log.info("verdict: %s", verdict["valid"])
        return RunOutcome(run, verdict, interrupted)
    finally:
        logging.getLogger("ukehi_jepsen").removeHandler(handler)
        handler.close()
