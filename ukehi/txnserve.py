"""How a node serves ``append`` and ``txn`` requests (issue 14), kept out of node.py.

- ``append`` and a transaction that writes are one Raft entry each, applied atomically by
  the state machine (``ukehi.kv``); the reply carries the entry's log index.
- A read-only transaction is not logged: like ``get`` it waits for a ReadIndex barrier,
  then reads every key from the applied state at one moment.

Two planted bugs (``ukehi.bugs``) live here, behind ``--unsafe-bug``:

- ``txn-not-atomic``: each micro-op is proposed as its own entry and awaited in turn, so
  other transactions (and a crash) can see half a transaction; a failure midway reports
  the whole transaction failed although its first micro-ops committed.
- ``read-uncommitted-txn``: a leader answers read-only transactions at once from its log,
  uncommitted entries included, without a ReadIndex barrier: reads see writes that may
  never commit.
"""

from __future__ import annotations

from typing import Any

from ukehi import wire
from ukehi.kv import CommandError, decode_command
from ukehi.raft.types import EntryKind, Role

Reply = tuple[wire.MsgType, dict[str, Any]]


def _bad(message: str) -> Reply:
    return wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.BAD_REQUEST, message)


async def serve_append(node: Any, key: str, value: Any, reserved_prefix: str) -> Reply:
    if key.startswith(reserved_prefix):
        return _bad(f"keys starting with {reserved_prefix!r} are reserved for the node")
    return await node._write({"op": "append", "key": key, "value": value})


async def serve_txn(node: Any, ops: list[list[Any]], reserved_prefix: str) -> Reply:
    for f, k, _ in ops:
        if f != "r" and k.startswith(reserved_prefix):
            return _bad(f"keys starting with {reserved_prefix!r} are reserved for the node")
    if node.bug == "txn-not-atomic" and len(ops) > 1:
        return await _one_entry_per_micro_op(node, ops)
    if any(f != "r" for f, _, _ in ops):
        return await node._write({"op": "txn", "ops": ops})
    if node.bug == "read-uncommitted-txn":
        return _read_from_log(node, ops)
    kind, body = await node._read(ops[0][1])  # the ReadIndex barrier gets reads
    if kind is not wire.MsgType.OK:
        return kind, body
    return wire.MsgType.OK, wire.ok_body({"ops": node.kv.read_txn(ops)})


async def _one_entry_per_micro_op(node: Any, ops: list[list[Any]]) -> Reply:
    out: list[list[Any]] = []
    indexes: list[Any] = []
    for op in ops:
        kind, body = await node._write({"op": "txn", "ops": [op]})
        if kind is not wire.MsgType.OK:
            return kind, body  # the micro-ops before this one stay applied
        value = body.get("value") or {}
        out.extend(value.get("ops", [op]))
        indexes.append(value.get("index"))
    return wire.MsgType.OK, wire.ok_body({"ops": out, "index": indexes})


def _read_from_log(node: Any, ops: list[list[Any]]) -> Reply:
    core = node.core
    if core is None or core.role is not Role.LEADER:
        return node._not_leader("read")
    overlay: dict[str, Any] = {}
    log = core.log
    for index in range(max(node.applied + 1, log.first_index()), log.last_index() + 1):
        entry = log.entry(index)
        if entry.kind is not EntryKind.NORMAL or not entry.data:
            continue
        try:
            cmd = decode_command(entry.data)
        except CommandError:
            continue
        if cmd["op"] == "txn":
            node.kv.txn_overlay(cmd["ops"], overlay)
        elif cmd["op"] == "append":
            node.kv.txn_overlay([["append", cmd["key"], cmd["value"]]], overlay)
        elif cmd["op"] in ("put", "fenced_put"):
            overlay[cmd["key"]] = cmd["value"]
    return wire.MsgType.OK, wire.ok_body({"ops": node.kv.read_txn(ops, overlay)})
