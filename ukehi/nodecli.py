"""`ukehi node`: run one Ukehi node in the foreground until SIGTERM/SIGINT.

    ukehi node --id n1 --listen 127.0.0.1:7001 \\
        --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 --data-dir /var/lib/ukehi/n1

Settings may also come from `--config FILE` (JSON or TOML, keys = long flag names); a flag
on the command line overrides the file. Exit codes: 0 after a clean shutdown, 4 when the
RefuseStart corruption policy refused to start (the message names segment and offset; no
file was changed), 254 for a bad flag or config value (`fsync = false` without
UKEHI_I_KNOW_THIS_IS_UNSAFE=1 included), 1 for any other start-up failure (for example the
port is in use) or a crash, 70 when the node stopped itself because a Raft invariant broke
(its log ends with a `level=fatal event=invariant-violated` line).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import sys
from typing import Any

from ukehi.bugs import KNOWN_BUGS, UnsafeBugRefused, check_unsafe_bug
from ukehi.config import (
    CORRUPTION_POLICIES,
    LOG_LEVELS,
    READ_MODES,
    ConfigError,
    NodeConfig,
    build_config,
    format_address,
    load_config_file,
)

__all__ = ["add_arguments", "run", "config_from_args", "EXIT_REFUSE_START", "EXIT_BAD_ARGUMENT"]

EXIT_BAD_ARGUMENT = 254
EXIT_REFUSE_START = 4
EXIT_START_FAILED = 1

# flag dest -> config key (only flags actually given override the config file)
_FLAG_KEYS = {
    "id": "node_id",
    "listen": "listen",
    "peers": "peers",
    "data_dir": "data_dir",
    "corruption_policy": "corruption_policy",
    "read_mode": "read_mode",
    "snapshot_threshold": "snapshot_threshold",
    "snapshot_chunk_size": "snapshot_chunk_size",
    "wal_segment_size": "wal_segment_size",
    "max_inflight": "max_inflight",
    "max_entries_per_message": "max_entries_per_message",
    "election_timeout": "election_timeout",
    "heartbeat": "heartbeat",
    "log_level": "log_level",
    "join": "join",
    "advertise": "advertise",
    "unsafe_bug": "unsafe_bug",
    "tls_dir": "tls_dir",
    "tls_ca": "tls_ca",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "insecure": "insecure",
    "idle_timeout": "idle_timeout",
    "max_connections": "max_connections",
    "shards": "shards",
    "replication_factor": "replication_factor",
    "max_moves": "max_moves",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that "not given" can be told apart from "given the default"
    # when merging with a config file; real defaults live in ukehi.config.
    parser.add_argument("--id", help="this node's id, e.g. n1")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (clients and peers)")
    parser.add_argument(
        "--peers", metavar="ID=HOST:PORT,...",
        help="every founding node, this one included (the initial voters; same on every node)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="directory for the WAL and snapshots")
    parser.add_argument(
        "--corruption-policy", choices=CORRUPTION_POLICIES, type=str.lower,
        help="what to do about a corrupt WAL at start-up (default truncate-to-last-good)",
    )
    parser.add_argument(
        "--read-mode", choices=READ_MODES, type=str.lower,
        help="readindex (default, linearizable) or lease (faster, needs bounded clock drift)",
    )
    parser.add_argument("--snapshot-threshold", type=int, metavar="N",
                        help="compact the log once N applied entries sit in it (default 10000)")
    parser.add_argument("--snapshot-chunk-size", type=int, metavar="BYTES",
                        help="bytes of a snapshot per InstallSnapshot message (default 1048576)")
    parser.add_argument("--wal-segment-size", type=int, metavar="BYTES",
                        help="bytes per WAL segment before it rotates (default 67108864, at least 1024)")
    parser.add_argument("--max-inflight", type=int, metavar="N",
                        help="AppendEntries a leader keeps unacknowledged per follower (default 256; "
                             "1 = stop-and-wait)")
    parser.add_argument("--max-entries-per-message", type=int, metavar="N",
                        help="log entries in one AppendEntries (default 256)")
    parser.add_argument("--election-timeout", metavar="MIN:MAX",
                        help="election timeout range in ms (default 1000:2000)")
    parser.add_argument("--heartbeat", type=int, metavar="MS", help="heartbeat interval in ms (default 100)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, help="default info")
    parser.add_argument("--config", metavar="FILE", help="JSON or TOML file of settings; flags override it")
    parser.add_argument(
        "--join", action="store_true", default=None,
        help="start as a new, empty node that an existing cluster will add (admin add_node)",
    )
    parser.add_argument("--advertise", metavar="HOST:PORT",
                        help="address others use to reach this node (default: its --peers entry)")
    tls = parser.add_argument_group("mutual TLS (default; see `ukehi certs`)")
    tls.add_argument("--tls-dir", metavar="DIR",
                     help="ca.pem and this node's node.pem/node.key (or ID.pem/ID.key)")
    tls.add_argument("--tls-ca", metavar="FILE", help="the cluster CA certificate (overrides --tls-dir)")
    tls.add_argument("--tls-cert", metavar="FILE", help="this node's certificate (CN = node id, OU = node)")
    tls.add_argument("--tls-key", metavar="FILE", help="this node's private key")
    tls.add_argument("--insecure", action="store_true", default=None,
                     help="plain TCP: no encryption, anyone who reaches the port is trusted (logged as a warning)")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                        help="close a connection that sent no complete frame for this long (default 120)")
    parser.add_argument("--max-connections", type=int, metavar="N",
                        help="client connections served at once (default 512; peers have a reserve beyond it)")
    shard = parser.add_argument_group("sharding (fixed when the cluster is made; the same on every node)")
    shard.add_argument("--shards", type=int, metavar="S",
                       help="split the keys into S shards, each its own Raft group (default: unsharded, "
                            "one group)")
    shard.add_argument("--replication-factor", type=int, metavar="R",
                       help="members of each shard's group, placed by consistent hashing over --peers "
                            "(default 3, or fewer founders)")
    shard.add_argument("--max-moves", type=int, metavar="K",
                       help="replica moves in flight in the whole cluster at once (default 2): a move "
                            "asked for while K are in the shard map is refused, to be retried")
    parser.add_argument(
        "--unsafe-bug", metavar="NAME",
        help="TEST ONLY: plant a bug ("
        + "; ".join(f"{k}: {v}" for k, v in KNOWN_BUGS.items())
        + "); needs UKEHI_I_KNOW_THIS_IS_UNSAFE=1",
    )


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Merge the config file (if any) with the flags given; raises ConfigError."""
    settings: dict[str, Any] = {}
    if getattr(args, "config", None):
        settings.update(load_config_file(args.config))
        if "id" in settings and "node_id" not in settings:
            settings["node_id"] = settings.pop("id")
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            settings[key] = value
    _check_address_syntax(settings)
    config = build_config(settings)
    try:
        check_unsafe_bug(config.unsafe_bug)
    except UnsafeBugRefused as e:
        raise ConfigError(str(e)) from None
    _check_listen_resolves(config, settings)
    return config


_BRACKETED = re.compile(r"^\[([^\[\]]+)\]:(\d+)$")


def _check_address_syntax(settings: dict[str, Any]) -> None:
    """HOST:PORT texts that cannot be an address (an unclosed bracket, a bracketed host that
    is not IPv6) are refused here, naming the address, before anything tries to bind to them."""
    texts: list[tuple[str, str]] = []
    for key in ("listen", "advertise"):
        if isinstance(settings.get(key), str):
            texts.append((f"--{key}", settings[key]))
    peers = settings.get("peers")
    if isinstance(peers, str):
        for part in peers.split(","):
            node_id, sep, addr = part.strip().partition("=")
            if sep:
                texts.append((f"--peers entry {node_id.strip()}", addr.strip()))
    elif isinstance(peers, dict):
        texts += [(f"peers entry {k}", str(v)) for k, v in peers.items()]
    for what, text in texts:
        if "[" in text or "]" in text:
            m = _BRACKETED.match(text)
            host = m.group(1) if m else None
            try:
                ok = host is not None and ipaddress.ip_address(host).version == 6
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"{what} {text!r} is not an address: write an IPv6 address in brackets, "
                                  "e.g. [::1]:7001, and other hosts without them, e.g. 127.0.0.1:7001")


def _check_listen_resolves(config: NodeConfig, settings: dict[str, Any]) -> None:
    """The address this node binds to must resolve now (peers' names may resolve later)."""
    host, port = config.listen
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        what = "--listen" if settings.get("listen") is not None else \
            f"--peers entry {config.node_id} (this node's listen address)"
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{what} {format_address(config.listen)!r}: host {host!r} does not resolve "
                          f"({reason}); give an IP address or a host name this machine resolves") from None


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"ukehi node: error: {e}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    # Imported here so that `ukehi kv` and `ukehi wal dump` start without the node's imports.
    from ukehi.node import run_node

    return run_node(config)
