"""The Ukehi node process: the asyncio lifecycle around the shared driver.

One task (``_ready_loop``) runs the driver (``ukehi.node.driver``), which owns the core.
Everything else (the tick timer, peer messages, client requests, admin calls) queues a
typed input (``ukehi.node.inputs``) and wakes it. The core refuses inputs between
``ready()`` and ``advance()``, so inputs that arrive while a Ready is being handled (most of
that time is the fsync, run by the Disk off the event loop) wait in the queue and go into
the *next* Ready together: that is the group commit, one fsync per batch.

I/O goes through ``ukehi.node.io`` (clock and timers, peer network, disk, listener): the
real ones by default; the simulator (``ukehi.sim``) runs this same class with its own.

Fail-stop: an ``InvariantViolation`` from the core (or from applying entries out of order)
means this node's own state is broken. The Ready loop raises it before it persists, sends
or applies anything more; `run` logs one ``level=fatal event=invariant-violated`` line naming
the invariant, the term and the index, saves nothing at shutdown, and exits with
``EXIT_INVARIANT_VIOLATED`` (70). A ``BadPeerMessage`` (a peer's malformed or impossible
message) is dropped, counted (``bad_peer_messages`` in status) and logged at warning.
Any other exception escaping a task is a bug: ``level=fatal event=fatal``, exit 1.

Start-up: the data dir is replayed under the CorruptionPolicy before the core exists
(``ukehi.node.recovery``); the listening socket is open during replay and answers every
client with ``recovering`` (and ``status`` with ``"recovering": true``). RefuseStart exits
with code 4 and changes nothing.

Addresses of members: founders come from ``--peers``; a node added later is announced by the
admin ``add_node`` call, which first commits a reserved KV key (``ADDRESS_KEY_PREFIX + id``)
holding its address, so every replica, and every snapshot, knows where it lives.

Shutdown: the Disk's ``close`` waits for storage work still in flight (a persist running in
a worker thread) before it saves the final hard state and closes the files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from typing import Any, Callable

from ukehi import wire
from ukehi.bugs import BACKGROUND_FSYNC_S, KNOWN_BUGS, canonical_bug, raft_overrides
from ukehi.config import NodeConfig, format_address
from ukehi.kv import KVStateMachine
from ukehi.nodelog import NodeLogger
from ukehi.raft.config import RaftConfig
from ukehi.raft.core import RaftCore
from ukehi.raft.errors import InvariantViolation
from ukehi.raft.ready import Ready
from ukehi.server import NodeServer
from ukehi.storage.datadir import GroupStorage
from ukehi.storage.errors import CorruptionRefusedError, StorageError
from ukehi.storage.hardstate import HardState as StoredHardState
from ukehi.tls import NodeTLS
from ukehi.transport import PeerTransport

from .admin import AdminAPI
from .api import ClientAPI, err
from .driver import ADDRESS_KEY_PREFIX, GROUP_ID, Driver, Work
from .inputs import Unreachable
from .io import DiskWork, NodeIO
from .recovery import build_core, log_corruption_report, open_storage

__all__ = ["UkehiNode", "run_node", "raft_config", "ADDRESS_KEY_PREFIX", "EXIT_REFUSE_START",
           "EXIT_START_FAILED", "EXIT_INVARIANT_VIOLATED", "GROUP_ID"]

EXIT_REFUSE_START = 4
EXIT_START_FAILED = 1
# The node stopped itself because its own Raft state broke an invariant (sysexits'
# EX_SOFTWARE): distinct from a start-up failure (1) and a refused start (4).
EXIT_INVARIANT_VIOLATED = 70


def tcp_endpoints(host: Any, config: NodeConfig, log: NodeLogger,
                  on_unreachable: Callable[[str], None]) -> tuple[NodeTLS | None, NodeServer, PeerTransport]:
    """One node process's real endpoints: its TLS identity (mutual TLS unless --insecure,
    ukehi/tls.py; a certificate that is not this node's is refused here with TLSError, exit
    254), the listener that serves ``host``, and the TCP peer links (the driver's Network)."""
    tls = None if config.insecure else NodeTLS.load(
        config.node_id, str(config.tls_ca), str(config.tls_cert), str(config.tls_key))
    listener = NodeServer(host, log, tls=tls.server if tls else None,
                          max_connections=config.max_connections, idle_timeout=config.idle_timeout_s)
    transport = PeerTransport(config.node_id, log, on_unreachable,
                              advertise=format_address(config.advertise_address),
                              tls=tls.client if tls else None)
    return tls, listener, transport


def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (where this loop can take signal handlers)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


def known_asyncio_bug(context: dict[str, Any]) -> str | None:
    """The upstream issue when an error the loop reports is CPython's own known bug, else None.

    CPython gh-156512: a selector transport whose close is already scheduled can run
    ``_call_connection_lost`` twice (seen here on a TLS peer link reset at shutdown); the
    second call raises AttributeError on the torn-down socket. Nothing of the node is wrong,
    but the default handler prints a traceback, which the node-health checker (rightly)
    fails on."""
    exc = context.get("exception")
    if isinstance(exc, AttributeError) and "_call_connection_lost" in str(context.get("message", "")):
        return "CPython gh-156512 (_call_connection_lost ran twice)"
    return None


def report_loop_errors(loop: asyncio.AbstractEventLoop, log: NodeLogger) -> None:
    """Errors the event loop reports go to the default handler (a traceback on stderr), except
    CPython's known harmless ones, which the node log names as a warning instead."""
    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        upstream = known_asyncio_bug(context)
        if upstream is None:
            lp.default_exception_handler(context)
        else:
            log.warning("asyncio-known-bug", upstream=upstream, error=repr(context.get("exception"))[:200])
    loop.set_exception_handler(handler)


async def listen_or_explain(listener: NodeServer, cfg: NodeConfig, log: NodeLogger) -> tuple[str, int] | None:
    """Start listening on ``cfg.listen``: the bound address, or None after a log line and a
    one-line hint on stderr when the address cannot be had."""
    try:
        return await listener.start(*cfg.listen)
    except OSError as e:
        log.error("listen-failed", address=format_address(cfg.listen), error=str(e))
        print(f"ukehi node: cannot listen on {format_address(cfg.listen)}: {e}; "
              "pick a free port or stop the process that holds it", file=sys.stderr)
        return None


async def tick_every(clock: Any, interval_s: float, tick: Callable[[], None]) -> None:
    """Call ``tick`` every ``interval_s`` seconds of ``clock``, forever (until cancelled)."""
    next_at = clock.monotonic() + interval_s
    while True:
        await clock.sleep(max(0.0, next_at - clock.monotonic()))
        # No catching up after a stall: a burst of ticks would look like a dead leader (the
        # driver ages the lease by the ticks a stall swallowed: Driver.tick_s).
        next_at = max(next_at + interval_s, clock.monotonic())
        tick()


class UkehiNode(ClientAPI, AdminAPI):
    """One node: storage, Raft core, transport, server, state machine.

    Unsharded, this is the whole node process (group 0). A sharded node
    (``ukehi.node.groups``) runs one of these per Raft group it hosts, with ``hosted`` set:
    the group's listener and transport are the hosting node's, shared by every group."""

    group_id: int = GROUP_ID
    hosted = False  # True: a group inside a sharded node (it announces itself as a group)

    def __init__(self, config: NodeConfig, log: NodeLogger | None = None, *, io: NodeIO | None = None) -> None:
        self.config = config
        self.io = io or NodeIO()
        self.clock = self.io.clock
        # Aliases (early-ack) resolve to the canonical name every check below uses.
        self.bug = canonical_bug(config.unsafe_bug)
        self.log = log or NodeLogger(config.node_id, config.log_level)
        self.phase = "starting"  # starting -> replaying -> running -> stopping
        self.corruption: dict[str, Any] | None = None
        self.started_at = self.clock.time()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._admin_lock = asyncio.Lock()
        self._fatal = False  # set on a fail-stop: shutdown then persists nothing
        self.driver = Driver(config.node_id, bug=self.bug, fsync=config.fsync, founders=dict(config.peers),
                             log=self.log, clock=self.clock, wake=self._wake.set)
        self.driver.tick_s = config.tick_ms / 1000.0  # a stall ages the lease (Driver._note_stall)
        self.driver.on_progress = self._on_progress
        if self.io.make_listener is not None and self.io.make_network is not None:
            self.tls = None
            self.listener = self.io.make_listener(self)
            self.transport = self.io.make_network(self)
        else:
            self.tls, self.listener, self.transport = tcp_endpoints(self, config, self.log, self._on_unreachable)
        self.driver.network = self.transport
        self.bound_address: tuple[str, int] | None = None
        self.pid = self.io.pid if self.io.pid is not None else os.getpid()

    # The driver owns these; the node, its tests and txnserve read them here.
    @property
    def server(self) -> Any:
        return self.listener

    @property
    def core(self) -> RaftCore | None:
        return self.driver.core

    @property
    def storage(self) -> GroupStorage | None:
        return self.driver.storage

    @property
    def kv(self) -> KVStateMachine:
        return self.driver.kv

    @property
    def applied(self) -> int:
        return self.driver.applied

    @property
    def bad_peer_messages(self) -> int:
        return self.driver.bad_peer_messages

    def _on_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    # ================================================================== lifecycle
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self.io.signals:  # a real process (the simulator owns its loop)
            stop_on_signals(loop, self._stop)
            report_loop_errors(loop, self.log)
        self._announce(loop)
        # Listen first: during replay every request gets a clear "recovering" answer.
        self.bound_address = await listen_or_explain(self.listener, self.config, self.log)
        if self.bound_address is None:
            return EXIT_START_FAILED
        if not self.hosted:
            self.log.info("listening", address=format_address(self.bound_address))
        return await self._serve()

    def _announce(self, loop: asyncio.AbstractEventLoop) -> None:
        """The start-up lines: settings, and loud warnings for anything unsafe."""
        cfg = self.config
        self.log.info(
            "starting", pid=self.pid, listen=format_address(cfg.listen), data_dir=cfg.data_dir,
            peers=",".join(f"{k}={format_address(v)}" for k, v in cfg.peers.items()),
            policy=cfg.corruption_policy, read_mode=cfg.read_mode, join=cfg.join,
            election_ms=f"{cfg.election_timeout_ms[0]}:{cfg.election_timeout_ms[1]}",
            heartbeat_ms=cfg.heartbeat_ms, tick_ms=cfg.tick_ms, unsafe_bug=self.bug, fsync=cfg.fsync,
            event_loop=type(loop).__module__.split(".")[0],
            tls="off" if self.tls is None else f"mutual ({self.tls.identity})",
        )
        if self.tls is None:
            self.log.warning("insecure", detail="--insecure: plain TCP, no authentication; anyone who can reach "
                             f"{format_address(cfg.listen)} can change membership, move leadership and forge "
                             "Raft messages")
        if not cfg.fsync:
            self.log.warning("unsafe-fsync-off", detail="fsync = false: WAL appends are acknowledged before "
                             "they reach stable storage; a power cut can lose acknowledged writes")
        if self.bug is not None:
            # Loud on purpose: a node with a planted bug must never pass for a correct one.
            self.log.warning("unsafe-bug", bug=self.bug, detail=f"THIS NODE IS INCORRECT ON PURPOSE: "
                             f"{KNOWN_BUGS.get(self.bug, '?')}; for harness self-tests only")

    async def _serve(self) -> int:
        """Replay, run the tasks until stopped or one fails, shut down; the exit code."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self.phase = "replaying"
        try:
            try:
                code = await self._recover()
            except (ValueError, TypeError) as e:
                # The data dir replayed but does not form a log the core accepts.
                self.log.error("start-failed", error=str(e))
                print(f"ukehi node: cannot start from {cfg.data_dir}: {e}", file=sys.stderr)
                return EXIT_START_FAILED
            if code is not None:
                return code
            self.phase = "running"
            tasks = [
                loop.create_task(self._tick_loop(), name="tick"),
                loop.create_task(self._ready_loop(), name="ready"),
                loop.create_task(self._housekeeping(), name="housekeeping"),
            ]
            if self.bug == "lost-unfsynced":
                tasks.append(loop.create_task(self._background_fsync(), name="background-fsync"))
            stop_wait = loop.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in tasks if t in done and t.exception() is not None]
            # The fatal line first, before anything else can happen.
            code = self._fail_stop(failed[0]) if failed else 0
            self.phase = "stopping"
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            stop_wait.cancel()
            return code
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask `run` to stop (what SIGTERM does)."""
        self._stop.set()

    def _fail_stop(self, task: asyncio.Task[Any]) -> int:
        """A task died: log the fatal line at once and pick the exit code. Shutdown then
        saves nothing, since the state it would save is the state that broke."""
        exc = task.exception()
        self._fatal = True
        core = self.core
        if isinstance(exc, InvariantViolation):
            term = exc.term if exc.term is not None else (core.term if core is not None else None)
            self.log.fatal("invariant-violated", invariant=exc.invariant, term=term, index=exc.index,
                           commit=core.log.committed if core is not None else None, applied=self.applied,
                           detail=exc.detail)
            print(f"ukehi node: stopped: Raft invariant {exc.invariant} violated at term {term}, index "
                  f"{exc.index}: {exc.detail}", file=sys.stderr)
            return EXIT_INVARIANT_VIOLATED
        tb = "".join(traceback.format_exception(exc)).strip().replace("\n", " | ")
        self.log.fatal("fatal", task=task.get_name(), error=repr(exc), traceback=tb)
        print(f"ukehi node: fatal error in {task.get_name()}: {exc!r}", file=sys.stderr)
        return EXIT_START_FAILED

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        self.driver.proposals.fail_all(err(wire.ErrorCode.TIMEOUT, "node shutting down; outcome unknown"))
        self.driver.reads.fail_all()
        await self.listener.stop()
        await self.transport.close()
        if self.storage is not None:
            final = None
            if self.core is not None and not self._fatal:
                # Save the latest commit index (it is saved lazily while running).
                st = self.core.status()
                vote = None if self.bug == "forget-vote" else st.vote
                final = StoredHardState(st.term, vote, st.commit)
            # Waits for a persist still running (in a worker thread, for the real disk).
            await self.io.disk.close(lambda: self._close_storage(final))
        self.log.info("shutdown", applied=self.applied, fatal=self._fatal)

    def _close_storage(self, final: StoredHardState | None) -> None:
        """Save `final` (if any) and close the files; the Disk runs it once no work is in flight."""
        storage = self.storage
        assert storage is not None
        if final is not None:
            try:
                storage.hard_state.save(final)
            except (StorageError, OSError, ValueError) as e:
                self.log.warning("shutdown-save-failed", error=str(e))
        storage.close()

    # ================================================================== recovery
    async def _recover(self) -> int | None:
        """Replay the data dir and build the core. Returns an exit code to stop, else None."""
        cfg = self.config
        try:
            storage = await self.io.disk.run(DiskWork("open", self._open_storage))
        except CorruptionRefusedError as e:
            report = getattr(e, "report", None)
            for f in getattr(report, "findings", []) or []:
                self.log.error("corruption-report", policy=cfg.corruption_policy, segment=f.segment,
                               offset=f.offset, kind=f.kind, action=f.action, index=f.index, detail=f.detail)
            self.log.error("refuse-start", reason=str(e))
            print(f"ukehi node: refusing to start (corruption policy refuse-start): {e}", file=sys.stderr)
            return EXIT_REFUSE_START
        except (StorageError, OSError, ValueError) as e:
            self.log.error("storage-open-failed", error=str(e))
            print(f"ukehi node: cannot open the data directory {cfg.data_dir}: {e}", file=sys.stderr)
            return EXIT_START_FAILED
        self.driver.storage = storage
        report = storage.recovered.report
        self.corruption = report.to_dict()
        log_corruption_report(self.log, cfg.corruption_policy, report)
        build_core(self.driver, storage, cfg, self._raft_config(), self.io.rng)
        return None

    def _open_storage(self) -> GroupStorage:
        """Open and replay this group's directory (``data/group-<id>/``)."""
        return open_storage(self.config, self.bug)

    def _raft_config(self) -> RaftConfig:
        return raft_config(self.config, self.bug)

    # ================================================================== tasks
    async def _drive(self, work: Work) -> Any:
        """Run a driver generator: each DiskWork it yields goes to the Disk, and the result
        (or the exception) goes back in."""
        try:
            item = next(work)
        except StopIteration as stop:
            return stop.value
        while True:
            try:
                result = await self.io.disk.run(item)
            except Exception as e:  # noqa: BLE001 - the driver decides what it handles
                try:
                    item = work.throw(e)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                item = work.send(result)
            except StopIteration as stop:
                return stop.value

    async def _handle_ready(self, rd: Ready) -> None:
        await self._drive(self.driver.handle_ready(rd))

    async def _ready_loop(self) -> None:
        assert self.core is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drive(self.driver.cycle())

    async def _tick_loop(self) -> None:
        await tick_every(self.clock, self.config.tick_ms / 1000.0, self.driver.tick)

    async def _background_fsync(self) -> None:
        """lost-unfsynced only: fsync the WAL every BACKGROUND_FSYNC_S, long after the acks."""
        assert self.storage is not None
        wal = self.storage.wal
        while True:
            await self.clock.sleep(BACKGROUND_FSYNC_S)
            await self.io.disk.run(DiskWork("sync", wal.sync))

    async def _housekeeping(self) -> None:
        while True:
            await self.clock.sleep(0.5)
            self.driver.expire()

    def _on_unreachable(self, peer: str) -> None:
        if self.phase == "running":
            self.driver.push(Unreachable(peer))


def raft_config(cfg: NodeConfig, bug: str | None = None) -> RaftConfig:
    """The Raft core's settings for a node: its timers in ticks of ``cfg.tick_ms``, and the
    core flags of a planted bug (ukehi/bugs.py), which win over the rest."""
    et_ticks = max(2, round(cfg.election_timeout_ms[0] / cfg.tick_ms))
    et_max_ticks = max(et_ticks, round(cfg.election_timeout_ms[1] / cfg.tick_ms))
    hb_ticks = max(1, min(et_ticks - 1, round(cfg.heartbeat_ms / cfg.tick_ms)))
    return RaftConfig(**{
        "group_id": GROUP_ID,
        "election_tick": et_ticks,
        "election_tick_max": et_max_ticks,
        "heartbeat_tick": hb_ticks,
        "lease_read": cfg.read_mode == "lease",
        "compaction_threshold": cfg.snapshot_threshold,
        "snapshot_chunk_size": cfg.snapshot_chunk_size,
        "max_inflight": cfg.max_inflight,
        "max_entries_per_message": cfg.max_entries_per_message,
        **raft_overrides(bug),
    })


def loop_factory(tls: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the optional extra: ``pip install
    'ukehi-jepsen[fast]'``), the node runs plain TCP (--insecure) and ``UKEHI_EVENT_LOOP``
    is not ``asyncio``; None: the stdlib's. The node's code is the same on both.

    Not with TLS: the node accepts plain TCP and then upgrades the socket (``start_tls``,
    so a refused handshake is logged and counted), and under uvloop that handshake never
    completes (measured with uvloop 0.23: the server's ``start_tls`` hangs)."""
    choice = os.environ.get("UKEHI_EVENT_LOOP", "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"UKEHI_EVENT_LOOP={choice!r}: use auto, uvloop or asyncio")
    if choice == "asyncio" or (choice == "auto" and tls):
        return None
    if tls:
        raise ValueError("UKEHI_EVENT_LOOP=uvloop works only with --insecure (uvloop cannot upgrade an "
                         "accepted socket to TLS); unset UKEHI_EVENT_LOOP to run with TLS")
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError("UKEHI_EVENT_LOOP=uvloop but uvloop is not installed: "
                             "pip install 'ukehi-jepsen[fast]' (or unset UKEHI_EVENT_LOOP)") from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_node(config: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code."""
    try:
        factory = loop_factory(tls=not config.insecure)
    except ValueError as e:
        print(f"ukehi node: {e}", file=sys.stderr)
        return EXIT_START_FAILED
    # The WAL thread hands each finished persist back to the event loop; while the loop is
    # busy, CPython lets a waiting thread take the GIL only every switch interval (5 ms by
    # default), so a completed fsync could sit that long before its acks went out.
    sys.setswitchinterval(0.0005)
    node: Any
    if config.shards is not None:
        from .groups import ShardedNode  # one process, a Raft group per hosted shard

        node = ShardedNode(config)
    else:
        node = UkehiNode(config)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(node.run())
    except KeyboardInterrupt:
        return 0
