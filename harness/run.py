"""One test from start to verdict (DESIGN.md "Data flow of one run").

spec -> store -> backend cluster -> Ukehi nodes -> workload + nemeses ->
interpreter (history streamed to disk) -> heal -> final phase -> stop ->
check -> report. Teardown runs on every path: normal end, exception,
Ctrl-C (SIGINT) and SIGTERM; an interrupted run keeps a readable partial
history that ``analyze`` can check, a results.json marked ``incomplete`` and a
run.log line naming the signal. A run that fails before its history starts
leaves ``results/latest`` alone and says why in its run.log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from dataclasses import dataclass
from typing import Any, Sequence

from checkers.availability import FACTS_FILE
from checkers.history import HistoryWriter
from nemeses import membership
from nemeses.leader_reads import ClientOps
from nemeses.package import compose

from .analysis import check_run
from .backends.base import Cluster
from .consistency import checksum_groups, summary
from .db import DBError, UkehiDB, endpoint
from .interpreter import Clock, Counters, Interpreter
from .nodefiles import collect_node_files
from .probes import run_probes
from .progress import Progress
from .registry import NEEDS_NETWORK_FAULTS, NEMESES, NEMESIS_NODE_OPTIONS, WORKLOADS, needs_fake_clock
from .sharding import is_sharded, rebalance_founders
from .spec import SpecError, TestSpec
from .store import RunDir, new_run, point_latest

log = logging.getLogger("ukehi_jepsen.run")


@dataclass
class RunOutcome:
    run: RunDir
    verdict: dict[str, Any]
    interrupted: str | None = None  # the signal that cut the run short: "SIGINT" or "SIGTERM"


class RunContext:
    """The FaultContext nemeses act through (nemeses/context.py)."""

    def __init__(self, cluster: Cluster, db: UkehiDB) -> None:
        self.cluster = cluster
        self.db = db
        # set once the history exists: client ops a nemesis fires itself (nemeses/leader_reads.py)
        self.client_ops: Any = None

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


#: how long start-up waits for a first leader (a correct cluster needs well under a second)
STARTUP_LEADER_WAIT_S = 30.0


def _note(run: RunDir, **facts: Any) -> None:
    """Add what the availability checker needs to <run>/availability.json (checkers/availability.py)."""
    import json

    path = run.path / FACTS_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    run.write_json(FACTS_FILE, {**known, **facts})


async def _start_cluster(spec: TestSpec, run: RunDir, db: UkehiDB) -> str | None:
    """Start the nodes and wait for a leader. When the build under test is why there is none
    (a node died at start with a traceback, or nobody was elected while every node ran and
    reached every other), the run gets a verdict (invalid, availability) instead of a crash:
    returns None after recording the diagnosis and an empty history. A cluster that did
    not come up because of this machine (a port in use, a missing tool, a broken network)
    stays a DBError: the harness could not test."""
    db.start_all()
    try:
        return await db.wait_for_leader(timeout=STARTUP_LEADER_WAIT_S)
    except DBError as err:
        try:
            diagnosis = await db.diagnose_startup(STARTUP_LEADER_WAIT_S)
        except Exception as why:  # noqa: BLE001 - a diagnosis that fails blames nobody
            diagnosis = {"cause": "unexplained", "reason": f"could not diagnose: {type(why).__name__}: {why}"}
        if diagnosis["cause"] != "build":
            raise DBError(f"{err}\nnot blamed on the build under test ({diagnosis['cause']}): "
                          f"{diagnosis['reason']}") from None
        log.error("the build under test did not come up: %s", diagnosis["reason"])
        _note(run, startup=diagnosis)
        with HistoryWriter(str(run.history)):
            pass  # empty: no client ever ran; the verdict comes from the availability checker
        point_latest(run)
        return None


async def _drive(spec: TestSpec, run: RunDir, cluster: Cluster, db: UkehiDB, progress: Progress,
                 counters: Counters) -> None:
    rng = random.Random(spec.seed)
    leader = await _start_cluster(spec, run, db)
    if leader is None:
        return
    log.info("cluster up: nodes %s, leader %s", ",".join(spec.nodes), leader)
    workload = WORKLOADS[spec.workload](db.addresses(), spec.concurrency, spec.workload_options)
    run_ctx = RunContext(cluster, db)
    nemesis = compose([NEMESES[name](run_ctx) for name in spec.nemeses])
    with HistoryWriter(str(run.history)) as history:
        point_latest(run)  # only now: a run that never got this far is not the latest run
        log.info("history started: %s", run.history)
        # db.nodes is in the order of db.addresses(), which the workload's clients are bound by
        interp = Interpreter(history, Clock(), rng, spec.concurrency, counters, nodes=list(db.nodes))
        # leader-churn's reads at a new leader go into the same history, as client ops
        run_ctx.client_ops = ClientOps(history, interp.clock, spec.workload)
        interp.history = run_ctx.client_ops.observing(history)
        progress.set_phase("main")
        deadline = time.monotonic() + spec.time_limit
        tasks = [interp.run_clients(workload.generator, workload.open_client, deadline=deadline,
                                    rate=spec.rate)]
        if nemesis.packages:
            tasks.append(_nemesis_loop(interp, nemesis, spec, deadline, counters))
        await asyncio.gather(*tasks)
        _note(run, main_end_ns=interp.clock.now())
        progress.set_phase("heal")
        for op in nemesis.final_ops():
            await interp.nemesis_op(nemesis, op)
        counters.active_faults.clear()
        _note(run, final_start_ns=interp.clock.now())
        if workload.final_generator is not None:
            progress.set_phase("final")
            try:
                final_leader = await db.wait_for_leader(timeout=spec.final_time_limit, nodes_may_be_down=True)
                _note(run, final_leader=final_leader)
            except DBError as err:
                # The cluster could not elect (e.g. a majority refused to start): the final
                # reads still run, and their failures are the honest record of unavailability.
                log.warning("final phase on a cluster that is not ready: %s", err)
                _note(run, final_leader=None, final_leader_error=str(err).splitlines()[0])
            await interp.run_clients(workload.final_generator(), workload.open_client,
                                     deadline=time.monotonic() + spec.final_time_limit)
        # A sharded run's groups each have their own leader and counters: neither the final
        # transfers nor the idle window (busy-when-idle) judge them.
        unsharded = not is_sharded(spec.node_options)
        if unsharded:
            await _final_transfers(interp, run_ctx)
        await _consistency_check(spec, run, db)
        await run_probes(run.path, db, spec)  # the bad-input battery (harness/probes.py), into probes.jsonl
        _note(run, down_on_purpose=await _down_on_purpose(db), unresponsive=await _unresponsive(db))
        if unsharded:
            _note(run, idle=await _idle_work(db))


async def _final_transfers(interp: Interpreter, ctx: RunContext) -> None:
    """Up to membership.FINAL_TRANSFERS leadership transfers after the final phase, until one
    is done or none can be asked for (nemeses/membership.py ``final_transfer_package``);
    judged by the availability verdict's transfer-refused rule."""
    package = membership.final_transfer_package(ctx)
    for attempt in range(membership.FINAL_TRANSFERS):
        done = await interp.nemesis_op(package, {"f": membership.TRANSFER,
                                                 "value": {"final": True, "attempt": attempt}})
        value = done.value if isinstance(done.value, dict) else {}
        if value.get("outcome") == "ok" or "skipped" in value or done.error:
            return


#: how long a running node may take to answer a status request after the final phase
#: (checkers/availability.py): a node restarted by the heal must first start Python and
#: listen, which takes seconds on a loaded machine (a refused connection returns at once)
UNRESPONSIVE_WAIT_S, STATUS_TIMEOUT_S = 20.0, 2.0


async def _consistency_check(spec: TestSpec, run: RunDir, db: UkehiDB) -> None:
    """One checksum entry per Raft group, whose digests every replica logs (harness/consistency.py;
    judged by the replica-agreement checker). Never fails the run by itself: a group with no
    leader now is recorded as such, and the checker then has less to compare."""
    shards = int(spec.node_options["shards"]) if is_sharded(spec.node_options) else None
    try:
        records = await checksum_groups(db.addresses(), shards, run.path, db.statuses)
    except Exception as exc:  # noqa: BLE001 - the check is extra evidence, never the run's end
        log.warning("consistency check not made: %s", exc)
        return
    _note(run, consistency_check=summary(records))


async def _unresponsive(db: UkehiDB) -> dict[str, str]:
    """Nodes that run (not paused) after the final phase but answer no status request for
    UNRESPONSIVE_WAIT_S: every fault is healed by then, and a correct node answers status even
    while it replays or recovers (it listens first), so such a node is hung (e.g. a Ready loop
    that spins), not slow."""
    deadline = time.monotonic() + UNRESPONSIVE_WAIT_S
    waiting = [n for n, h in db.nodes.items() if h.is_running() and h.process_state() not in ("T", "t")]
    while waiting:
        answers = await db.statuses(timeout=STATUS_TIMEOUT_S, names=waiting)
        waiting = [n for n in waiting if answers.get(n) is None and db.nodes[n].is_running()]
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    return {n: f"running but answered no status request for {UNRESPONSIVE_WAIT_S:g} s after the final phase"
            for n in waiting}


#: busy-when-idle (checkers/availability.py): the longest wait for every running node to apply
#: what the leader committed, then the window in which each node's work is counted
IDLE_SETTLE_S, IDLE_WINDOW_S = 10.0, 2.0


async def _idle_work(db: UkehiDB) -> dict[str, Any]:
    """Each running node's Readies handled and peer messages sent per second over
    IDLE_WINDOW_S, after the final phase, the transfers, the checksum and the probes, once every
    running member of the leader's configuration has applied what the leader committed (or
    IDLE_SETTLE_S passed): no client and no fault is active then, so a correct node only
    ticks, heartbeats and answers them. The record and the caught-up test are the
    simulator's too (checkers/availability.py ``idle_record``, ``idle_caught_up``).
    A node restarted between the two status rounds (its counters went back) is left out."""
    from checkers.availability import idle_caught_up, idle_record

    names = [n for n, h in db.nodes.items() if h.is_running() and h.process_state() not in ("T", "t")]
    deadline = time.monotonic() + IDLE_SETTLE_S
    caught_up = False
    while names:
        first = {n: s for n, s in (await db.statuses(timeout=STATUS_TIMEOUT_S, names=names)).items() if s}
        caught_up = idle_caught_up(first)
        if caught_up or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.2)
    else:
        return {"nodes": {}, "caught_up": False, "window_s": 0.0}
    first = {n: s for n, s in first.items() if "readies" in s}
    start = time.monotonic()
    await asyncio.sleep(IDLE_WINDOW_S)
    second = await db.statuses(timeout=STATUS_TIMEOUT_S, names=list(first))
    return idle_record(first, second, time.monotonic() - start, caught_up=caught_up)


async def _down_on_purpose(db: UkehiDB) -> dict[str, str]:
    """Nodes that, after the final phase, cannot serve by design, so the final phase may fail
    without blame on the build: not running and their log does not blame the build (e.g. a
    corruption policy that refused to start), or running but recovering after a WAL cut
    (such a node does not vote until it has caught up: a recovering majority cannot elect,
    which the CorruptionPolicy matrix reports as unavailable, not as a bug)."""
    from checkers.availability import classify_exit

    down = {}
    running = []
    for name, handle in db.nodes.items():
        if not handle.is_running():
            cause, reason = classify_exit(db.log_text(name), None, fresh=False)
            if cause != "build":
                down[name] = reason
        elif handle.process_state() not in ("T", "t"):
            running.append(name)
    if running:
        for name, status in (await db.statuses(names=running)).items():
            if status and status.get("recovering"):
                down[name] = "recovering after a WAL cut: it does not vote until it has caught up"
    return down


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


async def _with_progress(coro: Any, progress: Progress, signals: "StopSignals | None" = None) -> None:
    if signals is not None:
        signals.drive_started(asyncio.current_task(), asyncio.get_running_loop())
    ticker = asyncio.create_task(progress.run())
    try:
        await coro
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


class RunTerminated(BaseException):
    """SIGTERM outside the main phase; like KeyboardInterrupt, no ``except Exception`` eats it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopSignals:
    """SIGTERM handling for one run, so a run ended by SIGTERM keeps what it has, as after
    Ctrl-C: during the main phase the driving task is cancelled (clients stop, the history is
    closed whole, nodes are stopped, the partial history is checked); while nodes are being
    stopped it is only noted, so teardown finishes; before or after, it raises RunTerminated."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.tearing_down = False
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._previous: Any = signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread: leave signals to whoever owns them
            self._previous = None

    def drive_started(self, task: asyncio.Task[Any] | None, loop: asyncio.AbstractEventLoop) -> None:
        self._task, self._loop = task, loop

    def drive_ended(self) -> None:
        self._task = self._loop = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None or self.tearing_down:
            self.received = self.received or name
            log.warning("%s while stopping: the run is already being torn down", name)
            return
        self.received = name
        log.warning("terminated (%s): tearing down; the history so far is kept", name)
        if self._task is not None and self._loop is not None and not self._task.done():
            self._task.cancel()
            self._loop.call_soon_threadsafe(lambda: None)  # wake the loop to act on it
            return
        raise RunTerminated(name)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _why(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(err, RunTerminated):
        return f"terminated ({err.signal_name})"
    return f"{type(err).__name__}: {err}"


def with_schedule_options(spec: TestSpec) -> TestSpec:
    """The spec with the node options its schedules need (registry NEMESIS_NODE_OPTIONS, e.g.
    a low snapshot_threshold for snapshot-lag); an option the user gave wins. Recorded in
    test.json like any other node option."""
    import dataclasses

    needed: dict[str, Any] = {}
    for name in spec.nemeses:
        needed.update(NEMESIS_NODE_OPTIONS.get(name, {}))
    added = {k: v for k, v in needed.items() if k not in spec.node_options}
    if not added:
        return spec
    log.info("node options for %s: %s", ",".join(spec.nemeses), added)
    return dataclasses.replace(spec, node_options={**spec.node_options, **added})


def run_test(spec: TestSpec, *, progress_stream: Any = None, all_failures: bool = True) -> RunOutcome:
    """Run one test and judge it; SpecError when the settings cannot work on this machine.

    ``results/latest`` is repointed only once the history has started, so a run that fails
    while setting up leaves it on the last real run; its own ``run.log`` says why it stopped.
    """
    spec = with_schedule_options(spec)
    run = new_run(spec.results_dir, spec.name, latest=False)
    run.test.write_text(spec.to_json(), encoding="utf-8")
    handler = _attach_run_log(run)
    signals = StopSignals()
    counters = Counters()
    progress = Progress(counters, spec.time_limit, stream=progress_stream)
    interrupted: str | None = None
    try:
        try:
            interrupted = _run_cluster(spec, run, progress, counters, signals)
        except (KeyboardInterrupt, RunTerminated) as err:
            interrupted = "SIGINT" if isinstance(err, KeyboardInterrupt) else err.signal_name
            if not run.history.exists():
                log.warning("stopped before the history started (%s); results/latest not repointed", _why(err))
        if not run.history.exists():
            run.history.write_text("", encoding="utf-8")
        try:
            verdict = check_run(run, all_failures=all_failures)
        except RunTerminated as err:
            interrupted = interrupted or err.signal_name
            verdict = {"valid": "unknown", "checkers": {}, "ops": 0,
                       "error": f"checking was stopped by {err.signal_name}; re-check with `ukehi-jepsen analyze`"}
        if interrupted:
            # What there is, marked as such: a partial history's verdict is not the run's.
            verdict.update(incomplete=True, interrupted_by=interrupted)
            run.write_json("results.json", verdict)
        log.info("verdict: %s%s", verdict["valid"], f" (incomplete: {interrupted})" if interrupted else "")
        return RunOutcome(run, verdict, interrupted)
    except BaseException as err:
        stage = "before its history started" if not run.history.exists() else "after its history started"
        log.error("run stopped %s: %s", stage, _why(err))
        raise
    finally:
        signals.restore()
        logging.getLogger("ukehi_jepsen").removeHandler(handler)
        handler.close()


def _run_cluster(spec: TestSpec, run: RunDir, progress: Progress, counters: Counters,
                 signals: StopSignals) -> str | None:
    """Open the backend, drive the test, tear down; returns the signal that cut the main
    phase short ("SIGINT", "SIGTERM") or None."""
    interrupted: str | None = None
    cluster = open_backend(spec, run)
    # The backend's run id names everything it creates (namespaces, containers, rules):
    # recorded so a person or `cleanup` can tell this run's leftovers from another's.
    run.test.write_text(spec.to_json(run_id=cluster.run_id, backend_class=type(cluster).__name__),
                        encoding="utf-8")
    if spec.leave_running:
        cluster.leave_running()
    with cluster:
        needs_net = [n for n in spec.nemeses if n in NEEDS_NETWORK_FAULTS]
        if needs_net and not cluster.network_faults_supported:
            raise SpecError(f"--nemesis {','.join(needs_net)} needs network namespaces "
                            f"(run as root with iproute2 and iptables); this run uses loopback: "
                            f"{getattr(cluster, 'loopback_reason', '')}")
        # With membership changes the last nodes are spares (started with --join); so with
        # the rebalance nemesis on a sharded run (its add-node ops add them).
        founders = membership.founding_voters(spec.nodes) if "membership" in spec.nemeses else \
            rebalance_founders(spec.nodes, spec.node_options, spec.nemeses)
        db_class = UkehiDB
        if any(n.startswith("lazyfs") for n in spec.nemeses):
            if spec.backend != "local":
                raise SpecError("--nemesis lazyfs mounts a FUSE file system under each node's data "
                                "directory on this host: use --backend local")
            from .lazyfs.db import LazyUkehiDB

            db_class = LazyUkehiDB  # data dirs on LazyFS, so un-fsynced writes can be lost
        db = db_class(cluster, spec.read_mode, spec.corruption_policy, spec.node_options,
                      use_fake_clock=needs_fake_clock(spec.nemeses), founders=founders,
                          insecure=spec.insecure)
        try:
            asyncio.run(_with_progress(_drive(spec, run, cluster, db, progress, counters), progress, signals))
        except KeyboardInterrupt:
            interrupted = "SIGINT"
            log.warning("interrupted (SIGINT): tearing down; the history so far is kept")
        except asyncio.CancelledError:
            if signals.received is None:
                raise
            interrupted = signals.received  # the handler logged it
        else:
            interrupted = signals.received  # a signal the drive absorbed still cut it short
        finally:
            signals.drive_ended()
            signals.tearing_down = True
            if run.history.exists():
                run.mark_history_closed()  # the writer is closed: every line in it is whole
            if not spec.leave_running:
                db.stop_all()
                if run.history.exists():  # node processes that had died on their own, with their status
                    _note(run, exited=dict(db.exited))
                collect_node_files(cluster.nodes.values(), run.path)  # before the backend removes them
            else:
                log.info("--leave-running: nodes left up at %s; remove them with "
                         "`ukehi-jepsen cleanup`", ",".join(db.addresses()))
        signals.tearing_down = False
    return interrupted
