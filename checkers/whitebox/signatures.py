"""What log entry a client op makes: the content signature shared by the durability checker
(``durability.py``) and the resolution of indeterminate writes (``resolve.py``).

Ukehi's KV commands carry no request id (``ukehi/kv.py``: ``{"op", "key", "value", ...}``;
adding one would change the wire schema, the node and every client), so a client op is
matched to log entries by what it wrote:

- ``write``/``put`` -> ``put`` of the key and value; ``cas`` -> ``cas`` with expected and
  new; ``delete`` -> ``delete`` of the key; ``fenced-put [value token]`` -> ``fenced_put``
  of the key, value and token; ``acquire`` -> the ``acquire`` entry whose fencing token is
  the token the client got back (tokens are unique, so this one is exact); ``txn``
  (list-append, rw-register) -> the ``txn`` entry with the same micro-ops as sent (a
  read's value None); read-only transactions write nothing and have no signature.
- The history's key ``k`` is the node key ``<workload>/<k>`` (``register/``, ``kv/``,
  ``fenced/``, ``la/``, ``rw/``), as the shipped workloads name them.

An index compacted into snapshots has no command left to read; what the nodes applied
there (``event=applied``) carries the CRC-32 of the command bytes, which
:func:`signature_crc` rebuilds from a signature exactly (except an acquire's, whose
command carries the leader's clock).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from .nodedata import LogEntry

KEY_PREFIX = {"register": "register/", "kv": "kv/", "fencing": "fenced/", "list-append": "la/",
              "rw-register": "rw/"}
Signature = tuple[Any, ...]


def canon(value: Any) -> str:
    """A value in one canonical text, so that a tuple from the history equals a list from the WAL."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def op_signature(op: Any, prefix: str) -> Signature | None:
    """The signature of the log entry a client op makes; None for reads (and malformed ops).

    OP is an invocation or a completion: the fields used (``f``, ``key``, ``value``) are what
    the client sent, except for an acquire, whose token only its ``ok`` completion has.
    """
    key = f"{prefix}{op.key}"
    f, value = op.f, op.value
    if f in ("write", "put"):
        return ("put", key, canon(value))
    if f == "cas" and isinstance(value, (list, tuple)) and len(value) == 2:
        return ("cas", key, canon(value[0]), canon(value[1]))
    if f == "delete":
        return ("delete", key)
    if f == "fenced-put" and isinstance(value, (list, tuple)) and len(value) == 2:
        return ("fenced_put", key, canon(value[0]), int(value[1]))
    if f == "acquire" and isinstance(value, int):
        return ("acquire", value)
    if f == "txn" and isinstance(value, (list, tuple)):
        # list-append / rw-register: the micro-ops as sent (a read's value is None in the
        # command; a completion holds what it saw), keys under the workload's prefix.
        mops = [m for m in value if isinstance(m, (list, tuple)) and len(m) == 3]
        if len(mops) != len(value) or all(m[0] == "r" for m in mops):
            return None  # malformed, or read-only: nothing written
        return ("txn", tuple((m[0], f"{prefix}{m[1]}", None if m[0] == "r" else canon(m[2])) for m in mops))
    return None


def entry_signature(entry: LogEntry) -> Signature | None:
    """The signature of a KV command in the log; None for no-ops, config entries, reads and
    commands that do not decode."""
    if entry.command[:1] != b"\x00" or len(entry.command) < 2:
        return None
    from ukehi.kv import CommandError, decode_command

    try:
        cmd = decode_command(entry.command[1:])
    except CommandError:
        return None
    op = cmd.get("op")
    try:
        if op == "put":
            return ("put", cmd["key"], canon(cmd["value"]))
        if op == "cas":
            return ("cas", cmd["key"], canon(cmd["expected"]), canon(cmd["new"]))
        if op == "delete":
            return ("delete", cmd["key"])
        if op == "fenced_put":
            return ("fenced_put", cmd["key"], canon(cmd["value"]), int(cmd["token"]))
        if op == "acquire":
            return ("acquire", entry.token)
        if op == "txn":
            return ("txn", tuple((m[0], m[1], None if m[0] == "r" else canon(m[2])) for m in cmd["ops"]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # a command of a known op without its fields: nothing a client op makes
    return None


def signature_crc(sig: Signature) -> int | None:
    """CRC-32 of the WAL command bytes the node writes for SIG (``event=applied`` carries it).

    The node builds ``{"op", **request fields}`` in the order the client sends them and
    encodes it with msgpack (``ukehi/kv.py``); acquire carries the leader's clock and
    cannot be rebuilt (None).
    """
    import msgpack

    op = sig[0]
    if op == "put":
        cmd = {"op": "put", "key": sig[1], "value": json.loads(sig[2])}
    elif op == "cas":
        cmd = {"op": "cas", "key": sig[1], "expected": json.loads(sig[2]), "new": json.loads(sig[3])}
    elif op == "delete":
        cmd = {"op": "delete", "key": sig[1]}
    elif op == "fenced_put":
        cmd = {"op": "fenced_put", "key": sig[1], "value": json.loads(sig[2]), "token": sig[3]}
    elif op == "txn":
        cmd = {"op": "txn", "ops": [[f, k, None if v is None else json.loads(v)] for f, k, v in sig[1]]}
    else:
        return None
    return zlib.crc32(b"\x00" + msgpack.packb(cmd, use_bin_type=True))


def show_signature(sig: Signature) -> str:
    """A signature as a person reads it: ``put register/3 17``, ``txn [w rw/4 180] [r rw/2]``."""
    if sig[0] == "acquire":
        return f"acquire with token {sig[1]:#x}"
    if sig[0] == "txn":
        return "txn " + " ".join(f"[{f} {k}{'' if v is None else ' ' + v}]" for f, k, v in sig[1])
    return f"{sig[0]} {sig[1]} " + " ".join(str(s) for s in sig[2:])
