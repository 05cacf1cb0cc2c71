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

import contextlib
import gc
import io
import json
import re
from dataclasses import dataclass, field, fields
from typing import IO, Any, Iterable, Iterator, Literal

from checkers import native

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
    lines = list(stream)
    fast = _read_canonical("".join(lines))
    if fast is not None:
        return fast
    with _gc_paused():
        return _read_general(lines, torn_tail)


def _read_general(lines: list[str], torn_tail: str) -> list[Op]:
    ops: list[Op] = []
    append = ops.append
    loads = json.loads
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
        append(_op_of(d, number))
    return ops


def _op_of(d: Any, number: int) -> Op:
    """The Op of one decoded line, as Op.from_dict builds it (and with its errors)."""
    # The common line, checked as Op.from_dict checks it, without its slower general path
    # (extra fields, error messages): ints that are not bools, a known type, a string f.
    if (type(d) is dict and d.keys() <= _KNOWN_FIELDS and type(d.get("index")) is int
            and type(d.get("time")) is int and d.get("type") in OP_TYPES and type(d.get("f")) is str
            and (type(process := d.get("process")) is int or type(process) is str)):
        key = d.get("key")
        value = d.get("value")
        return Op(d["index"], d["time"], process, d["type"], d["f"],
                  _freeze(key) if type(key) is list else key,
                  _freeze(value) if type(value) is list else value, d.get("error"), {})
    return Op.from_dict(d, number)


# ---- the fast path for the lines our own HistoryWriter writes ----
#
# dumps_op writes every field in one order with no spaces; such a line is matched by one
# regular expression over the whole text (in C) instead of json.loads per line, and its Op
# is built without the frozen dataclass's __init__ (which sets each field through
# object.__setattr__).  A file with any other line (extra fields, escapes in a string,
# floats, blank or cut-off lines, CRLF) is read entirely by the general path below, so
# errors and odd lines are handled there, by one piece of code.
_J_INT = r"-?(?:0|[1-9][0-9]*)"
_INT_START = frozenset("-0123456789")
_INT_ARRAY = re.compile(rf"\[(?:{_J_INT}(?:,{_J_INT})*)?\]")
_J_STR = r'"[^"\\\x00-\x1f]*"'
# The same, possessive (``*+``: never given back, which saves the matcher its backtracking
# points): an integer or a string matches the same text either way, as what may follow it
# (``,``, ``}``, ``]``, ``:``) cannot continue it.
_J_INT_P = r"-?+(?:0|[1-9][0-9]*+)"
_J_STR_P = r'"[^"\\\x00-\x1f]*+"'
# A key, value or error: a simple JSON value, an array or an object, checked by json.loads
# afterwards (an array's or object's text is matched loosely here; json.loads rejects what
# is not JSON).
_J_VAL = rf"null|true|false|{_J_INT_P}|{_J_STR_P}|\[[^\n]*?\]|\{{[^\n]*?\}}"
_CANONICAL_LINE = re.compile(
    rf'^\{{"index":({_J_INT_P}),"time":({_J_INT_P}),"process":({_J_INT_P}|{_J_STR_P}),'
    # type and f in one group ("ok\",\"f\":\"read"): one lookup gives both
    rf'"type":"((?:invoke|ok|fail|info)","f":"[^"\\\x00-\x1f]*+)"'
    rf'(?:,"key":({_J_VAL}))?(?:,"value":({_J_VAL}))?(?:,"error":({_J_VAL}))?'
    # the harness's extra fields ("node": "n1"...), kept in Op.extra as from_dict keeps them
    rf'((?:,{_J_STR_P}:(?:{_J_VAL}))*)\}}$', re.M)
_TYPE_F_SEPARATOR = '","f":"'


class _OpUnderConstruction:
    """Op's slots without the frozen guard: an Op is filled in here with plain (fast) slot
    stores and then becomes an Op by ``__class__`` assignment, which CPython allows between
    classes of the same slots; about 3x cheaper than the frozen ``Op(...)``, which sets every
    field through ``object.__setattr__``. Nothing else ever sees this class."""

    __slots__ = Op.__slots__  # type: ignore[attr-defined]


assert [f.name for f in fields(Op)] == list(_OpUnderConstruction.__slots__), "keep the two in step"


class _Cache(dict):  # type: ignore[type-arg]
    """raw text -> value, computed by ``make`` on a miss: one C-level lookup per hit.
    ``make`` returns (value, whether it may be shared by other ops)."""

    __slots__ = ("make",)

    def __init__(self, make: Any, seed: dict[str, Any]) -> None:
        super().__init__(seed)
        self.make = make

    def __missing__(self, raw: str) -> Any:
        got, shared = self.make(raw)
        if shared:
            self[raw] = got
        return got


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a history is built: hundreds of thousands of new
    objects (none in a cycle) would otherwise trigger collections that scan them all again
    and again, about a third of the reading time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---- the compiled reader (optional) ----
#
# checkers/_fastread.c (built by setup.py where a C compiler and Python's headers exist)
# reads the lines dumps_op writes and builds their Ops in C; any other line it hands to
# _line_op below, which reads it as the general path does, or answers None: then the whole
# text goes through the Python paths, so errors, blank and torn lines keep one
# implementation.  Without the extension, or with UKEHI_PURE_PYTHON set (to anything but
# "" or "0"), the pure-Python fast path below reads with the same results.
_compiled: Any = None  # the extension module once looked for; False when not used


def compiled_reader() -> Any:
    """The compiled reader module, or None when it is not built or UKEHI_PURE_PYTHON is set.
    Looked for once, on first use (an import of a small shared library)."""
    global _compiled
    if _compiled is None:
        _compiled = native.extension("checkers._fastread") or False
    return _compiled or None


def _line_op(line: str, number: int) -> Op | None:
    """A line the compiled reader does not take, as the general path reads it; None if the
    general path must decide (not JSON, not an op, blank or cut off)."""
    try:
        return _op_of(json.loads(line), number)
    except ValueError:  # JSONDecodeError and HistoryError are ValueErrors
        return None


def _read_canonical(text: str) -> list[Op] | None:
    """The ops of ``text`` if its lines are read by a fast path (every line as dumps_op
    writes it; with the compiled reader, any line that decodes to an op), else None."""
    compiled = compiled_reader()
    if compiled is not None:
        with _gc_paused():
            ops: list[Op] | None = compiled.read(text, Op, _line_op)
        return ops
    return _read_canonical_python(text)


def _read_canonical_python(text: str) -> list[Op] | None:
    """The pure-Python fast path: the ops of ``text`` if every line is a line as dumps_op
    writes it, else None."""
    if not text.endswith("\n"):
        return None  # a last line without newline may be torn: the general path decides
    rows = _CANONICAL_LINE.findall(text)
    # Each match is one whole line (anchored at both ends, no newline inside): as many
    # matches as lines means every line matched.
    if len(rows) != text.count("\n"):
        return None
    with _gc_paused():
        return _build_canonical(text, rows)


def _build_canonical(text: str, rows: list[tuple[str, ...]]) -> list[Op] | None:
    loads = json.loads

    # JSON text -> value: keys, values, processes and f names repeat, and a frozen value
    # can be shared by ops (an object, or an array holding one, is mutable: each op gets
    # its own, as from_dict gives it)
    def value(raw: str) -> tuple[Any, bool]:
        # Integers and arrays of integers (register values, cas pairs: unique in a real run,
        # so most are read once) by int(), about 5x cheaper than json.loads; the text was
        # matched as JSON integers, so int() reads exactly what json.loads would.
        if raw[0] in _INT_START:
            return int(raw), True
        if raw[0] == "[" and _INT_ARRAY.fullmatch(raw):
            return (tuple(map(int, raw[1:-1].split(","))) if len(raw) > 2 else ()), True
        return _freeze(loads(raw)), "{" not in raw

    def error_value(raw: str) -> tuple[Any, bool]:  # from_dict does not freeze the error
        return loads(raw), raw[0] not in "[{"

    def process_value(raw: str) -> tuple[Any, bool]:
        return (raw[1:-1] if raw[0] == '"' else int(raw)), True

    parsed = _Cache(value, {"": None, "null": None})
    errors = _Cache(error_value, {"": None, "null": None})
    processes = _Cache(process_value, {})
    extras: dict[str, dict[str, Any]] = {}

    def extra_fields(raw: str) -> dict[str, Any]:
        got = loads("{" + raw[1:] + "}")
        if got.keys() & _KNOWN_FIELDS:
            raise ValueError("a known field out of order")  # the general path reads it
        if "[" not in raw and "{" not in raw:
            extras[raw] = got
        return dict(got)

    types = {t: t for t in OP_TYPES}

    def type_and_f(raw: str) -> tuple[tuple[str, str], bool]:
        type_, _, f = raw.partition(_TYPE_F_SEPARATOR)
        return (types[type_], f), True

    type_fs = _Cache(type_and_f, {})
    new, building = object.__new__, _OpUnderConstruction
    ops: list[Op] = []
    append = ops.append
    lines: list[str] | None = None
    for index, time_, process, type_f, key, val, error, extra in rows:
        try:
            op = new(building)
            op.index = int(index)
            op.time = int(time_)
            op.process = processes[process]
            op.type, op.f = type_fs[type_f]
            op.key = parsed[key]
            op.value = parsed[val]
            if error or extra:
                op.error = errors[error]
                op.extra = (dict(extras[extra]) if extra in extras else extra_fields(extra)) if extra else {}
            else:
                op.error = None
                op.extra = {}
            op.__class__ = Op  # type: ignore[assignment]
        except ValueError:
            # A nested array or object the loose match cut in the wrong place (or a known
            # field out of order): this line alone is read as the general path reads it.
            number = len(ops) + 1
            lines = text.split("\n") if lines is None else lines
            try:
                op = _op_of(loads(lines[number - 1]), number)
            except ValueError:  # not JSON, or not an op: the general path names the error
                return None
        append(op)
    return ops


def read_jsonl_text(text: str, *, torn_tail: str = "ignore") -> list[Op]:
    """:func:`read_jsonl` of a whole text (what a file holds), without splitting it into
    lines first when every line is as our HistoryWriter writes it."""
    if torn_tail not in ("ignore", "error"):
        raise ValueError(f"torn_tail must be 'ignore' or 'error', got {torn_tail!r}")
    fast = _read_canonical(text)
    return fast if fast is not None else read_jsonl(io.StringIO(text), torn_tail=torn_tail)


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
