"""Read histories other tools wrote into ``checkers.history.Op`` lists.

Formats:

- ``jsonl``: the project's own history (``checkers.history.read_jsonl``).
- ``edn``: a Jepsen ``history.edn``: one vector or list of op maps (Knossos' data files,
  comments allowed), or one map per line,
  with ``:process :type :f :value`` (and ``:index :time :key``), read with Knossos'
  conventions (see ``checkers.mapping.KNOSSOS``).
- ``jepsen-log``: the Jepsen log lines of Porcupine's etcd test data,
  ``INFO  jepsen.util - <process> :<type> :<f> <value>``; other log lines are skipped.
- ``porcupine-kv``: Porcupine's kv test data, one EDN map per line with ``:key``.

Every error names the line of the first bad line and what to do about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from checkers import edn
from checkers.history import OP_TYPES, HistoryError, Op, read_jsonl_text
from checkers.mapping import KNOSSOS, PORCUPINE_ETCD, PROJECT, Conventions

FORMATS = ("jsonl", "edn", "jepsen-log", "porcupine-kv")
_PORCUPINE_KV_FS = frozenset({"get", "put", "append"})


@dataclass(frozen=True)
class LoadedHistory:
    """A history, the format it was read from, and how that format's words are meant."""

    ops: list[Op]
    format: str
    conventions: Conventions


def _value(v: Any) -> Any:
    """EDN keywords become plain strings (``:timed-out`` -> ``"timed-out"``); vectors stay tuples."""
    if isinstance(v, edn.Keyword):
        return str.__str__(v)
    if isinstance(v, tuple):
        return tuple(_value(x) for x in v)
    return v


def _op_from_map(d: Any, line: int, position: int) -> Op:
    if not isinstance(d, dict):
        raise HistoryError(line, f"expected an op map like {{:process 0 :type :invoke :f :read}}, "
                                 f"got {d!r}")
    fields = {str.__str__(k) if isinstance(k, edn.Keyword) else k: v for k, v in d.items()}
    missing = [k for k in ("process", "type", "f") if k not in fields]
    if missing:
        raise HistoryError(line, f"op map is missing :{', :'.join(missing)}")
    type_ = fields["type"]
    if not isinstance(type_, edn.Keyword) or str(type_) not in OP_TYPES:
        raise HistoryError(line, f":type must be :invoke, :ok, :fail or :info, got {type_!r}")
    process = fields["process"]
    if isinstance(process, edn.Keyword):
        process = str.__str__(process)  # :nemesis -> "nemesis", not a client
    elif not isinstance(process, int) or isinstance(process, bool):
        raise HistoryError(line, f":process must be an integer or a keyword, got {process!r}")
    f = fields["f"]
    if not isinstance(f, str):
        raise HistoryError(line, f":f must be a keyword, got {f!r}")
    index = fields.get("index", position)
    t = fields.get("time", position)
    if not isinstance(index, int) or not isinstance(t, int):
        raise HistoryError(line, ":index and :time must be integers")
    return Op(index=index, time=t, process=process, type=str(type_),  # type: ignore[arg-type]
              f=str.__str__(f), key=_value(fields.get("key")), value=_value(fields.get("value")),
              error=_value(fields.get("error")))


def read_edn(text: str) -> list[Op]:
    """A Jepsen ``history.edn`` (a vector or list of op maps, or op maps one after another)."""
    return [_op_from_map(form, line, position)
            for position, (form, line) in enumerate(edn.iter_forms(text, unwrap_vector=True))]


def read_edn_lines(text: str) -> list[Op]:
    """Like :func:`read_edn`, but an op without ``:index`` gets ``line - 1`` as its index
    (so "op index N" in a report is line N + 1), for one-map-per-line files."""
    return [_op_from_map(form, line, line - 1)
            for form, line in edn.iter_forms(text, unwrap_vector=True)]


# Porcupine's kv line as its own files write it, read by one regular expression over the
# whole text instead of the EDN reader per line (about 10x less work); a file with any other
# line goes to the EDN reader, which also names the bad line.
_KV_LINE = re.compile(r'^\{:process (0|[1-9][0-9]*), :type :(invoke|ok|fail|info), :f :(get|put|append), '
                      r':key "([^"\\\n]*)", :value (nil|"[^"\\\n]*")\}$', re.M)


def _read_porcupine_kv_lines(text: str) -> list[Op] | None:
    rows = _KV_LINE.findall(text)
    if len(rows) != text.count("\n") + (not text.endswith("\n")):
        return None
    return [Op(index=n, time=n, process=int(process), type=type_, f=f, key=key,  # type: ignore[arg-type]
               value=None if value == "nil" else value[1:-1])
            for n, (process, type_, f, key, value) in enumerate(rows)]


def read_porcupine_kv(text: str) -> list[Op]:
    """Porcupine's kv files: one ``{:process :type :f :key :value}`` map per line."""
    fast = _read_porcupine_kv_lines(text)
    if fast is not None:
        return fast
    ops = read_edn_lines(text)
    for op in ops:
        if op.is_client and op.f not in _PORCUPINE_KV_FS:
            raise HistoryError(op.index + 1, f"porcupine-kv ops are get/put/append, got {op.f!r}; "
                                             "is this a Jepsen history? try --format edn")
    return ops


_LOG_LINE = re.compile(r"^\s*INFO\s+jepsen\.util\s+-\s+(\S+)\s+:(\S+)\s+:(\S+)(?:\s+(.*?))?\s*$")
_LOG_HINT = re.compile(r"jepsen\.util\s+-\s+\d")
_BARE_LINE = re.compile(r"^\s*(\d+|:nemesis)\t+:(\S+)\t+:(\S+)(?:\t+(.*?))?\s*$")
_LOG_PREFIX = re.compile(r"^(?:\S+\s+\S+\s+)?(?:\{\S*\}\s+)?(?:TRACE|DEBUG|INFO|WARN|ERROR)\s+jepsen\.")


def _error_text(text: str) -> Any:
    """A log line's trailing error: one EDN form as a plain value (``:timeout`` ->
    ``"timeout"``), anything else as the stripped text."""
    text = text.strip()
    if not text:
        return None
    try:
        forms = edn.read_all(text)
    except edn.EdnError:
        return text
    if len(forms) != 1:
        return text
    form = _value(forms[0])
    return str.__str__(form) if isinstance(form, edn.Symbol) else form


def parse_jepsen_log(text: str) -> tuple[list[Op], bool]:
    """Ops of a Jepsen log, and whether its lines carry the ``INFO jepsen.util -`` prefix.

    Two line shapes: the log's own ``INFO  jepsen.util - <process> :<type> :<f> <value>``
    (Porcupine's etcd data; other log lines are skipped), and the bare tab-separated
    ``<process>\t:<type>\t:<f>\t<value>[\t<error>]`` of Knossos' test data.
    """
    ops: list[Op] = []
    prefixed = bare = False
    for number, line in enumerate(text.splitlines(), start=1):
        m = _LOG_LINE.match(line)
        if m:
            prefixed = True
        else:
            m = _BARE_LINE.match(line)
            if m:
                bare = True
            elif _LOG_HINT.search(line):
                raise HistoryError(number, "a jepsen.util op line must read "
                                           "'INFO jepsen.util - <process> :<type> :<f> <value>'")
            elif line.strip() and bare and not prefixed:
                raise HistoryError(number, "expected '<process> :<type> :<f> <value>' separated by tabs")
            else:
                continue
        process_text, type_, f, rest = m.groups()
        if type_ not in OP_TYPES:
            raise HistoryError(number, f"type must be :invoke, :ok, :fail or :info, got :{type_}")
        if process_text == ":nemesis":
            process: int | str = "nemesis"
        else:
            try:
                process = int(process_text)
            except ValueError:
                raise HistoryError(number, f"process must be an integer or :nemesis, "
                                           f"got {process_text!r}") from None
        value: Any = None
        error: Any = None
        if rest and rest.strip():
            try:
                first, after = edn.read_prefix(rest)
            except edn.EdnError as err:
                raise HistoryError(number, f"cannot read the value {rest!r}: {err}") from None
            value = _value(first)
            error = _error_text(after)
        # index = line - 1, so "op index N" in a report is line N + 1 of the log
        ops.append(Op(index=number - 1, time=len(ops), process=process, type=type_,  # type: ignore[arg-type]
                      f=f, value=value, error=error))
    if not ops:
        raise HistoryError(1, "no 'INFO jepsen.util - <process> :<type> :<f> <value>' lines found; "
                              "is this a Jepsen log? pass --format to choose another format")
    return ops, prefixed


def read_jepsen_log(text: str) -> list[Op]:
    """Jepsen log lines (see :func:`parse_jepsen_log`)."""
    return parse_jepsen_log(text)[0]


# How much of the text detect_format splits into lines first: the first meaningful line is
# nearly always in it, and splitting a whole 100,000-op history costs more than reading it.
_DETECT_PREFIX = 1 << 16


def detect_format(text: str, filename: str = "") -> str:
    """Guess the format from the first meaningful line (the file name only breaks ties)."""
    if len(text) > _DETECT_PREFIX:
        # The lines of a prefix, but its last (which may be cut, or end at the ``\r`` of a
        # ``\r\n``), are the first lines of the whole text: try them first.
        head = text[:_DETECT_PREFIX].splitlines()[:-1]
        found = _detect_in_lines(head, filename, stop_at_end=False)
        if found is not None:
            return found
    found = _detect_in_lines(text.splitlines(), filename, stop_at_end=True)
    assert found is not None
    return found


def _detect_in_lines(lines: list[str], filename: str, *, stop_at_end: bool) -> str | None:
    """detect_format over ``lines`` (the first lines of the text); None if none was
    meaningful and ``stop_at_end`` is False (more lines follow)."""
    for number, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        if "jepsen.util" in s or _LOG_PREFIX.match(s) or _BARE_LINE.match(line):
            return "jepsen-log"
        if s.startswith('{"'):
            return "jsonl"
        if s.startswith(("[", "(", "{:", "#")):
            if filename.endswith(".jsonl"):
                return "jsonl"
            return "porcupine-kv" if _looks_like_porcupine_kv(s) else "edn"
        raise HistoryError(number, "cannot tell the format from this line; pass --format "
                                   f"({'|'.join(FORMATS)})")
    if not stop_at_end:
        return None
    raise HistoryError(1, "the file has no history in it (it is empty or all comments)")


def _looks_like_porcupine_kv(first_line: str) -> bool:
    """Porcupine's kv lines: a map with :key and :f :get/:put/:append, and no :index or :time."""
    try:
        form = edn.read_one(first_line)
    except edn.EdnError:
        return False
    if not isinstance(form, dict):
        return False
    keys = {str.__str__(k) for k in form if isinstance(k, edn.Keyword)}
    return ("key" in keys and "index" not in keys and "time" not in keys
            and str(form.get(edn.Keyword("f"), "")) in _PORCUPINE_KV_FS)


def unpack_independent(ops: list[Op]) -> list[Op]:
    """Jepsen's ``jepsen.independent`` histories carry ``[key value]`` tuples as values;
    move the key into ``key`` so the history splits per key like ours.

    Every client op must carry such a pair (a read's invocation too: ``[k nil]``);
    anything else is an error naming the op, since guessing would mislabel a cas.
    """
    out: list[Op] = []
    for op in ops:
        if not op.is_client:
            out.append(op)
            continue
        if not (isinstance(op.value, tuple) and len(op.value) == 2):
            raise HistoryError(op.index + 1, f"op index {op.index}: an independent history's values are "
                                             f"[key value] pairs, got {op.value!r}; drop --independent?")
        key, value = op.value
        out.append(Op(index=op.index, time=op.time, process=op.process, type=op.type, f=op.f,
                      key=key, value=value, error=op.error, extra=op.extra))
    return out


def read_history_text(text: str, fmt: str = "auto", filename: str = "", *,
                      torn_tail: str = "error") -> LoadedHistory:
    """Read ``text`` in format ``fmt`` (or detect it); raises :class:`HistoryError`.

    ``torn_tail`` is for JSONL: ``"error"`` (default) refuses a cut-off last line with
    :class:`checkers.history.TornTailError`, ``"ignore"`` drops it. A format forced with
    ``fmt`` that fails on a file that looks like another format says so.
    """
    if fmt == "auto":
        return _read_as(text, detect_format(text, filename), torn_tail)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
    try:
        return _read_as(text, fmt, torn_tail)
    except HistoryError as err:
        try:
            looks_like = detect_format(text, filename)
        except HistoryError:
            raise err from None
        if looks_like == fmt:
            raise
        raise HistoryError(err.line_number, f"this does not look like {fmt}, it looks like {looks_like}: "
                                            f"pass --format {looks_like} or leave --format out (read as "
                                            f"{fmt}: {str(err).partition(': ')[2]})") from None


def _read_as(text: str, fmt: str, torn_tail: str) -> LoadedHistory:
    if fmt == "jsonl":
        return LoadedHistory(read_jsonl_text(text, torn_tail=torn_tail), fmt, PROJECT)
    if fmt == "edn":
        return LoadedHistory(read_edn(text), fmt, KNOSSOS)
    if fmt == "jepsen-log":
        # Porcupine's logs (with the INFO prefix) mean ":fail :cas" = returned false;
        # Knossos' bare tab-separated files are read as Knossos reads them.
        ops, prefixed = parse_jepsen_log(text)
        return LoadedHistory(ops, fmt, PORCUPINE_ETCD if prefixed else KNOSSOS)
    if fmt == "porcupine-kv":
        return LoadedHistory(read_porcupine_kv(text), fmt, PROJECT)
    raise ValueError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")


def read_history(path: str, fmt: str = "auto", *, torn_tail: str = "error") -> LoadedHistory:
    """Read the history file at ``path``; ``OSError`` if it cannot be opened."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return read_history_text(text, fmt, path, torn_tail=torn_tail)
