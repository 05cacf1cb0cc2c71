"""TestSpec: one test as plain data (Jepsen's "a test is a map").

Everything a run needs to be repeated is here and goes to ``test.json``: the
nodes, backend, workload, nemeses, timing, concurrency, rate, seed and the
options handed to every node. Validation happens once, at construction, with
messages that say what to change.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

BACKENDS = ("local", "docker", "ssh")
READ_MODES = ("readindex", "lease")
CORRUPTION_POLICIES = ("truncate-to-last-good", "refuse-start", "alert-and-continue")
SSH_HOST_KEY_POLICIES = ("strict", "accept-new", "ignore")

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CONCURRENCY = re.compile(r"^(\d+)(n?)$")


class SpecError(ValueError):
    """A test setting that cannot work; the message names the setting and the fix."""


def parse_concurrency(text: str | int, node_count: int) -> int:
    """``"10"`` is 10 clients; ``"3n"`` is 3 per node, as in Jepsen."""
    match = _CONCURRENCY.match(str(text).strip())
    if not match:
        raise SpecError(f"--concurrency {text!r}: give a number (10) or a number per node (3n)")
    count = int(match.group(1)) * (node_count if match.group(2) else 1)
    if count < 1:
        raise SpecError(f"--concurrency {text!r} gives {count} clients; use at least 1")
    return count


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute against the current directory (symlinks kept, '..' folded)."""
    if not str(path):
        raise SpecError("an empty path was given; name a directory (e.g. --results-dir results)")
    return os.path.abspath(os.fspath(path))


def default_node_names(count: int) -> list[str]:
    return [f"n{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class TestSpec:
    """A test, as plain data. Build with :meth:`create` to validate."""

    __test__ = False  # keep pytest from collecting this class

    name: str
    workload: str
    nodes: tuple[str, ...]
    backend: str = "local"
    nemeses: tuple[str, ...] = ()
    nemesis_interval: float = 5.0
    concurrency: int = 5
    rate: float = 100.0
    time_limit: float = 20.0
    seed: int = 0
    read_mode: str = "readindex"
    corruption_policy: str = "truncate-to-last-good"
    results_dir: str = "results"
    leave_running: bool = False
    # plain TCP between harness and nodes, no certificates (`run --insecure`); default mutual TLS
    insecure: bool = False
    final_time_limit: float = 15.0
    node_options: Mapping[str, Any] = field(default_factory=dict)
    workload_options: Mapping[str, Any] = field(default_factory=dict)
    # --backend ssh: how to reach the hosts (the node names are the hosts' names or addresses)
    ssh_user: str | None = None  # None: the local user name, as ssh does
    ssh_key: str | None = None  # None: ssh-agent and ~/.ssh/id_*
    ssh_port: int = 22
    ssh_host_key_policy: str = "strict"
    ssh_known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    ssh_node_port: int = 7000  # the port every node listens on, on its host

    def __post_init__(self) -> None:
        # Every path is resolved once, here, against the directory the user ran from: nodes,
        # backends, LazyFS and checkers run elsewhere (a node's cwd is its own directory), and
        # a relative path handed on would land somewhere else (issue 12: node data under
        # nodes/n1/results/..., invisible to the disk and LazyFS faults and the checkers).
        object.__setattr__(self, "results_dir", absolute_path(self.results_dir))
        for name in ("ssh_key", "ssh_known_hosts"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, absolute_path(os.path.expanduser(value)))
        if not self.name or "/" in self.name:
            raise SpecError(f"test name {self.name!r} must be non-empty and contain no '/'")
        if not self.nodes:
            raise SpecError("a test needs at least 1 node: give --node-count 3 or --nodes n1,n2,n3")
        for node in self.nodes:
            if not _NODE_NAME.match(node):
                raise SpecError(f"node name {node!r}: use letters, digits, '-', '_' or '.' (e.g. n1)")
        if len(set(self.nodes)) != len(self.nodes):
            raise SpecError(f"node names repeat in {','.join(self.nodes)}; give each node once")
        if self.backend not in BACKENDS:
            raise SpecError(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if not (self.time_limit > 0):
            raise SpecError(f"--time-limit {self.time_limit}: give a positive number of seconds")
        if not (self.rate > 0):
            raise SpecError(f"--rate {self.rate}: give a positive number of operations per second")
        if self.concurrency < 1:
            raise SpecError(f"--concurrency {self.concurrency}: use at least 1 client")
        if not (self.nemesis_interval > 0):
            raise SpecError(f"--nemesis-interval {self.nemesis_interval}: give a positive number of seconds")
        if self.read_mode not in READ_MODES:
            raise SpecError(f"--read-mode {self.read_mode!r}: choose one of {', '.join(READ_MODES)}")
        if self.corruption_policy not in CORRUPTION_POLICIES:
            raise SpecError(f"--corruption-policy {self.corruption_policy!r}: choose one of "
                            f"{', '.join(CORRUPTION_POLICIES)}")
        if self.seed < 0:
            raise SpecError(f"--seed {self.seed}: give a non-negative integer")
        if self.ssh_host_key_policy not in SSH_HOST_KEY_POLICIES:
            raise SpecError(f"--ssh-host-key-policy {self.ssh_host_key_policy!r}: choose one of "
                            f"{', '.join(SSH_HOST_KEY_POLICIES)} (strict is the safe default)")
        for flag, port in (("--ssh-port", self.ssh_port), ("--ssh-node-port", self.ssh_node_port)):
            if not 1 <= port <= 65535:
                raise SpecError(f"{flag} {port}: give a TCP port between 1 and 65535")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nodes"] = list(self.nodes)
        d["nemeses"] = list(self.nemeses)
        d["node_options"] = dict(self.node_options)
        d["workload_options"] = dict(self.workload_options)
        return d

    def to_json(self, **extra: Any) -> str:
        """``test.json``: the spec plus versions, so a run can be repeated and compared."""
        d = self.to_dict()
        d["versions"] = versions()
        d.update(extra)
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TestSpec":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["nodes"] = tuple(kwargs.get("nodes", ()))
        kwargs["nemeses"] = tuple(kwargs.get("nemeses", ()))
        return cls(**kwargs)


def versions() -> dict[str, str]:
    from ukehi import __version__ as ukehi_version

    return {"ukehi": ukehi_version, "python": sys.version.split()[0], "platform": platform.platform()}
