"""Structured log lines a person can read and a script can grep (logfmt).

    ts=2026-11-27T05:40:01.123Z level=info node=n1 event=became-leader term=3 commit=17

One line per event, `key=value` pairs, values quoted only when they contain spaces, quotes or
`=`. The harness's policy-conformance checker greps these lines, so event names are stable:
see `EVENTS` for the ones the node emits.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

__all__ = ["NodeLogger", "format_line", "parse_line", "LEVELS"]

# fatal: the node stops right after writing the line (it never logs anything at fatal and
# keeps running). A run whose nodes logged error or fatal lines deserves a look.
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "fatal": 50}

# The events the node writes (documentation for people grepping the logs).
EVENTS = (
    "starting",             # config summary
    "replay-done",          # WAL replayed: entries, hard state, snapshot index
    "corruption-report",    # CorruptionPolicy found something: segment, offset, index, action
    "refuse-start",         # RefuseStart: the node exits, files untouched
    "recovering",           # TruncateToLastGood: refusing votes until caught up past index
    "recovered",            # caught up: votes allowed again
    "listening",            # serving RPCs on an address
    "became-leader", "became-follower", "became-candidate", "became-learner",
    "term-changed", "leader-changed",
    "applied",              # entries applied: first, last, entries=TERM.CRC32,... (checkers/whitebox)
    "snapshot-created", "snapshot-sent", "snapshot-installed",
    "membership-changed",
    "peer-connected", "peer-disconnected",
    # mutual TLS and connection limits (ukehi/server.py, ukehi/transport.py); the warnings
    # are rate-limited (20 per event and second, then `suppressed=N`)
    "insecure",             # warning at start: --insecure, plain TCP, no authentication
    "tls-refused",          # warning: a handshake failed (foreign CA, expired, plain TCP); reason
    "forbidden",            # warning: a request the certificate may not make (who, request)
    "forged-peer-message",  # warning: Raft traffic whose sender is not the certificate's node
    "peer-identity-mismatch", "peer-tls-failed",  # warning: an outbound peer link refused
    "connection-refused",   # warning: a pool (clients, or the peers' reserve) is full
    "connection-evicted",   # warning: the oldest unproven connection made room for a new one
    "connection-idle",      # info: no complete frame within the idle timeout; closed
    "bad-frame",            # a connection sent a bad frame and was closed
    "bad-peer-message",     # warning: a peer's Raft message the core refused (malformed or
                            # impossible), dropped and counted in status `bad_peer_messages`;
                            # rate-limited, fields type, src, term, reason, dropped_total
    "unsafe-bug",           # warning: a planted bug is on (harness self-tests only)
    "unsafe-fsync-off",     # warning: fsync = false, acknowledged writes can be lost
    "invariant-violated",   # fatal: the node's own Raft state broke an invariant; fields
                            # invariant, term, index, commit, applied, detail; the node exits
                            # at once with code 70 and saves nothing more
    "fatal",                # fatal: a task died of an unexpected error; fields task, error,
                            # traceback; the node exits with code 1
    "shutdown",             # fatal=true after a fail-stop
)


def _quote(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(str(v) for v in value)
    text = str(value)
    if text == "" or any(c in text for c in ' "=\t\n\\'):
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{text}"'
    return text


def format_line(level: str, node: str, event: str, fields: dict[str, Any], now: float) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    parts = [f"ts={ts}", f"level={level}", f"node={_quote(node)}", f"event={_quote(event)}"]
    parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
    return " ".join(parts)


def parse_line(line: str) -> dict[str, str]:
    """The inverse of `format_line` (for tests and log readers): {key: value-as-text}."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        eq = line.find("=", i)
        if eq < 0:
            break
        key = line[i:eq]
        i = eq + 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    nxt = line[i + 1]
                    buf.append("\n" if nxt == "n" else nxt)
                    i += 2
                else:
                    buf.append(line[i])
                    i += 1
            i += 1
            out[key] = "".join(buf)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            out[key] = line[i:end]
            i = end
    return out


class NodeLogger:
    """Writes logfmt lines for one node to a stream (stderr by default), flushed per line."""

    def __init__(self, node: str, level: str = "info", stream: TextIO | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.threshold = LEVELS[level]
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock  # the simulator passes the node's simulated wall clock

    def log(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        line = format_line(level, self.node, event, fields, self.clock())
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            # A closed or broken log stream must never take the node down.
            pass

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

    def fatal(self, event: str, **fields: Any) -> None:
        """The last words of a node that stops now (see EVENTS: invariant-violated, fatal)."""
        self.log("fatal", event, **fields)

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold
