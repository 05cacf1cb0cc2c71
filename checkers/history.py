"""The history: the one source of truth every checker and plot reads.

One JSON object per line, append-only (DESIGN.md):
``{"index", "time" (ns since test start), "process", "type", "f", "key"?, "value"?, "error"?}``

- ``ok``: the operation took effect; ``fail``: it certainly did not;
  ``info``: unknown (it may take effect at any time after its invocation, or never).
- Process ids are ints for clients; the nemesis uses the string ``"nemesis"``.
- A client process has at most one outstanding operation: after ``info`` the
  harness retires the process and uses a fresh id.

This module is deliberately free of harness imports: checkers and report code
depend on it, it depends on nothing of the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
OP_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
NEMESIS = "nemesis"


class HistoryError(ValueError):
    """A history line that cannot be read; names the line and what is wrong."""

    def __init__(self, line_number: int, message: str) -> None:
        super().__init__(f"line {line_number}: {message}")
        self.line_number = line_number


@dataclass(frozen=True, slots=True)
class Op:
    """One event of a history: an invocation or a completion."""

    index: int
    time: int
    process: int | str
    type: OpType
    f: str
    key: Any = None
    value: Any = None
    error: Any = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_client(self) -> bool:
        return self.process != NEMESIS

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "time": self.time, "process": self.process,
                             "type": self.type, "f": self.f}
        if self.key is not None:
            d["key"] = self.key
        if self.value is not None:
            d["value"] = self.value
        if self.error is not None:
            d["error"] = self.error
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], line_number: int = 0) -> "Op":
        if not isinstance(d, dict):
            raise HistoryError(line_number, f"expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("index", "time", "process", "type", "f") if k not in d]
        if missing:
            raise HistoryError(line_number, f"missing field(s) {', '.join(missing)}")
        if d["type"] not in OP_TYPES:
            raise HistoryError(line_number, f"type must be one of invoke/ok/fail/info, got {d['type']!r}")
        for k in ("index", "time"):
            if not isinstance(d[k], int) or isinstance(d[k], bool):
                raise HistoryError(line_number, f"{k} must be an integer, got {d[k]!r}")
        process = d["process"]
        if not (isinstance(process, str) or (isinstance(process, int) and not isinstance(process, bool))):
            raise HistoryError(line_number, f"process must be an integer or a string, got {process!r}")
        if not isinstance(d["f"], str):
            raise HistoryError(line_number, f"f must be a string, got {d['f']!r}")
        known = {"index", "time", "process", "type", "f", "key", "value", "error"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(index=d["index"], time=d["time"], process=process, type=d["type"], f=d["f"],
                   key=_freeze(d.get("key")), value=_freeze(d.get("value")), error=d.get("error"),
                   extra=extra)


_KNOWN_FIELDS = frozenset({"index", "time", "process", "type", "f", "key", "value", "error"})


def _freeze(value: Any) -> Any:
    """JSON arrays become tuples so values are hashable (models memoize on state)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def dumps_op(op: Op) -> str:
    d = op.to_dict()
    for k in ("key", "value"):
        if k in d:
            d[k] = _thaw(d[k])
    return json.dumps(d, separators=(",", ":"), sort_keys=False)


class TornTailError(HistoryError):
    """The last line is cut off: no newline at the end and not valid JSON, as a writer
    killed mid-line leaves it. Ignoring it needs a reason (``torn_tail="ignore"``)."""


def read_jsonl(stream: IO[str] | Iterable[str], *, torn_tail: str = "ignore") -> list[Op]:
    """Read a history in the project's JSONL format.

    A bad line anywhere raises :class:`HistoryError` naming the line. A cut-off last line
    (no newline, not valid JSON: a writer killed mid-line) is dropped with
    ``torn_tail="ignore"`` (the default, for the harness reading the history it just wrote)
    and raises :class:`TornTailError` with ``torn_tail="error"``, which is what a user-facing
    reader wants: dropping an op silently could turn an invalid history into a valid one.
    """
    if torn_tail not in ("ignore", "error"):
        raise ValueError(f"torn_tail must be 'ignore' or 'error', got {torn_tail!r}")
    ops: list[Op] = []
    append = ops.append
    lines = list(stream)
    loads = json.loads
    known, types = _KNOWN_FIELDS, OP_TYPES
    for number, line in enumerate(lines, start=1):
        try:
            d = loads(line)  # JSON allows the surrounding whitespace
        except json.JSONDecodeError as err:
            if not line.strip():
                continue
            if number == len(lines) and not line.endswith("\n"):
                if torn_tail == "ignore":
                    break  # torn final write of a crashed run
                raise TornTailError(number, f"the last line is cut off (no newline at the end, not valid "
                                            f"JSON), as a writer killed mid-line leaves it; pass "
                                            f"--ignore-torn-tail to check the lines before it") from None
            raise HistoryError(number, f"not valid JSON ({err.msg})") from None
        # The common line, checked as Op.from_dict checks it, without its slower general path
        # (extra fields, error messages): ints that are not bools, a known type, a string f.
        if (type(d) is dict and d.keys() <= known and type(d.get("index")) is int
                and type(d.get("time")) is int and d.get("type") in types and type(d.get("f")) is str
                and (type(process := d.get("process")) is int or type(process) is str)):
            key = d.get("key")
            value = d.get("value")
            append(Op(d["index"], d["time"], process, d["type"], d["f"],
                      _freeze(key) if type(key) is list else key,
                      _freeze(value) if type(value) is list else value, d.get("error"), {}))
        else:
            append(Op.from_dict(d, number))
    return ops


def load_jsonl(path: str, *, torn_tail: str = "ignore") -> list[Op]:
    with open(path, encoding="utf-8") as f:
        return read_jsonl(f, torn_tail=torn_tail)


class HistoryWriter:
    """Appends ops to a JSONL file, one flushed line each, so a crash leaves a readable file."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")
        self._next_index = 0

    def append(self, time: int, process: int | str, type: OpType, f: str, *, key: Any = None,
               value: Any = None, error: Any = None, **extra: Any) -> Op:
        op = Op(index=self._next_index, time=time, process=process, type=type, f=f, key=key,
                value=value, error=error, extra=extra)
        self._next_index += 1
        self._file.write(dumps_op(op) + "\n")
        self._file.flush()
        return op

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_ops(history: Iterable[Op]) -> Iterator[Op]:
    return (op for op in history if op.is_client)
