"""`ukehi-jepsen run`, `analyze` and `cleanup`."""

from __future__ import annotations

import signal
import sys
from typing import Any, Optional, Sequence

import typer

from ..cli import EXIT_BAD_ARGUMENT, EXIT_CRASHED, EXIT_INVALID, EXIT_UNKNOWN, EXIT_VALID, BadArgument
from ..registry import DEFAULT_NEMESIS_INTERVAL, NEMESES, WORKLOADS, default_nemeses, parse_nemeses
from ..sharding import DEFAULT_SHARDED_NEMESES, shard_options, sharded_workload_options
from ..spec import SpecError, TestSpec, default_node_names, parse_concurrency
from ..store import StoreError, check_writable, resolve_run


def exit_code(valid: Any) -> int:
    if valid is True:
        return EXIT_VALID
    if valid is False:
        return EXIT_INVALID
    return EXIT_UNKNOWN


def _verdict_word(valid: Any) -> str:
    return {True: "VALID", False: "INVALID"}.get(valid, "UNKNOWN")


def print_summary(verdict: dict[str, Any], run_path: str) -> None:
    partial = f" (incomplete: stopped by {verdict['interrupted_by']})" if verdict.get("incomplete") else ""
    print(f"{_verdict_word(verdict['valid'])}{partial}: {verdict.get('ops', 0)} client ops; results in {run_path}")
    checkers = verdict.get("checkers", {})
    width = max((len(name) for name in checkers), default=0)  # one column, however long the names
    for name, result in checkers.items():
        line = f"  {name:<{width}}  {_verdict_word(result.get('valid'))}"
        explanation = result.get("explanation") or result.get("error")
        if explanation and result.get("valid") is not True:
            line += f": {explanation}"
        print(line)


def build_spec(*, workload: str, nemesis: Optional[str], nemesis_interval: Optional[float], nodes: Optional[str],
               node_count: Optional[int], concurrency: str, rate: float, time_limit: float,
               seed: int, backend: str, read_mode: str, corruption_policy: str, results_dir: str,
               leave_running: bool, name: Optional[str], node_option: list[str],
               workload_option: Optional[list[str]] = None,
               ssh: Optional[dict[str, Any]] = None, insecure: bool = False,
               shards: Optional[int] = None, replication_factor: Optional[int] = None) -> TestSpec:
    if workload not in WORKLOADS:
        raise SpecError(f"--workload {workload!r}: choose one of {', '.join(WORKLOADS)}")
    if nemesis is None and shards is not None:  # the faults a sharded run supports
        nemesis = DEFAULT_SHARDED_NEMESES
    if nemesis is None:  # no --nemesis: the default mix (harness/registry.py default_nemeses)
        nemesis = ",".join(default_nemeses(workload, backend))
        nemesis_interval = DEFAULT_NEMESIS_INTERVAL if nemesis_interval is None else nemesis_interval
    nemesis_interval = 5.0 if nemesis_interval is None else nemesis_interval
    if backend == "ssh" and nodes and nodes.strip().isdigit():
        raise SpecError(f"--nodes {nodes.strip()}: with --backend ssh, --nodes are the hosts "
                        "(names or addresses, e.g. 10.0.0.11,10.0.0.12,10.0.0.13), not a count")
    names = node_names(nodes, node_count)
    try:
        nemeses = parse_nemeses(nemesis)
    except ValueError as err:
        raise SpecError(str(err)) from None
    options = check_node_options(_key_values("--node-option", node_option, "heartbeat=50"))
    options.update(shard_options(shards, replication_factor, len(names), workload, nemeses))
    workload_options = _key_values("--workload-option", workload_option or [], "values=1000")
    # a sharded list-append/rw-register run: its workload keeps each transaction in one shard
    workload_options = sharded_workload_options(workload, options, workload_options)
    clients = parse_concurrency(concurrency, len(names))
    try:  # the workload checks its options now, not after the cluster is up
        WORKLOADS[workload]([], clients, workload_options)
    except ValueError as err:
        raise SpecError(f"--workload-option: {err}") from None
    check_writable(results_dir)
    return TestSpec(
        name=name or f"{workload}-{'+'.join(nemeses) or 'none'}",
        workload=workload, nodes=tuple(names), backend=backend, nemeses=nemeses,
        nemesis_interval=nemesis_interval, concurrency=clients,
        rate=rate, time_limit=time_limit, seed=seed, read_mode=read_mode,
        corruption_policy=corruption_policy, results_dir=results_dir, leave_running=leave_running,
        node_options=options, workload_options=workload_options, insecure=insecure, **(ssh or {}))


def node_names(nodes: Optional[str], node_count: Optional[int], *, default: int = 3,
               most: Optional[int] = None) -> list[str]:
    """``--nodes`` and ``--node-count``, read the same way by ``run`` and ``cluster up``:
    ``--nodes`` takes node names (``n1,n2,n3``) or how many (``3``: n1..n3), ``--node-count N``
    is ``--nodes N``; neither gives ``default`` nodes."""
    if nodes is not None and node_count is not None:
        raise SpecError("give either --nodes or --node-count, not both")
    flag = "--node-count"
    if nodes is not None and nodes.strip().isdigit():
        flag, node_count, nodes = "--nodes", int(nodes), None
    if nodes is not None:
        names = [n.strip() for n in nodes.split(",") if n.strip()]
        if not names:
            raise SpecError(f"--nodes {nodes!r}: give node names (n1,n2,n3) or how many (3)")
    else:
        count = default if node_count is None else node_count
        if count < 1:
            raise SpecError(f"{flag} {count}: a cluster needs at least 1 node (3 or 5 is usual)")
        names = default_node_names(count)
    if most is not None and len(names) > most:
        raise SpecError(f"{len(names)} nodes: give 1 to {most} (3 or 5 is usual)")
    return names


def _whole_number(minimum: int, unit: str) -> tuple[str, Any]:
    what = f"a whole number{unit} >= {minimum}"

    def parse(text: str) -> int:
        value = int(text)  # ValueError on anything else
        if value < minimum:
            raise ValueError(text)
        return value
    return what, parse


def _one_of(choices: Sequence[str]) -> tuple[str, Any]:
    def parse(text: str) -> str:
        if text.strip().lower() not in choices:
            raise ValueError(text)
        return text
    return f"one of {', '.join(choices)}", parse


def _node_option_kinds() -> dict[str, tuple[str, Any]]:
    """What each ``--node-option`` accepts, as (words for the user, parser raising ValueError)."""
    from ukehi.bugs import ALIASES, KNOWN_BUGS
    from ukehi.config import LOG_LEVELS, ConfigError, parse_timeout_range

    def timeout_range(text: str) -> tuple[int, int]:
        try:
            return parse_timeout_range(text)
        except ConfigError:
            raise ValueError(text) from None
    return {
        "election_timeout": ("MIN:MAX in milliseconds with 10 <= MIN <= MAX, e.g. 300:600", timeout_range),
        "heartbeat": _whole_number(1, " of milliseconds"),
        "snapshot_threshold": _whole_number(1, " of log entries"),
        "max_inflight": _whole_number(1, " of messages"),
        "max_entries_per_message": _whole_number(1, " of entries"),
        "log_level": _one_of(LOG_LEVELS),
        "unsafe_bug": _one_of([*KNOWN_BUGS, *ALIASES]),
        "shards": _whole_number(1, " of shards"),
        "replication_factor": _whole_number(1, " of replicas"),
    }


def check_node_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse a ``--node-option`` the node would refuse, before any node starts: an unknown
    key names the accepted keys, a bad value names what the key takes."""
    from ..db import DEFAULT_NODE_OPTIONS, NODE_OPTION_FLAGS

    kinds = _node_option_kinds()
    for key, value in options.items():
        if key not in NODE_OPTION_FLAGS:
            raise SpecError(f"--node-option {key}={value}: unknown node option {key!r}; accepted: "
                            f"{', '.join(NODE_OPTION_FLAGS)}")
        if key in kinds and value is not None:
            what, parse = kinds[key]
            try:
                parse(str(value))
            except ValueError:
                raise SpecError(f"--node-option {key}={value}: {key} takes {what}") from None
    # Timers that are fine alone but not together: the node refuses an election timeout
    # shorter than two heartbeats (ukehi/config.py), so say it now.
    merged = {**DEFAULT_NODE_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    if "heartbeat" in merged and "election_timeout" in merged:
        heartbeat = kinds["heartbeat"][1](str(merged["heartbeat"]))
        low, _ = kinds["election_timeout"][1](str(merged["election_timeout"]))
        if low < 2 * heartbeat:
            raise SpecError(f"--node-option heartbeat={heartbeat} election_timeout={merged['election_timeout']}: "
                            f"the election timeout's minimum ({low} ms) must be at least twice the heartbeat, "
                            "or followers time out between heartbeats")
    return options


def _key_values(flag: str, items: list[str], example: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{flag} {item!r}: write KEY=VALUE, e.g. {example}")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        workload: str = typer.Option("register", help="register, kv or fencing"),
        nemesis: Optional[str] = typer.Option(
            None, help=f"comma list of faults ({', '.join(NEMESES)}) or none; default: the mix that "
                       "caught the planted bugs, as far as this machine allows (README, Default faults)"),
        nemesis_interval: Optional[float] = typer.Option(
            None, help="mean seconds between fault ops (default 5; 1 with the default mix)"),
        nodes: Optional[str] = typer.Option(None, help="node names (n1,n2,n3) or how many (3); "
                                            "with --backend ssh, the hosts"),
        node_count: Optional[int] = typer.Option(None, help="number of nodes, the same as --nodes N (default 3)"),
        concurrency: str = typer.Option("2n", help="clients: a number, or Nn for N per node"),
        rate: float = typer.Option(50.0, help="target ops/s over all clients"),
        time_limit: float = typer.Option(20.0, help="seconds of the main phase"),
        seed: int = typer.Option(0, help="seed for ops and faults (timing is the system's)"),
        test_count: int = typer.Option(1, help="run the test this many times (seeds seed, seed+1, ...)"),
        backend: str = typer.Option("local", help="local, docker or ssh (with ssh, --nodes are the hosts)"),
        read_mode: str = typer.Option("readindex", help="readindex (linearizable) or lease"),
        corruption_policy: str = typer.Option("truncate-to-last-good",
                                              help="truncate-to-last-good, refuse-start or alert-and-continue"),
        results_dir: str = typer.Option("results", help="where runs are stored"),
        leave_running: bool = typer.Option(False, help="leave the nodes up after the test"),
        insecure: bool = typer.Option(False, help="plain TCP to and between the nodes (default: mutual TLS "
                                      "with a CA made for the run, under <run>/certs)"),
        name: Optional[str] = typer.Option(None, help="test name (default: workload-nemeses)"),
        node_option: list[str] = typer.Option([], help="KEY=VALUE passed to every node, e.g. heartbeat=50"),
        workload_option: list[str] = typer.Option(
            [], help="KEY=VALUE for the workload, e.g. values=1000 or ops=read,write (register)"),
        ssh_user: Optional[str] = typer.Option(None, help="--backend ssh: user on the hosts (default: yours)"),
        ssh_key: Optional[str] = typer.Option(None, help="--backend ssh: private key file (default: agent, ~/.ssh/id_*)"),
        ssh_port: int = typer.Option(22, help="--backend ssh: sshd port of the hosts"),
        ssh_host_key_policy: str = typer.Option(
            "strict", help="--backend ssh: strict (known hosts only), accept-new (trust on first use) or ignore"),
        ssh_known_hosts: Optional[str] = typer.Option(None, help="--backend ssh: known_hosts file "
                                                      "(default ~/.ssh/known_hosts)"),
        ssh_node_port: int = typer.Option(7000, help="--backend ssh: port the node listens on, on each host"),
        nodes_file: Optional[str] = typer.Option(
            None, help="a file of node names or hosts, one a line (# comments), merged with --nodes"),
        junit: Optional[str] = typer.Option(None, help="write JUnit XML to this file: one test case per run (CI)"),
        json_out: bool = typer.Option(False, "--json", help="print the results as JSON on stdout; the summary "
                                      "goes to stderr (CI)"),
        all_failures: bool = typer.Option(False, "--all-failures", help="name every key that fails "
                                          "linearizability (default: stop at the first violation)"),
        shards: Optional[int] = typer.Option(None, "--shards", help="split the keys into S shards, each its own "
                                             "Raft group (default: unsharded); register and kv workloads, "
                                             "partition/kill/pause/clock/packet faults"),
        replication_factor: Optional[int] = typer.Option(None, "--replication-factor", help="members of each "
                                                         "shard's group (default 3, or the node count if fewer)"),
    ) -> None:
        """Start a cluster, run a workload under faults, check the history, write plots."""
        from ..run import run_test

        if test_count < 1:
            raise BadArgument(f"--test-count {test_count}: give 1 or more")
        ssh = dict(ssh_user=ssh_user, ssh_key=ssh_key, ssh_port=ssh_port, ssh_host_key_policy=ssh_host_key_policy,
                   ssh_known_hosts=ssh_known_hosts, ssh_node_port=ssh_node_port)
        from ..ci import CIError, Report, merge_nodes

        try:  # --nodes-file (harness/ci.py)
            nodes = merge_nodes(nodes, nodes_file)
        except CIError as err:
            raise BadArgument(str(err)) from None
        try:
            specs = [build_spec(workload=workload, nemesis=nemesis, nemesis_interval=nemesis_interval,
                                nodes=nodes, node_count=node_count, concurrency=concurrency, rate=rate,
                                time_limit=time_limit, seed=seed + i, backend=backend,
                                read_mode=read_mode, corruption_policy=corruption_policy,
                                results_dir=results_dir, leave_running=leave_running, name=name,
                                node_option=node_option, workload_option=workload_option, ssh=ssh,
                                insecure=insecure, shards=shards, replication_factor=replication_factor)
                     for i in range(test_count)]
        except (SpecError, StoreError) as err:
            raise BadArgument(str(err)) from None
        try:  # --junit and --json: collected per run, written at the end
            report = Report("ukehi-jepsen run", junit, json_out)
        except CIError as err:
            raise BadArgument(str(err)) from None
        rows = []
        worst = EXIT_VALID
        for spec in specs:
            try:
                outcome = run_test(spec, all_failures=all_failures)
            except (SpecError, StoreError) as err:
                raise BadArgument(str(err)) from None
            except Exception as err:
                from ..backends.ssh_connection import SSHError
                from ..db import DBError

                if isinstance(err, SSHError):  # a host we cannot reach or trust: say why, no traceback
                    raise BadArgument(str(err)) from None
                if isinstance(err, DBError):  # the cluster did not come up: the run's run.log has it too
                    print(f"ukehi-jepsen: error: the cluster did not come up: {err}", file=sys.stderr)
                    raise typer.Exit(EXIT_CRASHED) from None
                raise
            print_summary(outcome.verdict, str(outcome.run.path))
            if outcome.interrupted:
                print(f"interrupted ({outcome.interrupted}): partial history kept; check it again with "
                      "`ukehi-jepsen analyze`", file=sys.stderr)
                report.finish()  # the runs that finished, in the JUnit file and the JSON
                # the shell's convention: 128 + the signal's number (130 Ctrl-C, 143 SIGTERM)
                raise typer.Exit(128 + int(getattr(signal.Signals, outcome.interrupted, signal.SIGINT)))
            report.add_run(spec, outcome.verdict, str(outcome.run.path))
            code = exit_code(outcome.verdict["valid"])
            worst = max(worst, code, key=lambda c: {EXIT_VALID: 0, EXIT_UNKNOWN: 1, EXIT_INVALID: 2}[c])
            rows.append((spec.seed, _verdict_word(outcome.verdict["valid"]), outcome.verdict.get("ops", 0),
                         str(outcome.run.path)))
        if test_count > 1:
            print(f"\n{'seed':>6}  {'verdict':<8} {'ops':>7}  run")
            for seed_, word, ops, path in rows:
                print(f"{seed_:>6}  {word:<8} {ops:>7}  {path}")
        report.finish()
        raise typer.Exit(worst)

    @app.command()
    def analyze(
        run_dir: Optional[str] = typer.Argument(None, help="a run directory (default: the latest run)"),
        results_dir: str = typer.Option("results", help="the store to find the latest run in"),
        time_limit: float = typer.Option(120.0, help="checker time budget in seconds"),
        ignore_torn_tail: bool = typer.Option(False, help="check a history whose last line is cut off "
                                              "without that line (exit 254 otherwise)"),
    ) -> None:
        """Re-check and re-render a stored run; exit 0 valid, 1 invalid, 2 unknown, 254 bad input."""
        from ..analysis import check_run

        try:
            run = resolve_run(run_dir, results_dir)
            verdict = check_run(run, time_limit=time_limit, ignore_torn_tail=ignore_torn_tail)
        except StoreError as err:
            raise BadArgument(str(err)) from None
        if verdict.get("history_note"):
            print(f"note: {verdict['history_note']}", file=sys.stderr)
        print_summary(verdict, str(run.path))
        raise typer.Exit(exit_code(verdict["valid"]))

    @app.command()
    def cleanup(
        orphans: bool = typer.Option(
            False, help="also remove, as root, this machine's kernel objects named like a local run's "
            "(network namespaces ukj-<run>-<node>, links ukjb<run> and ukjh<run>N, iptables FORWARD "
            "rules commented ukj-<run>) whose run has no record left in the state dir (e.g. /run wiped "
            "by a reboot); records of live harnesses are never touched. It removes nothing else: no "
            "files or results, nothing on SSH hosts (each run deletes its own fresh remote directory), "
            "and only the Docker objects plain cleanup removes too"),
    ) -> None:
        """Remove processes, namespaces, links, rules and LazyFS mounts left by earlier runs (and their Docker containers).

        Without --orphans only runs with a record in the state dir whose harness is gone are
        cleaned up: their node processes, packet delayers, namespaces, links, FORWARD rules,
        LazyFS mounts, and the containers and networks of Docker runs."""
        from ..backends.docker import cleanup_docker_leftovers
        from ..backends.runstate import cleanup_leftovers
        from ..lazyfs.mount import cleanup_lazyfs_leftovers

        removed = cleanup_leftovers(orphans=orphans)
        # LazyFS mounts (--nemesis lazyfs) of harnesses that are gone: unmounted, daemons stopped.
        removed += cleanup_lazyfs_leftovers()
        # Containers and networks of --backend docker runs whose harness is gone (by label);
        # `cluster up` clusters stay until `cluster down`. Nothing happens without an engine.
        removed += cleanup_docker_leftovers()
        for line in removed:
            print(line)
        print(f"cleanup: removed {len(removed)} leftover(s)")
