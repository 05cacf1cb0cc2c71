"""Node configuration: one frozen dataclass, built from a config file and command-line flags.

`ukehi node` reads an optional config file (JSON, or TOML through the stdlib `tomllib`) and
then the flags; a flag given on the command line overrides the file. Every value is checked
here, once, so the driver never sees a half-valid configuration: a bad value raises
`ConfigError` with a message that says which setting is wrong and what a good one looks like.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ukehi.bugs import UnsafeBugRefused, check_unsafe_fsync

__all__ = [
    "ConfigError",
    "NodeConfig",
    "CORRUPTION_POLICIES",
    "READ_MODES",
    "LOG_LEVELS",
    "parse_address",
    "parse_peers",
    "parse_timeout_range",
    "load_config_file",
    "build_config",
]

# Spelled as on the command line; the storage layer's enum is looked up by these names.
CORRUPTION_POLICIES = ("truncate-to-last-good", "refuse-start", "alert-and-continue")
READ_MODES = ("readindex", "lease")
LOG_LEVELS = ("debug", "info", "warning", "error")

DEFAULT_ELECTION_TIMEOUT_MS = (1000, 2000)
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_SNAPSHOT_THRESHOLD = 10_000
# WAL segment size (ukehi/storage/wal.py DEFAULT_SEGMENT_SIZE; its bounds are the WAL's own).
DEFAULT_WAL_SEGMENT_SIZE = 64 * 1024 * 1024
# Bytes of a snapshot in one InstallSnapshot message (the Raft core's snapshot_chunk_size).
DEFAULT_SNAPSHOT_CHUNK_SIZE = 1 << 20
# The Raft core's own defaults (ukehi/raft/config.py), repeated so the CLI can name them.
DEFAULT_MAX_INFLIGHT = 256
DEFAULT_MAX_ENTRIES_PER_MESSAGE = 256


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the setting and the fix."""


Address = tuple[str, int]


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start. Built by `build_config`, never mutated."""

    node_id: str
    listen: Address
    # Every founding member, this node included: the initial voter configuration. All
    # founding nodes must be started with the same set. A node started with `join=True`
    # is not a founding member: it waits to be added by the cluster (admin add_node).
    peers: Mapping[str, Address]
    data_dir: str
    corruption_policy: str = "truncate-to-last-good"
    read_mode: str = "readindex"
    snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD
    snapshot_chunk_size: int = DEFAULT_SNAPSHOT_CHUNK_SIZE
    # Bytes per WAL segment before it rotates; small values make compaction remove segments
    # in short test runs (the harness's wal-retention checker judges that).
    wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE
    # Replication flow control (etcd's MaxInflightMsgs and its per-message size limit):
    # AppendEntries a leader keeps unacknowledged per follower, and entries in one of them.
    # 1 and 1 give stop-and-wait replication, one entry per round trip.
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_entries_per_message: int = DEFAULT_MAX_ENTRIES_PER_MESSAGE
    election_timeout_ms: tuple[int, int] = DEFAULT_ELECTION_TIMEOUT_MS
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    log_level: str = "info"
    join: bool = False
    fsync: bool = True
    unsafe_bug: str | None = None
    # The address other nodes and clients should use to reach this node; defaults to
    # `listen` (differs when listening on 0.0.0.0 in a container).
    advertise: Address | None = None
    # Mutual TLS (ukehi/tls.py): the CA, this node's certificate and key. Required unless
    # `insecure` (plain TCP, no authentication; the node logs a warning at start).
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    # Connection limits (ukehi/server.py): seconds a connection may stay without a complete
    # frame, and the client connections served at once (peers have a reserve beyond it).
    idle_timeout_s: float = 120.0
    max_connections: int = 512
    # Sharding (issue 15, ukehi/node/groups.py): None is the unsharded cluster of one Raft
    # group (group 0), as before sharding existed. S splits the key space into S shards, each
    # its own Raft group of `replication_factor` founders placed by the partitioner.
    shards: int | None = None
    replication_factor: int = 3
    # Replica moves in flight in the whole cluster at once (the moves the shard map records):
    # a move asked for while this many are recorded is refused (ukehi/node/groups.py).
    max_moves: int = 2
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def advertise_address(self) -> Address:
        if self.advertise is not None:
            return self.advertise
        if self.node_id in self.peers:
            return self.peers[self.node_id]
        return self.listen

    @property
    def tick_ms(self) -> int:
        """The Raft core's tick: fine enough that heartbeats and timeouts keep their spacing."""
        return max(5, min(self.heartbeat_ms, self.election_timeout_ms[0] // 10))


def parse_address(text: str, what: str = "address") -> Address:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:7001)")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(f"{what} {text!r} has no host (for example 127.0.0.1:7001)")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} has a port that is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} {text!r} has port {port}, which is not in 0..65535")
    return host, port


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: the longest node id ``ukehi node --id`` (and a certificate's name) accepts; the admin's
#: add_node refuses longer ones (ukehi/node/admin.py), since no node so named could start
MAX_NODE_NAME_LEN = 64


def _check_node_id(node_id: object) -> str:
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError(f"node id {node_id!r} must be a non-empty string such as n1")
    if any(c in node_id for c in "=,: \t\n") or len(node_id) > MAX_NODE_NAME_LEN:
        raise ConfigError(
            f"node id {node_id!r} must be at most {MAX_NODE_NAME_LEN} characters without '=', ',', ':' or spaces"
        )
    return node_id


def parse_peers(text: str | Mapping[str, str]) -> dict[str, Address]:
    """`n1=HOST:PORT,n2=HOST:PORT` (or a mapping from a config file) -> {id: address}."""
    items: list[tuple[str, str]]
    if isinstance(text, Mapping):
        items = [(str(k), str(v)) for k, v in text.items()]
    elif isinstance(text, str):
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ConfigError(
                    f"peer {part!r} is not ID=HOST:PORT (for example n1=127.0.0.1:7001)"
                )
            node_id, _, addr = part.partition("=")
            items.append((node_id.strip(), addr.strip()))
    else:
        raise ConfigError(f"peers must be a string ID=HOST:PORT,... or a table, got {text!r}")
    peers: dict[str, Address] = {}
    for node_id, addr in items:
        _check_node_id(node_id)
        if node_id in peers:
            raise ConfigError(f"peer {node_id!r} is listed twice in --peers")
        peers[node_id] = parse_address(addr, f"address of peer {node_id}")
    if not peers:
        raise ConfigError("--peers is empty; list every founding node as ID=HOST:PORT,...")
    return peers


def parse_timeout_range(text: str | list[int] | tuple[int, int]) -> tuple[int, int]:
    """`MIN:MAX` in milliseconds (or a 2-element list from a config file)."""
    if isinstance(text, (list, tuple)):
        if len(text) != 2:
            raise ConfigError(f"election timeout {text!r} must have two values [MIN, MAX]")
        lo, hi = text
    elif isinstance(text, str) and ":" in text:
        lo_text, _, hi_text = text.partition(":")
        try:
            lo, hi = int(lo_text), int(hi_text)
        except ValueError:
            raise ConfigError(
                f"election timeout {text!r} must be MIN:MAX in milliseconds, e.g. 150:300"
            ) from None
    else:
        raise ConfigError(
            f"election timeout {text!r} must be MIN:MAX in milliseconds, e.g. 150:300"
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
        raise ConfigError(f"election timeout {text!r} must be whole milliseconds")
    if lo < 10 or hi < lo or hi > 600_000:
        raise ConfigError(
            f"election timeout {lo}:{hi} ms is not valid: need 10 <= MIN <= MAX <= 600000"
        )
    return lo, hi


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON (`.json`) or TOML (anything else) config file into a flat dict.

    Keys are the long flag names with `-` or `_` (`data-dir` or `data_dir`).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON/TOML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


_KNOWN_KEYS = {
    "id",
    "node_id",
    "listen",
    "peers",
    "data_dir",
    "corruption_policy",
    "read_mode",
    "snapshot_threshold",
    "snapshot_chunk_size",
    "wal_segment_size",
    "max_inflight",
    "max_entries_per_message",
    "election_timeout",
    "heartbeat",
    "log_level",
    "join",
    "fsync",
    "unsafe_bug",
    "advertise",
    "tls_dir",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "insecure",
    "idle_timeout",
    "max_connections",
    "shards",
    "replication_factor",
    "max_moves",
}


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    norm = value.strip().lower().replace("_", "-")
    # Accept the CamelCase names of the design document too (TruncateToLastGood).
    camel = {c.replace("-", ""): c for c in choices}
    norm = camel.get(norm.replace("-", ""), norm)
    if norm not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return norm


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def build_config(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Validate a merged settings dict (file values overridden by flags) into a NodeConfig.

    `environ` (default os.environ) is where `fsync = false` looks for its safety switch."""
    unknown = set(settings) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    node_id = settings.get("node_id", settings.get("id"))
    if node_id is None:
        raise ConfigError("the node id is missing: pass --id n1 (or id = \"n1\" in the config file)")
    node_id = _check_node_id(str(node_id))
    if settings.get("peers") is None:
        raise ConfigError("--peers is missing: list every founding node as ID=HOST:PORT,...")
    peers = parse_peers(settings["peers"])
    join = bool(settings.get("join", False))
    if not join and node_id not in peers:
        raise ConfigError(
            f"node {node_id} is not in --peers ({', '.join(peers)}); add {node_id}=HOST:PORT, "
            "or pass --join to start a node that the cluster will add later"
        )
    if settings.get("listen") is not None:
        listen = parse_address(str(settings["listen"]), "--listen")
    elif node_id in peers:
        listen = peers[node_id]
    else:
        raise ConfigError("--listen is missing: give the HOST:PORT this node listens on")
    data_dir = settings.get("data_dir")
    if not data_dir or not isinstance(data_dir, str):
        raise ConfigError("--data-dir is missing: give a directory for this node's WAL and snapshots")
    advertise = None
    if settings.get("advertise") is not None:
        advertise = parse_address(str(settings["advertise"]), "--advertise")
    heartbeat = _positive_int("--heartbeat", settings.get("heartbeat", DEFAULT_HEARTBEAT_MS))
    et = settings.get("election_timeout")
    election = parse_timeout_range(et) if et is not None else DEFAULT_ELECTION_TIMEOUT_MS
    if election[0] < 2 * heartbeat:
        raise ConfigError(
            f"--election-timeout minimum {election[0]} ms must be at least twice --heartbeat "
            f"({heartbeat} ms), or followers time out between heartbeats"
        )
    unsafe_bug = settings.get("unsafe_bug")
    if unsafe_bug is not None and not isinstance(unsafe_bug, str):
        raise ConfigError(f"--unsafe-bug must be a name, got {unsafe_bug!r}")
    # Durability off is gated like --unsafe-bug (ukehi/bugs.py): never by accident.
    fsync = _boolean("fsync", settings.get("fsync", True))
    try:
        check_unsafe_fsync(fsync, environ)
    except UnsafeBugRefused as e:
        raise ConfigError(str(e)) from None
    idle = settings.get("idle_timeout", 120.0)
    try:
        idle = float(idle)
    except (TypeError, ValueError):
        raise ConfigError(f"--idle-timeout must be a number of seconds, got {idle!r}") from None
    if not 0.1 <= idle <= 86400:
        raise ConfigError(f"--idle-timeout {idle:g} s must be between 0.1 and 86400")
    shards, replication_factor = _shard_settings(settings, peers, join, node_id)
    if settings.get("max_moves") is not None and shards is None:
        raise ConfigError("--max-moves only applies to a sharded cluster: give --shards S too")
    config = NodeConfig(
        shards=shards,
        replication_factor=replication_factor,
        max_moves=_positive_int("--max-moves", settings.get("max_moves", 2)),
        idle_timeout_s=idle,
        max_connections=_positive_int("--max-connections", settings.get("max_connections", 512)),
        node_id=node_id,
        listen=listen,
        peers=peers,
        data_dir=os.path.abspath(data_dir),
        corruption_policy=_choice(
            "--corruption-policy",
            settings.get("corruption_policy", "truncate-to-last-good"),
            CORRUPTION_POLICIES,
        ),
        read_mode=_choice("--read-mode", settings.get("read_mode", "readindex"), READ_MODES),
        snapshot_threshold=_positive_int(
            "--snapshot-threshold",
            settings.get("snapshot_threshold", DEFAULT_SNAPSHOT_THRESHOLD),
        ),
        snapshot_chunk_size=_positive_int(
            "--snapshot-chunk-size",
            settings.get("snapshot_chunk_size", DEFAULT_SNAPSHOT_CHUNK_SIZE),
        ),
        wal_segment_size=_positive_int(
            "--wal-segment-size", settings.get("wal_segment_size", DEFAULT_WAL_SEGMENT_SIZE), minimum=1024),
        max_inflight=_positive_int(
            "--max-inflight", settings.get("max_inflight", DEFAULT_MAX_INFLIGHT)),
        max_entries_per_message=_positive_int(
            "--max-entries-per-message",
            settings.get("max_entries_per_message", DEFAULT_MAX_ENTRIES_PER_MESSAGE)),
        election_timeout_ms=election,
        heartbeat_ms=heartbeat,
        log_level=_choice("--log-level", settings.get("log_level", "info"), LOG_LEVELS),
        join=join,
        fsync=fsync,
        unsafe_bug=unsafe_bug,
        advertise=advertise,
    )
    # Last, so that any other bad setting is named first.
    return replace(config, **_tls_settings(settings, node_id))


def _shard_settings(settings: Mapping[str, Any], peers: Mapping[str, Address], join: bool,
                    node_id: str) -> tuple[int | None, int]:
    """--shards S (None: unsharded) and --replication-factor R, checked against the founders.
    A node started with --join and --shards is a new node for a running sharded cluster: its
    --peers are the cluster's founders (itself among them or not, as for an unsharded
    --join), and it hosts no shard until `ukehi kv add-node` records it in the shard map."""
    from ukehi.shardmap import MAX_SHARDS

    raw_shards = settings.get("shards")
    raw_rf = settings.get("replication_factor")
    if raw_shards is None:
        if raw_rf is not None:
            raise ConfigError("--replication-factor only applies to a sharded cluster: give --shards S too")
        return None, 3
    shards = _positive_int("--shards", raw_shards)
    if shards > MAX_SHARDS:
        raise ConfigError(f"--shards {shards}: at most {MAX_SHARDS}")
    founders = [n for n in peers if not (join and n == node_id)]
    rf = _positive_int("--replication-factor", raw_rf if raw_rf is not None else min(3, len(founders)))
    if rf > len(founders):
        hint = ("give the cluster's --peers and --replication-factor" if join else "add nodes or lower it")
        raise ConfigError(f"--replication-factor {rf} needs at least {rf} founding nodes in --peers; "
                          f"there are {len(founders)}: {hint}")
    return shards, rf


def _tls_settings(settings: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    """--insecure, or the CA/cert/key files (from --tls-dir and/or --tls-ca/--tls-cert/--tls-key)."""
    insecure = bool(settings.get("insecure", False))
    given = {k: settings.get(k) for k in ("tls_dir", "tls_ca", "tls_cert", "tls_key") if settings.get(k)}
    if insecure:
        if given:
            raise ConfigError(f"--insecure and {', '.join('--' + k.replace('_', '-') for k in given)} "
                              "contradict each other: drop one")
        return {"insecure": True}
    files: dict[str, str | None] = {"tls_ca": None, "tls_cert": None, "tls_key": None}
    directory = given.get("tls_dir")
    if directory:
        directory = os.path.abspath(str(directory))
        files["tls_ca"] = os.path.join(directory, "ca.pem")
        for stem in ("node", node_id):
            if os.path.isfile(os.path.join(directory, f"{stem}.pem")):
                files["tls_cert"] = os.path.join(directory, f"{stem}.pem")
                files["tls_key"] = os.path.join(directory, f"{stem}.key")
                break
        else:
            files["tls_cert"] = os.path.join(directory, "node.pem")
            files["tls_key"] = os.path.join(directory, "node.key")
    for k in ("tls_ca", "tls_cert", "tls_key"):
        if given.get(k):
            files[k] = os.path.abspath(str(given[k]))
    missing = [k for k, v in files.items() if not v]
    if missing:
        raise ConfigError(
            "a node talks mutual TLS unless told otherwise: give --tls-dir DIR (ca.pem, node.pem, node.key; "
            "make them with `ukehi certs init DIR` and `ukehi certs issue DIR --node ID --out DIR2 --as node`) "
            "or --tls-ca/--tls-cert/--tls-key, or --insecure for plain TCP without authentication"
            + (f" (missing: {', '.join('--' + m.replace('_', '-') for m in missing)})" if given else ""))
    for k, v in files.items():
        if not os.path.isfile(str(v)):
            raise ConfigError(f"--{k.replace('_', '-')}: {v} does not exist")
    from ukehi.tls import NodeTLS, TLSError  # stdlib ssl only

    try:  # loadable, and the certificate is this node's (CN = id, OU = node)
        NodeTLS.load(node_id, str(files["tls_ca"]), str(files["tls_cert"]), str(files["tls_key"]))
    except TLSError as e:
        raise ConfigError(str(e)) from None
    return files


def with_overrides(config: NodeConfig, **changes: Any) -> NodeConfig:
    """A copy with some fields changed (tests and the bench use it)."""
    return replace(config, **changes)
