"""`ukehi kv ...`: talk to a running cluster from a terminal or a script.

    ukehi kv put greeting hello --cluster 127.0.0.1:7001,127.0.0.1:7002
    ukehi kv get greeting --cluster 127.0.0.1:7001        # prints: hello
    ukehi kv status --json --cluster 127.0.0.1:7001

Exit codes: 0 the operation took effect (for `get` also when the key is absent: nothing is
printed and stderr says so), 1 it certainly did not take effect (e.g. cas compare failed,
refused by fencing, no leader; a read (`get`, `status`) that got no answer: a read has no
effect; no address of --cluster is a Ukehi node), 2 the outcome of a write is unknown
(timeout or connection lost after sending; it may still take effect), 254 bad arguments.
`--json` prints one JSON object with `outcome`, `value`, `error`, `message` (and for
`status` the node's status keys).

Before the operation every --cluster address is asked for its status, within the connect
timeout (1 s, or --timeout if shorter): an address that answers with bytes that are not a
Ukehi frame, or closes the connection without answering, is "not a Ukehi node at H:P" and is
left out (a warning says so); when no address answers as a Ukehi node in that time the
command stops there, with nothing sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ukehi.client import CONNECT_FAILED, CONNECTION_LOST, FAIL, OK, TIMEOUT, UNKNOWN, Result, UkehiClient, parse_cluster
from ukehi.tls import ClientTLS, TLSError

__all__ = ["add_arguments", "run", "EXIT_OK", "EXIT_FAILED", "EXIT_UNKNOWN", "EXIT_BAD_ARGUMENT"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNKNOWN = 2
EXIT_BAD_ARGUMENT = 254

# Commands that only read: one that got no answer certainly changed nothing.
READS = frozenset({"get", "status"})
NOT_UKEHI = "not_ukehi"  # client-side error code: the address does not speak Ukehi's protocol
CONNECT_TIMEOUT = 1.0  # UkehiClient's default connect timeout

STATUS_KEYS = (
    "id", "role", "term", "leader", "leader_address", "commit_index", "applied_index",
    "members", "learners", "recovering", "clock", "pid", "fsync", "bad_peer_messages",
)


def _value(text: str, as_int: bool) -> Any:
    if not as_int:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--int given but {text!r} is not an integer") from None


def _micro_op(text: str) -> list[Any]:
    """One ``ukehi kv txn`` micro-op: ``r:KEY``, ``w:KEY:VALUE`` or ``append:KEY:VALUE``
    (VALUE an integer when it reads as one, else a string)."""
    parts = text.split(":", 2)
    f = parts[0]
    if f not in ("r", "w", "append") or len(parts) != (2 if f == "r" else 3) or not parts[1]:
        raise argparse.ArgumentTypeError(
            f"micro-op {text!r}: write r:KEY, w:KEY:VALUE or append:KEY:VALUE")
    if f == "r":
        return ["r", parts[1], None]
    value: Any = parts[2]
    try:
        value = int(value)
    except ValueError:
        pass
    return [f, parts[1], value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    # UKEHI_CLUSTER is the default, as ETCDCTL_ENDPOINTS is etcdctl's: set it once per shell.
    env_cluster = os.environ.get("UKEHI_CLUSTER", "").strip() or None
    common.add_argument(
        "--cluster", required=env_cluster is None, default=env_cluster, metavar="HOST:PORT,...",
        help="addresses of one or more nodes (the client finds the leader); default: $UKEHI_CLUSTER",
    )
    common.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="give up after this long (default 5); the outcome is then unknown")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument(
        "--tls-dir", default=os.environ.get("UKEHI_TLS_DIR") or None, metavar="DIR",
        help="mutual TLS: ca.pem and client.pem/client.key and/or admin.pem/admin.key (admin verbs "
             "use the admin pair); default: $UKEHI_TLS_DIR, else plain TCP")
    sub = parser.add_subparsers(dest="kv_command", metavar="COMMAND", parser_class=type(parser))
    sub.required = True

    p = sub.add_parser("get", parents=[common], help="print the value of KEY (linearizable read)")
    p.add_argument("key")
    p = sub.add_parser("put", parents=[common], help="set KEY to VALUE")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--int", action="store_true", help="store VALUE as an integer")
    p = sub.add_parser("cas", parents=[common], help="set KEY to NEW if it holds EXPECTED")
    p.add_argument("key")
    p.add_argument("expected", nargs="?", help="omit with --absent")
    p.add_argument("new")
    p.add_argument("--absent", action="store_true", help="succeed only if KEY does not exist")
    p.add_argument("--int", action="store_true", help="EXPECTED and NEW are integers")
    p = sub.add_parser("delete", parents=[common], help="remove KEY")
    p.add_argument("key")
    p = sub.add_parser("fenced-put", parents=[common],
                       help="set KEY to VALUE unless a higher fencing TOKEN was accepted for it")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("token", type=int)
    p.add_argument("--int", action="store_true", help="store VALUE as an integer")
    p = sub.add_parser("acquire", parents=[common], help="take LOCK for OWNER; prints the fencing token")
    p.add_argument("lock")
    p.add_argument("owner")
    p.add_argument("--ttl-ms", type=int, default=10_000)
    p = sub.add_parser("release", parents=[common], help="release LOCK held by OWNER")
    p.add_argument("lock")
    p.add_argument("owner")
    p.add_argument("--token", type=int)
    p = sub.add_parser("status", parents=[common], help="one node's status (the first --cluster address)")
    p.add_argument("--all", action="store_true", help="status of every --cluster address")
    p = sub.add_parser("add-node", parents=[common], help="admin: add node ID at ADDRESS as a voter")
    p.add_argument("node")
    p.add_argument("address")
    p = sub.add_parser("remove-node", parents=[common], help="admin: remove node ID")
    p.add_argument("node")
    p = sub.add_parser("transfer-leader", parents=[common], help="admin: make NODE the leader")
    p.add_argument("node", nargs="?")
    p.add_argument("--shard", type=int, metavar="S", help="sharded cluster: of shard S's group")
    p = sub.add_parser("snapshot", parents=[common], help="admin: take a snapshot now")
    p.add_argument("--shard", type=int, metavar="S", help="sharded cluster: of shard S's group")
    p = sub.add_parser("checksum", parents=[common],
                       help="admin: consistency check: every replica logs its state's digest at one log index "
                            "(event=state-digest); prints the leader's index, digest and key count")
    p.add_argument("--shard", type=int, metavar="S", help="sharded cluster: of shard S's group")
    p = sub.add_parser("move-replica", parents=[common],
                       help="admin, sharded cluster: move shard S's replica from node A to node B")
    p.add_argument("--shard", type=int, metavar="S", required=True)
    p.add_argument("--from", dest="src", metavar="A", required=True, help="a member of the shard now")
    p.add_argument("--to", dest="dst", metavar="B", required=True, help="a node that does not host the shard")
    p = sub.add_parser("rebalance", parents=[common],
                       help="admin, sharded cluster: the node set and the replica moves that add-node/remove-node "
                            "started (they run --max-moves at a time)")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait until the rebalance is done")
    p = sub.add_parser("append", parents=[common], help="append VALUE to the list at KEY; prints the log index")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--int", action="store_true", help="append VALUE as an integer")
    p = sub.add_parser("txn", parents=[common],
                       help="run micro-ops atomically: r:KEY w:KEY:VALUE append:KEY:VALUE ...; "
                            "prints each with what the reads saw, and the log index")
    p.add_argument("ops", nargs="+", type=_micro_op, metavar="MICRO-OP")


def _exit_code(result: Result) -> int:
    if result.outcome == OK:
        return EXIT_OK
    if result.outcome == FAIL:
        return EXIT_FAILED
    return EXIT_UNKNOWN


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _not_ukehi_reason(result: Result) -> str | None:
    """Why a status probe's result shows the address is not a Ukehi node (None: it may be)."""
    message = result.message or ""
    if result.ok:
        return None
    if "protocol error" in message:
        return "it answered with bytes that are not a Ukehi frame"
    if result.error == CONNECTION_LOST or (result.error == CONNECT_FAILED and "closed" in message):
        return "it closed the connection without answering"
    if result.error == TIMEOUT and result.outcome == UNKNOWN:
        return "no answer to a status request"
    return None  # refused, unreachable, TLS refused...: the operation's own error says it better


async def _probe(addresses: list[str], timeout: float, tls: ClientTLS | None = None) -> dict[str, str]:
    """Ask every address for its status at once; address -> why it is not (or may not be) a
    Ukehi node, for the addresses that did not answer like one."""
    async def one(address: str) -> tuple[str, str | None]:
        async with UkehiClient([address], timeout=timeout, connect_timeout=timeout, tls=tls) as probe:
            return address, _not_ukehi_reason(await probe.status(address, timeout=timeout))
    found = await asyncio.gather(*(one(a) for a in addresses))
    return {address: why for address, why in found if why is not None}


async def _run(args: argparse.Namespace) -> tuple[Result, Any]:
    cmd = args.kv_command
    addresses = [_fmt(a) for a in parse_cluster(args.cluster)]
    if cmd == "status" and args.all:
        return await _status_all(args, addresses)
    limit = min(CONNECT_TIMEOUT, args.timeout)
    strangers = await _probe(addresses, limit, args.tls)
    if args.tls is None:
        # A node talks mutual TLS unless started with --insecure, and closes plain connections.
        strangers = {a: (f"{why}; a Ukehi node with mutual TLS does that to a client without "
                         "certificates: give --tls-dir or set UKEHI_TLS_DIR"
                         if why.startswith("it closed") else why) for a, why in strangers.items()}
    if len(strangers) == len(addresses):
        silent = all(why.startswith("no answer") for why in strangers.values())
        text = "; ".join(f"not a Ukehi node at {a} ({why} within {limit:g} s)" if why.startswith("no answer")
                         else f"not a Ukehi node at {a} ({why})" for a, why in strangers.items())
        if silent:
            text += "; a paused or overloaded node says nothing either"
        return Result(FAIL, error=NOT_UKEHI, message=text + "; nothing was sent", node=addresses[0]), None
    for address, why in strangers.items():
        print(f"ukehi kv: warning: not a Ukehi node at {address} ({why}); using the other addresses",
              file=sys.stderr)
    cluster = [a for a in addresses if a not in strangers]
    async with UkehiClient(cluster, timeout=args.timeout, tls=args.tls) as c:
        if cmd == "get":
            return await c.get(args.key), None
        if cmd == "put":
            return await c.put(args.key, _value(args.value, args.int)), None
        if cmd == "cas":
            expected = None if args.absent else _value(args.expected, args.int)
            return await c.cas(args.key, expected, _value(args.new, args.int)), None
        if cmd == "delete":
            return await c.delete(args.key), None
        if cmd == "fenced-put":
            return await c.fenced_put(args.key, _value(args.value, args.int), args.token), None
        if cmd == "acquire":
            return await c.acquire(args.lock, args.owner, args.ttl_ms), None
        if cmd == "release":
            return await c.release(args.lock, args.owner, args.token), None
        if cmd == "status":
            return await c.status(_fmt(c.addresses[0])), None
        if cmd == "add-node":
            return await c.add_node(args.node, args.address), None
        if cmd == "remove-node":
            return await c.remove_node(args.node), None
        if cmd == "transfer-leader":
            return await c.transfer_leader(args.node, shard=args.shard), None
        if cmd == "snapshot":
            return await c.snapshot(shard=args.shard), None
        if cmd == "checksum":
            return await c.checksum(shard=args.shard), None
        if cmd == "move-replica":
            return await c.move_replica(args.shard, args.src, args.dst, timeout=max(args.timeout, 60.0)), None
        if cmd == "rebalance":
            if args.wait is not None:
                return await c.wait_rebalanced(args.wait), None
            return await c.rebalance_status(), None
        if cmd == "append":
            return await c.append(args.key, _value(args.value, args.int)), None
        if cmd == "txn":
            return await c.txn(args.ops), None
    raise AssertionError(f"unhandled kv command {cmd}")


async def _status_all(args: argparse.Namespace, addresses: list[str]) -> tuple[Result, Any]:
    """`status --all`: every address's status; the ones that did not answer are named."""
    async with UkehiClient(addresses, timeout=args.timeout, tls=args.tls) as c:
        every = await c.cluster_status()
    down = {a: r for a, r in every.items() if not r.ok}
    for address, r in down.items():
        why = _not_ukehi_reason(r)
        if why is not None and not why.startswith("no answer"):
            every[address] = Result(FAIL, error=NOT_UKEHI, message=f"not a Ukehi node at {address} ({why})",
                                    node=address)
    value = {a: r.to_dict() for a, r in every.items()}
    if not down:
        return Result(OK, value=value), every
    named = ", ".join(f"{a} ({every[a].error}: {every[a].message})" for a in down)
    return Result(FAIL, value=value, error="some_nodes_unreachable",
                  message=f"{len(down)} of {len(every)} unreachable: {named}"), every


def _print_human(cmd: str, result: Result, extra: Any) -> None:
    if cmd == "status" and extra is not None:  # --all: every node's line, reachable or not
        for addr, r in extra.items():
            print(f"{addr}: " + (_status_line(r.value) if r.ok else f"unreachable ({r.error}: {r.message})"))
        statuses = [r.value for r in extra.values() if r.ok and isinstance(r.value, dict)]
        if any(isinstance(st.get("shards"), dict) for st in statuses):
            for line in shard_leader_lines(statuses):
                print(line)
        if not result.ok:
            print(f"ukehi kv status: {result.message}", file=sys.stderr)
        return
    if not result.ok:
        where = f" ({result.node})" if result.node else ""
        what = "did not happen" if result.outcome == FAIL else "outcome UNKNOWN (it may still take effect)"
        print(f"ukehi kv {cmd}: {what}: {result.error}: {result.message}{where}", file=sys.stderr)
        return
    value = result.value
    if cmd == "get":
        if value is None:
            print("(key absent)", file=sys.stderr)
        else:
            print(value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value)
    elif cmd == "status":
        for k in STATUS_KEYS:
            if isinstance(value, dict) and k in value:
                print(f"{k}: {value[k]}")
        if isinstance(value, dict) and isinstance(value.get("shards"), dict):
            for line in shard_lines(value):
                print(line)
    elif cmd in ("acquire", "snapshot"):
        print(value)
    elif cmd == "txn" and isinstance(value, dict):
        for f, k, v in value.get("ops", []):
            print(f"{f} {k} {json.dumps(v, default=str)}")
        if value.get("index") is not None:
            print(f"index: {value['index']}")
    elif isinstance(value, dict):
        for k, v in value.items():
            print(f"{k}: {','.join(map(str, v)) if isinstance(v, list) else v}")
    elif value is not None and cmd not in ("put", "delete", "cas", "fenced-put"):
        print(value)


def _status_line(status: Any) -> str:
    if not isinstance(status, dict):
        return str(status)
    line = " ".join(f"{k}={status.get(k)}" for k in ("id", "role", "term", "leader", "commit_index", "applied_index"))
    if isinstance(status.get("shards"), dict):
        line += f" epoch={status.get('epoch')} shards={','.join(sorted(status['shards'], key=int)) or 'none'}"
    return line


def shard_lines(status: dict[str, Any]) -> list[str]:
    """One node's groups, a line per shard it hosts: its role there and the shard's leader."""
    out = [f"shard map: epoch {status.get('epoch')}, {status.get('shard_count')} shards, replication factor "
           f"{status.get('replication_factor')}; this node hosts {len(status['shards'])}:"]
    for shard, g in sorted(status["shards"].items(), key=lambda kv: int(kv[0])):
        out.append(f"  shard {shard:>4} group {g.get('group'):>4} {g.get('role'):<9} term {g.get('term'):>3} "
                   f"leader {g.get('leader') or '-':<6} commit {g.get('commit_index')} applied "
                   f"{g.get('applied_index')} members {','.join(g.get('members') or [])}")
    meta = status.get("metadata")
    committed = "committed" if status.get("shard_map_committed") else "not seen committed"
    if isinstance(meta, dict):
        out.append(f"  metadata group 0: {meta.get('role')} term {meta.get('term')} leader {meta.get('leader') or '-'} "
                   f"members {','.join(meta.get('members') or [])}; the map: {committed}")
    elif status.get("metadata_members"):
        out.append(f"  metadata group 0 on {','.join(status['metadata_members'])} (not this node)")
    for move in status.get("moves") or []:
        out.append(f"  move in flight (epoch {status.get('epoch')}): shard {move.get('shard')} from "
                   f"{move.get('from')} to {move.get('to')}")
    if status.get("metadata_move"):
        src, dst = status["metadata_move"]
        out.append(f"  move in flight (epoch {status.get('epoch')}): metadata group 0 from {src} to {dst}")
    for shard, move in sorted((status.get("moving") or {}).items(), key=lambda kv: int(kv[0])):
        # -1: the metadata group's own replica (run by its leader when a member is removed)
        what = "the metadata group" if int(shard) < 0 else f"shard {shard}"
        out.append(f"  this node runs the move of {what} from {move.get('from')} to {move.get('to')}: "
                   f"step {move.get('step')}")
    return out


def shard_leader_lines(statuses: list[dict[str, Any]]) -> list[str]:
    """Every shard's leader as the answering nodes see it: the node that leads it at the
    highest term (a cut-off old leader may still claim an older one), and who hosts it."""
    leaders: dict[int, tuple[int, str]] = {}
    hosts: dict[int, list[str]] = {}
    count = 0
    for st in statuses:
        count = max(count, int(st.get("shard_count") or 0))
        for shard, g in (st.get("shards") or {}).items():
            hosts.setdefault(int(shard), []).append(str(st.get("id")))
            if g.get("role") == "leader":
                best = leaders.get(int(shard))
                if best is None or int(g.get("term") or 0) > best[0]:
                    leaders[int(shard)] = (int(g.get("term") or 0), str(st.get("id")))
    out = ["leaders per shard:"]
    for shard in range(count):
        lead = leaders.get(shard)
        out.append(f"  shard {shard:>4} leader {lead[1] if lead else 'none':<6} "
                   f"{f'term {lead[0]}' if lead else '(no answering node leads it)':<12} "
                   f"hosts {','.join(sorted(hosts.get(shard, []))) or '(none answered)'}")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        parse_cluster(args.cluster)
    except ValueError as e:
        print(f"ukehi kv: error: --cluster: {e}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    if getattr(args, "kv_command", None) == "cas" and (args.absent == (args.expected is not None)):
        print("ukehi kv cas: error: give either EXPECTED or --absent (not both)", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    if args.timeout <= 0:
        print("ukehi kv: error: --timeout must be > 0 seconds", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    try:
        args.tls = ClientTLS.from_dir(args.tls_dir) if args.tls_dir else None
    except TLSError as e:
        print(f"ukehi kv: error: --tls-dir: {e}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    try:
        result, extra = asyncio.run(_run(args))
    except argparse.ArgumentTypeError as e:
        print(f"ukehi kv: error: {e}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    if args.kv_command in READS and result.unknown:
        # A read changes nothing: one that got no answer certainly did not happen.
        result = Result(FAIL, error=result.error, node=result.node, leader_hint=result.leader_hint,
                        message=f"{result.message} (a read has no effect: nothing happened)")
    if args.json:
        out = result.to_dict()
        if args.kv_command == "status" and result.ok and isinstance(result.value, dict) and extra is None:
            # status --json: the node's keys at the top level, for scripts.
            out = {**result.value, "outcome": result.outcome}
        print(json.dumps(out, default=str, sort_keys=True))
    else:
        _print_human(args.kv_command, result, extra)
    return _exit_code(result)
