"""Ukehi on a backend's node handles: the command line, start, readiness, status.

This is the only place that knows how to run a Ukehi node; backends know
how to run *a* process on a node, nemeses only ask to (re)start a node.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from ukehi.client import UkehiClient
from ukehi.tls import ClientTLS, register_cluster_tls

from .backends.base import Cluster, NodeHandle
from .sharding import every_shard_led, is_sharded

# A start-up without a leader is blamed on the build only if this many of the longest
# election timeouts fit in the wait: a correct cluster elects within a few.
ELECTIONS_IN_STARTUP_BOUND = 10
# Run inside a node's network namespace (or host): connect to each HOST:PORT given.
_PROBE = ("import socket, sys\n"
          "bad = []\n"
          "for a in sys.argv[1:]:\n"
          "    h, p = a.rsplit(':', 1)\n"
          "    try:\n"
          "        socket.create_connection((h.strip('[]'), int(p)), 3).close()\n"
          "    except OSError as e:\n"
          "        bad.append(f'{a}: {e}')\n"
          "print('; '.join(bad))\n"
          "sys.exit(1 if bad else 0)\n")

# Flags a test may pass to every node through TestSpec.node_options, by key.
NODE_OPTION_FLAGS = {
    "election_timeout": "--election-timeout",
    "heartbeat": "--heartbeat",
    "snapshot_threshold": "--snapshot-threshold",
    "snapshot_chunk_size": "--snapshot-chunk-size",
    "wal_segment_size": "--wal-segment-size",
    "max_inflight": "--max-inflight",
    "max_entries_per_message": "--max-entries-per-message",
    "log_level": "--log-level",
    "unsafe_bug": "--unsafe-bug",
    # sharding (issue 15, harness/sharding.py): set by `run --shards/--replication-factor`
    "shards": "--shards",
    "replication_factor": "--replication-factor",
}
# Fast timers for tests on one machine: elections in well under a second.
DEFAULT_NODE_OPTIONS = {"election_timeout": "300:600", "heartbeat": 50}


# What a node's own exit status says (ukehi/nodecli.py, ukehi/node.py).
NODE_EXIT_MEANINGS = {
    1: "crashed or could not start (level=fatal event=fatal, or a start-up error, in its log)",
    4: "refused to start (corruption policy refuse-start)",
    70: "stopped itself: a Raft invariant broke (level=fatal event=invariant-violated in its log)",
    254: "bad arguments",
}
log = logging.getLogger("ukehi_jepsen.db")


# How far the run's certificates are backdated (see UkehiDB._make_certs).
CERT_BACKDATE = timedelta(days=2)


class DBError(RuntimeError):
    """The cluster did not come up; the message names the node and its log."""


def endpoint(handle: NodeHandle) -> str:
    return f"{handle.address}:{handle.ports[0]}"


@dataclass
class UkehiDB:
    cluster: Cluster
    read_mode: str = "readindex"
    corruption_policy: str = "truncate-to-last-good"
    node_options: Mapping[str, Any] = field(default_factory=dict)
    use_fake_clock: bool = False
    python: str = sys.executable
    #: the founding voters (default: every handle); the other handles start with --join
    #: as spare nodes that a membership change may add later
    founders: Sequence[str] | None = None
    #: plain TCP (``ukehi-jepsen run --insecure``); by default every node talks mutual TLS
    #: with certificates of a CA made for this run (see :meth:`_make_certs`)
    insecure: bool = False
    #: where the run's CA and certificates go (default ``<run dir>/certs``)
    certs_dir: Path | None = None

    def __post_init__(self) -> None:
        self.client_tls: ClientTLS | None = None
        self._shipped: set[str] = set()
        if not self.insecure:
            self._make_certs()
        # Every UkehiClient this process makes (workloads, nemeses, status polls) reaches
        # these addresses with the run's client/admin certificates, or plain TCP if insecure.
        register_cluster_tls(self.addresses(), self.client_tls)
        unknown = sorted(set(self.node_options) - set(NODE_OPTION_FLAGS))
        if unknown:
            raise ValueError(f"unknown node option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(NODE_OPTION_FLAGS)}")
        if self.founders is not None:
            self.founders = list(self.founders)
            strangers = sorted(set(self.founders) - set(self.nodes))
            if not self.founders or strangers:
                raise ValueError(f"founding voters {self.founders} must be a non-empty subset of the "
                                 f"cluster's nodes {list(self.nodes)} (open the cluster first)")
        # Nodes that start as new, not-yet-added members: the spares, and any node whose
        # data dir was wiped (a removed node coming back fresh). Never a founder again:
        # a wiped founder would bootstrap a second, empty configuration.
        self.joiners: set[str] = set(self.nodes) - set(self.founding_voters())
        # Nodes stop_all found dead of their own accord, with their exit status.
        self.exited: dict[str, int] = {}

    def _make_certs(self) -> None:
        """A CA for this run only, and the harness's client and admin certificates.

        ``<run>/certs/ca.pem`` + ``ca.key`` (the key never leaves this machine),
        ``client.pem`` (the workloads' KV operations), ``admin.pem`` (membership, transfer,
        snapshot: the nemeses), and per node ``<name>/node.pem`` shipped at its first start.
        """
        from ukehi import certs  # `cryptography`: the harness's dependency, never the node's

        # Backdated: the clock nemesis sets nodes' clocks back (bumps add up), and a node
        # whose clock reads before a certificate's start refuses it.
        self._not_before = datetime.now(timezone.utc) - CERT_BACKDATE
        if self.certs_dir is None:
            run_dir = getattr(self.cluster, "results_dir", None)
            self.certs_dir = Path(run_dir) / "certs" if run_dir else Path(tempfile.mkdtemp(prefix="ukj-certs-"))
        self.certs_dir = Path(self.certs_dir)
        if not (self.certs_dir / "ca.pem").exists():
            certs.init_ca(str(self.certs_dir), name=f"ukehi-jepsen run {getattr(self.cluster, 'run_id', '')}".strip(),
                          not_before=self._not_before)
        for role in ("client", "admin"):
            if not (self.certs_dir / f"{role}.pem").exists():
                certs.issue(str(self.certs_dir), f"harness-{role}", role, file_stem=role,
                            not_before=self._not_before)
        self.client_tls = ClientTLS.from_dir(str(self.certs_dir))

    def tls_dir(self, name: str) -> Path:
        """The node's --tls-dir on the node (its workdir, as the backend sees it)."""
        return Path(self.nodes[name].workdir) / "tls"

    def _ship_certs(self, name: str) -> None:
        """Issue the node's certificate (CN = its name) and put it, its key and the CA
        certificate in its --tls-dir through the backend's file verbs (local disk, the
        container's bind mount, SFTP), the directory 0700 and the key 0600."""
        if self.insecure or name in self._shipped:
            return
        from ukehi import certs

        assert self.certs_dir is not None
        local = self.certs_dir / name
        if not (local / "node.pem").exists():
            certs.issue(str(self.certs_dir), name, "node", out_dir=str(local), file_stem="node", with_ca=True,
                        sans=[self.nodes[name].address], not_before=self._not_before)
        handle, target = self.nodes[name], self.tls_dir(name)
        handle.write_file(target / "ca.pem", (local / "ca.pem").read_bytes())
        self._node_exec(name, ["chmod", "700", str(target)])  # before the key is written
        handle.write_file(target / "node.pem", (local / "node.pem").read_bytes())
        handle.write_file(target / "node.key", (local / "node.key").read_bytes())
        # Owned like the node's directory: the node may run as another user than the one
        # that wrote the files (a container's node user); only that owner can read them.
        self._node_exec(name, ["chown", "-R", f"--reference={handle.workdir}", str(target)])
        self._node_exec(name, ["chmod", "600", str(target / "node.key")])
        self._shipped.add(name)

    def _node_exec(self, name: str, argv: list[str]) -> None:
        rc, _, err = self.nodes[name].exec(argv)
        if rc != 0:
            raise DBError(f"shipping the TLS files of node {name}: `{' '.join(argv)}` failed: {err.strip()}")

    def founding_voters(self) -> list[str]:
        """The initial configuration: the founders given, else every node of the cluster."""
        return list(self.nodes) if self.founders is None else list(self.founders)

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        return self.cluster.nodes

    def addresses(self) -> list[str]:
        return [endpoint(h) for h in self.nodes.values()]

    def argv(self, name: str) -> list[str]:
        handle = self.nodes[name]
        # A founder's --peers is the initial configuration, the same on every founder. A
        # joiner's --peers only gives addresses: it gets every node's, because it learns
        # later members' addresses only by applying the log, and it must answer a leader
        # that was not a founder before it can apply anything.
        listed = list(self.nodes) if name in self.joiners else self.founding_voters()
        if name in self.joiners and is_sharded(self.node_options):
            # A sharded joiner's --peers are the founders (and itself): they name the cluster
            # (its placement and metadata group); later nodes' addresses are in the shard map.
            listed = [n for n in self.nodes if n in self.founding_voters() or n == name]
        peers = ",".join(f"{n}={endpoint(self.nodes[n])}" for n in listed)
        # A backend whose nodes run elsewhere (a container, a remote host) names the
        # interpreter there as its handle's ``python``; otherwise it is this one.
        python = getattr(handle, "python", None) or self.python
        argv = [python, "-m", "ukehi.cli", "node", "--id", name,
                "--listen", endpoint(handle), "--peers", peers,
                "--data-dir", str(self.data_dir(name)),
                "--read-mode", self.read_mode, "--corruption-policy", self.corruption_policy]
        if name in self.joiners:
            argv.append("--join")
        argv += ["--insecure"] if self.insecure else ["--tls-dir", str(self.tls_dir(name))]
        for key, value in {**DEFAULT_NODE_OPTIONS, **self.node_options}.items():
            if value is not None:
                argv += [NODE_OPTION_FLAGS[key], str(value)]
        return argv

    def data_dir(self, name: str) -> Path:
        return Path(self.nodes[name].workdir) / "data"

    def start_fresh(self, name: str) -> int:
        """Stop the node, wipe its data dir and start it as a new node waiting to be added."""
        handle = self.nodes[name]
        if handle.process_state() == "T":
            handle.resume()  # a stopped process cannot act on SIGTERM
        handle.stop()
        rc, _, err = handle.exec(["rm", "-rf", str(self.data_dir(name))])
        if rc != 0:
            raise DBError(f"could not wipe the data dir of {name} ({self.data_dir(name)}): {err.strip()}")
        self.joiners.add(name)
        return self.start(name)

    def log_path(self, name: str) -> Path:
        return Path(self.nodes[name].workdir) / "node.log"

    def start(self, name: str) -> int:
        handle = self.nodes[name]
        env = dict(handle.clock_env()) if self.use_fake_clock else {}
        if self.node_options.get("unsafe_bug"):
            env["UKEHI_I_KNOW_THIS_IS_UNSAFE"] = "1"
        self._ship_certs(name)
        return handle.start(self.argv(name), env=env, log_path=self.log_path(name))

    async def start_node(self, name: str) -> int:
        return await asyncio.to_thread(self.start, name)

    def start_all(self) -> None:
        for name in self.nodes:
            self.start(name)

    def stop_all(self) -> None:
        """Stop every node; a node found already exited with a non-zero status of its own
        (not a kill: those are negative) is a crash, recorded in ``exited`` and run.log."""
        for name, handle in self.nodes.items():
            running = handle.is_running()
            if running and handle.process_state() == "T":
                handle.resume()  # a stopped process cannot act on SIGTERM
            status = handle.stop()
            if not running and status is not None and status > 0:
                self.exited[name] = status
                log.warning("node %s had exited on its own with status %d: %s", name, status,
                            NODE_EXIT_MEANINGS.get(status, "crashed"))

    def last_log_lines(self, name: str, count: int = 15) -> str:
        # Through the handle: on ssh and docker the log lives on the node, not on this disk.
        try:
            data = self.nodes[name].read_file(self.log_path(name))
        except Exception:  # noqa: BLE001 - a missing log must not hide the real error
            return "(no log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-count:])

    async def statuses(self, timeout: float = 1.0,
                       names: Sequence[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """Each node's status (or only those of ``names``), by node name; None for a node that
        does not answer. A paused node costs a whole ``timeout``: leave it out to poll fast."""
        chosen = list(self.nodes) if names is None else [n for n in self.nodes if n in names]
        async with UkehiClient(self.addresses(), timeout=timeout) as client:
            results = await asyncio.gather(*(client.status(endpoint(self.nodes[n]), timeout=timeout)
                                             for n in chosen))
        return {n: (r.value if r.ok else None) for n, r in zip(chosen, results)}

    async def leader(self) -> str | None:
        """The leader of the newest term: a cut-off old leader may still claim an older one."""
        statuses = await self.statuses()
        leaders = [(status.get("term", 0), name) for name, status in statuses.items()
                   if status and status.get("role") == "leader"]
        return max(leaders)[1] if leaders else None

    async def node_clock(self, name: str, timeout: float = 1.0) -> float | None:
        # Only this node: asking all of them would wait out any paused node's timeout, and
        # the reading would then look that much behind when compared with our clock.
        address = endpoint(self.nodes[name])
        async with UkehiClient([address], timeout=timeout) as client:
            result = await client.status(address, timeout=timeout)
        status = result.value if result.ok else None
        return float(status["clock"]) if status and "clock" in status else None

    async def wait_for_leader(self, timeout: float = 30.0, *, nodes_may_be_down: bool = False) -> str:
        """Until one node is leader; DBError with log tails if not.

        At start-up a node that exited is an error at once (its log says why). After
        faults, ``nodes_may_be_down`` lets the live nodes elect while some stay down on
        purpose (e.g. a node whose corruption policy refused to start).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, handle in self.nodes.items():
                if not nodes_may_be_down and not handle.is_running():
                    raise DBError(f"node {name} exited at start; last lines of its log "
                                  f"({self.log_path(name)}):\n{self.last_log_lines(name)}")
            leader = await self.leader()
            if leader is not None and is_sharded(self.node_options):
                # Sharded: up means a leader in every shard, not one node leading something.
                leader = leader if every_shard_led(await self.statuses()) else None
            if leader is not None:
                return leader
            await asyncio.sleep(0.2)
        tails = "\n".join(f"--- {n} ---\n{self.last_log_lines(n, 5)}" for n in self.nodes)
        raise DBError(f"no leader after {timeout:.0f} s; node log tails:\n{tails}")

    def log_text(self, name: str) -> str:
        """The node's whole log (through the handle: it may live on another host)."""
        try:
            return self.nodes[name].read_file(self.log_path(name)).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - no log is "nothing says why", not an error here
            return ""

    def _probe_peers(self, name: str) -> str | None:
        """From inside node ``name``'s network, connect to every other node's port: None if
        all answered, else what failed (or why the probe could not run)."""
        handle = self.nodes[name]
        python = getattr(handle, "python", None) or self.python
        others = [endpoint(h) for n, h in self.nodes.items() if n != name]
        rc, out, err = handle.exec([python, "-c", _PROBE, *others], timeout=15.0)
        if rc == 0:
            return None
        return (out.strip() or err.strip() or f"probe exit status {rc}")[:300]

    async def diagnose_startup(self, timeout: float) -> dict[str, Any]:
        """Whose fault a start-up without a leader is (checkers/availability.py judges it).

        ``cause`` is ``build`` only when the log of a node that exited says the build did it
        (a traceback, a fatal or invariant-violated event) and no node exited because of
        the machine, or when nobody was elected although every node runs and answers, every
        node reaches every other node's port, and ``timeout`` held at least
        ELECTIONS_IN_STARTUP_BOUND of the longest configured election timeouts. Anything
        else (a port in use, a missing module, a network that does not connect, a node that
        does not answer) is ``environment`` or ``unexplained``: the harness could not test.
        """
        from checkers.availability import classify_exit

        nodes: dict[str, dict[str, Any]] = {}
        for name, handle in self.nodes.items():
            if not handle.is_running():
                cause, reason = classify_exit(self.log_text(name), None, fresh=True)
                nodes[name] = {"cause": cause, "reason": f"exited at start: {reason}"}
        if nodes:
            causes = {v["cause"] for v in nodes.values()}
            cause = ("environment" if "environment" in causes else
                     "build" if "build" in causes else "unexplained")
            reason = "; ".join(f"{n} {v['reason']}" for n, v in sorted(nodes.items()))
            return {"cause": cause, "reason": reason, "nodes": nodes}
        statuses = await self.statuses(timeout=2.0)
        silent = sorted(n for n, st in statuses.items() if st is None)
        if silent:
            return {"cause": "unexplained", "nodes": nodes,
                    "reason": f"no leader, and {', '.join(silent)} did not answer a status request"}
        leaders = sorted(n for n, st in statuses.items() if st and st.get("role") == "leader")
        if leaders:
            return {"cause": "unexplained", "nodes": nodes,
                    "reason": f"{', '.join(leaders)} became leader just after the {timeout:.0f} s bound"}
        longest = max(max((st or {}).get("election_timeout_ms") or [0]) for st in statuses.values())
        if longest <= 0 or timeout * 1000 < ELECTIONS_IN_STARTUP_BOUND * longest:
            return {"cause": "environment", "nodes": nodes,
                    "reason": f"no leader in {timeout:.0f} s, but the election timeout is up to {longest} ms: "
                              f"fewer than {ELECTIONS_IN_STARTUP_BOUND} elections fit in the wait (a setting, "
                              f"not the build)"}
        unreachable = {}
        for name in self.nodes:
            problem = await asyncio.to_thread(self._probe_peers, name)
            if problem is not None:
                unreachable[name] = problem
        if unreachable:
            return {"cause": "environment", "nodes": nodes,
                    "reason": "no leader, but the nodes cannot all reach each other: "
                              + "; ".join(f"from {n}: {p}" for n, p in sorted(unreachable.items()))}
        seen = ", ".join(f"{n} {st.get('role')} of term {st.get('term')}" for n, st in sorted(statuses.items()) if st)
        for name, st in statuses.items():
            nodes[name] = {"cause": "build", "reason": f"{st.get('role')} of term {st.get('term')}"}
        return {"cause": "build", "nodes": nodes,
                "reason": f"no leader elected in {timeout:.0f} s ({timeout * 1000 / longest:.0f} of the longest "
                          f"election timeouts, {longest} ms) while every node ran and answered and every node "
                          f"could reach every other: {seen}"}
