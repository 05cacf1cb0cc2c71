"""Client ops a nemesis fires itself, written into the run's history like a worker's.

``leader-churn`` deposes the leader again and again; the moment another node leads, it
fires a short burst of reads (and one write) of keys the workload has been writing straight
at that new leader. That is the window where a leader that has not yet committed an entry
of its own term (its no-op), or trusts a lease it no longer holds, answers a read with a
stale value; the workload's own clients reach the new leader only by chance (they are bound
round-robin and follow redirects).

The partition nemesis uses the same ops for reads at a leader it has just cut off
(nemeses/partition.py).

The ops go through the workload's own client (``workloads.register.RegisterClient``,
``workloads.kv.KvClient``, ``workloads.txn.TxnClient`` for list-append and rw-register, where
one read-only transaction reads all the keys) pinned to the node, and are recorded as ordinary client
ops (invoke, then ok/fail/info, ``node`` naming the leader) of processes of the nemesis's
own, numbered from :data:`FIRST_PROCESS`, so the linearizability checker judges them with
the rest. Each op gets a fresh process id: the burst runs concurrently, and a process never
has two ops open.

Keys: the last few the workload wrote (cas and delete included), seen as the interpreter
appends them to the history (:meth:`ClientOps.observing`). Write values are
``WRITE_VALUE_BASE + n``: never a value the workload writes (its counter starts at 1), so a
read still names the one write it saw.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

#: first process id of the nemesis's clients: far above any worker's (workers are numbered
#: 0..concurrency-1 and move up by the concurrency each time one is retired after an ``info``)
FIRST_PROCESS = 1_000_000
#: values the nemesis writes start here (the register and kv workloads count up from 1)
WRITE_VALUE_BASE = 1_000_000_000


def _register(address: str, timeout: float) -> Any:
    from workloads.register import Memory, RegisterClient

    return RegisterClient([address], 0, timeout, Memory())  # its own memory: not the workload's


def _kv(address: str, timeout: float) -> Any:
    from workloads.kv import KvClient

    return KvClient([address], 0, timeout)


def _txn(prefix: str, empty_read: Any) -> Callable[[str, float], Any]:
    def client(address: str, timeout: float) -> Any:
        from workloads.txn import TxnClient

        return TxnClient([address], 0, timeout, prefix, empty_read)

    return client


@dataclass(frozen=True)
class Kind:
    """How the nemesis's clients speak one workload: a client pinned to one address, the op
    that reads some keys, the op that writes one key, and the keys an op of the workload
    mutates (seen at its invocation)."""

    client: Callable[[str, float], Any]
    reads: Callable[[Sequence[Any]], list[dict[str, Any]]]  # the ops that read these keys
    write: Callable[[Any, int], dict[str, Any]]
    mutated: Callable[[str, Any, Any], list[Any]]
    read_only: Callable[[Mapping[str, Any]], bool]  # does this op only read (a failed read changed nothing)


def _single(client: Callable[[str, float], Any], read_f: str, write_f: str, mutating: tuple[str, ...]) -> Kind:
    return Kind(client=client,
                reads=lambda keys: [{"f": read_f, "key": k} for k in keys],
                write=lambda key, value: {"f": write_f, "key": key, "value": value},
                mutated=lambda f, key, value: [key] if f in mutating and key is not None else [],
                read_only=lambda op: op["f"] == read_f)


def _transactional(write_f: str, prefix: str, empty_read: Any) -> Kind:
    def mutated(f: str, key: Any, value: Any) -> list[Any]:
        if f != "txn" or not isinstance(value, list):
            return []
        return [m[1] for m in value if isinstance(m, list) and len(m) == 3 and m[0] == write_f]

    # One read-only transaction reads all the keys (each once): the same ReadIndex barrier
    # (or the lack of one) answers it, and Elle sees every list in one snapshot.
    return Kind(client=_txn(prefix, empty_read),
                reads=lambda keys: [{"f": "txn", "value": [["r", k, None] for k in dict.fromkeys(keys)]}]
                if keys else [],
                write=lambda key, value: {"f": "txn", "value": [[write_f, key, value]]},
                mutated=mutated,
                read_only=lambda op: all(isinstance(m, list) and m and m[0] == "r" for m in op.get("value") or ()))


#: workload -> how the nemesis's clients speak it
WORKLOADS: dict[str, Kind] = {
    "register": _single(_register, "read", "write", ("write", "cas", "delete")),
    "kv": _single(_kv, "get", "put", ("put", "delete")),
    "list-append": _transactional("append", "la/", []),
    "rw-register": _transactional("w", "rw/", None),
}


class _Observed:
    """The history writer as the interpreter uses it, noting which keys clients mutate."""

    def __init__(self, history: Any, seen: Callable[[Any, str, Any, Any], None]) -> None:
        self._history, self._seen = history, seen

    def append(self, time: int, process: Any, type: str, f: str, **fields: Any) -> Any:
        if type == "invoke":
            self._seen(process, f, fields.get("key"), fields.get("value"))
        return self._history.append(time, process, type, f, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._history, name)


class ClientOps:
    """Fires register/kv ops at one node and records them in the history (module doc)."""

    def __init__(self, history: Any, clock: Any, workload: str, recent: int = 8) -> None:
        self.history, self.clock = history, clock
        self.kind = WORKLOADS.get(workload)
        self.workload = workload
        self._keys: deque[Any] = deque(maxlen=recent)
        self._process = itertools.count(FIRST_PROCESS)
        self._value = itertools.count(WRITE_VALUE_BASE + 1)

    def observing(self, history: Any) -> Any:
        """``history`` wrapped so every client invocation of a mutation notes its key."""
        return _Observed(history, self._note)

    def _note(self, process: Any, f: str, key: Any, value: Any) -> None:
        if self.kind is None or not isinstance(process, int) or process >= FIRST_PROCESS:
            return
        for k in self.kind.mutated(f, key, value):
            if k in self._keys:
                self._keys.remove(k)
            self._keys.append(k)

    def written_keys(self) -> list[Any]:
        """The keys the workload mutated most recently, newest first."""
        return list(reversed(self._keys))

    async def _one(self, address: str, node: str, op: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        process = next(self._process)
        kind = self.kind
        assert kind is not None
        f, key, value = op["f"], op.get("key"), op.get("value")
        invoked = self.clock.now()
        self.history.append(invoked, process, "invoke", f, key=key, value=value, node=node)
        client = kind.client(address, timeout)
        unknown = "fail" if kind.read_only(op) else "info"  # a read that failed changed nothing
        extra: Mapping[str, Any] = {}
        try:
            async with asyncio.timeout(timeout + 1.0):  # not wait_for: it can swallow a cancel on 3.11
                done = await client.invoke(op)
            type_, out, error = done.type, done.value, done.error
            extra = getattr(done, "extra", None) or {}  # a txn's raft_index
        except asyncio.TimeoutError:
            type_, out, error = unknown, None, "timeout"
        except Exception as err:  # noqa: BLE001 - unknown outcome, recorded as such
            type_, out, error = unknown, None, f"{type(err).__name__}: {err}"
        finally:
            await client.close()
        completed = self.clock.now()
        self.history.append(completed, process, type_, f, key=key,
                            value=out if out is not None else value, error=error, **extra)
        return {"process": process, "f": f, "key": key, "type": type_, "invoked_ns": invoked,
                "completed_ns": completed}

    async def burst(self, address: str, node: str, reads: int = 4, writes: int = 1,
                    timeout: float = 1.0) -> dict[str, Any]:
        """``reads`` reads of the recently written keys and ``writes`` writes, all at once,
        at ``node`` only; returns what happened, for the nemesis op's value."""
        if self.kind is None:
            return {"skipped": f"no client ops for the {self.workload} workload "
                               f"({', '.join(WORKLOADS)} only)"}
        keys = self.written_keys()
        if not keys:
            return {"skipped": "the workload has written no key yet"}
        kind = self.kind
        ops = kind.reads([keys[i % len(keys)] for i in range(reads)])
        ops += [kind.write(keys[i % len(keys)], next(self._value)) for i in range(writes)]
        done = await asyncio.gather(*(self._one(address, node, op, timeout) for op in ops))
        return {"node": node, "ops": [{k: d[k] for k in ("process", "f", "key", "type")} for d in done],
                "ok": sum(1 for d in done if d["type"] == "ok")}


__all__ = ["FIRST_PROCESS", "WRITE_VALUE_BASE", "WORKLOADS", "ClientOps", "Kind"]

