"""A small, safe EDN reader (just enough of EDN for Jepsen and Porcupine histories).

Reads maps, vectors, lists, sets, keywords, symbols, strings, characters, integers,
floats, ``nil``, ``true``/``false``, comments (``;``), discards (``#_``) and commas.
It never evaluates anything.  Tagged literals: ``#inst`` and ``#uuid`` read as their
string, a tag in front of a map (a Clojure record such as ``#jepsen.history.Op{...}``)
reads as the map, and any other tag is rejected with its line number.

Python values: ``nil`` -> ``None``; keyword -> :class:`Keyword`; symbol ->
:class:`Symbol`; vector and list -> ``tuple`` (hashable, like the JSONL reader's
arrays); set -> ``frozenset``; map -> ``dict``.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from checkers.history import HistoryError


class EdnError(HistoryError):
    """Text that is not EDN this reader accepts; names the line."""


class Keyword(str):
    """An EDN keyword; the ``str`` value is its name without the colon (``:read`` -> ``"read"``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return ":" + str.__str__(self)


class Symbol(str):
    """An EDN symbol such as ``foo/bar``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Symbol(" + str.__repr__(self) + ")"


_WS = re.compile(r"(?:[\s,]+|;[^\n]*)*")
_NUMBER = re.compile(r"[+-]?\d+(?:(\.\d*)?([eE][+-]?\d+)?M|(\.\d*)([eE][+-]?\d+)?|([eE][+-]?\d+)|N)?")
_TOKEN = re.compile(r"[^\s,;()\[\]{}\"]+")
_CHAR = re.compile(r"\\(u[0-9a-fA-F]{4}|[a-z]+|.)", re.S)
_STRING_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_NAMED_CHARS = {"newline": "\n", "space": " ", "tab": "\t", "return": "\r", "backspace": "\b",
                "formfeed": "\f"}
_CLOSERS = {"[": "]", "(": ")", "{": "}"}
_STRING_TAGS = {"inst", "uuid"}


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._line_pos = 0
        self._line = 1

    def line_at(self, pos: int) -> int:
        """Line number of ``pos``; cheap when positions only move forward."""
        if pos < self._line_pos:
            self._line_pos, self._line = 0, 1
        self._line += self.text.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def fail(self, message: str, pos: int | None = None) -> EdnError:
        return EdnError(self.line_at(self.pos if pos is None else pos), message)

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def read(self) -> Any:
        """Read one form; the caller has skipped whitespace."""
        text = self.text
        start = self.pos
        if start >= len(text):
            raise self.fail("unexpected end of input")
        c = text[start]
        if c in "[(":
            self.pos += 1
            return tuple(self._read_seq(_CLOSERS[c], start))
        if c == "{":
            self.pos += 1
            return self._read_map(start)
        if c == '"':
            return self._read_string()
        if c == "#":
            return self._read_dispatch()
        if c in ")]}":
            raise self.fail(f"unexpected {c!r} with no matching opening bracket")
        if c == "\\":
            return self._read_char()
        m = _NUMBER.match(text, start)
        if m and (m.end() == len(text) or not _TOKEN.match(text[m.end()])):
            self.pos = m.end()
            return self._number(m.group(0))
        m = _TOKEN.match(text, start)
        if not m:
            raise self.fail(f"unexpected character {c!r}")
        self.pos = m.end()
        token = m.group(0)
        if token == "nil":
            return None
        if token == "true":
            return True
        if token == "false":
            return False
        if token.startswith(":"):
            if len(token) == 1:
                raise self.fail("a keyword needs a name after ':'", start)
            return Keyword(token[1:])
        if token[0].isdigit() or (token[0] in "+-" and len(token) > 1 and token[1].isdigit()):
            raise self.fail(f"not a number this reader understands: {token!r}", start)
        return Symbol(token)

    def _number(self, token: str) -> int | float:
        if token.endswith("N"):
            return int(token[:-1])
        if token.endswith("M"):
            return float(token[:-1])
        if any(ch in token for ch in ".eE"):
            return float(token)
        return int(token)

    def _read_seq(self, closer: str, start: int) -> list[Any]:
        items: list[Any] = []
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                raise self.fail(f"missing {closer!r} for the form opened here", start)
            if self.text[self.pos] == closer:
                self.pos += 1
                return items
            items.append(self._read_discarding())

    def _read_discarding(self) -> Any:
        """Read a form, skipping any ``#_`` discards in front of it."""
        while self.text.startswith("#_", self.pos):
            self.pos += 2
            self.skip_ws()
            self.read()
            self.skip_ws()
        return self.read()

    def _read_map(self, start: int) -> dict[Any, Any]:
        items = self._read_seq("}", start)
        if len(items) % 2:
            raise self.fail("a map needs an even number of forms (a value for every key)", start)
        result: dict[Any, Any] = {}
        for key, value in zip(items[::2], items[1::2]):
            try:
                result[key] = value
            except TypeError:
                raise self.fail(f"a map key must be hashable, got {key!r}", start) from None
        return result

    def _read_string(self) -> str:
        text = self.text
        start = self.pos
        i = start + 1
        parts: list[str] = []
        while True:
            j = i
            while j < len(text) and text[j] not in '"\\':
                j += 1
            parts.append(text[i:j])
            if j >= len(text):
                raise self.fail("unterminated string", start)
            if text[j] == '"':
                self.pos = j + 1
                return "".join(parts)
            esc = text[j + 1:j + 2]
            if esc in _STRING_ESCAPES:
                parts.append(_STRING_ESCAPES[esc])
                i = j + 2
            elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[j + 2:j + 6]):
                parts.append(chr(int(text[j + 2:j + 6], 16)))
                i = j + 6
            else:
                raise self.fail(f"unknown escape \\{esc} in a string", j)

    def _read_char(self) -> str:
        m = _CHAR.match(self.text, self.pos)
        if not m:
            raise self.fail("a character literal needs a character after '\\'")
        name = m.group(1)
        self.pos = m.end()
        if len(name) == 1:
            return name
        if name in _NAMED_CHARS:
            return _NAMED_CHARS[name]
        if name.startswith("u") and len(name) == 5:
            return chr(int(name[1:], 16))
        raise self.fail(f"unknown character literal \\{name}")

    def _read_dispatch(self) -> Any:
        start = self.pos
        nxt = self.text[start + 1:start + 2]
        if nxt == "{":
            self.pos += 2
            items = self._read_seq("}", start)
            try:
                return frozenset(items)
            except TypeError:
                raise self.fail("a set element must be hashable", start) from None
        if nxt == "_":
            self.pos += 2
            self.skip_ws()
            self.read()
            self.skip_ws()
            return self.read()
        m = _TOKEN.match(self.text, start + 1)
        if not m:
            raise self.fail("'#' must start a set, a discard or a tagged literal")
        tag = m.group(0)
        self.pos = m.end()
        self.skip_ws()
        value = self.read()
        if tag in _STRING_TAGS and isinstance(value, str):
            return value
        if isinstance(value, dict):
            return value  # a record, e.g. #jepsen.history.Op{...}: its fields are what matter
        raise self.fail(f"tagged literal #{tag} is not supported (only #inst, #uuid and records)", start)


def read_all(text: str) -> list[Any]:
    """Every top-level form of ``text``."""
    return [value for value, _ in iter_forms(text)]


def read_one(text: str) -> Any:
    """Exactly one form; raises :class:`EdnError` if there is none or more than one."""
    forms = read_all(text)
    if len(forms) != 1:
        raise EdnError(1, f"expected exactly one EDN form, found {len(forms)}")
    return forms[0]


def read_prefix(text: str) -> tuple[Any, str]:
    """The first form of ``text`` and the text after it (e.g. a log line's trailing error)."""
    reader = _Reader(text)
    if reader.at_end():
        raise EdnError(1, "expected an EDN form, found none")
    value = reader._read_discarding()
    return value, text[reader.pos:]


def iter_forms(text: str, *, unwrap_vector: bool = False) -> Iterator[tuple[Any, int]]:
    """Yield ``(form, line)`` for each top-level form.

    With ``unwrap_vector``, a text whose only form is a vector or a list yields that
    form's elements instead, each with its own line: a Jepsen ``history.edn`` is one
    vector of op maps or one op map per line, and Knossos' data files are one list
    ``({:type :invoke ...} ...)``, with comments anywhere; all should read the same.
    """
    reader = _Reader(text)
    if unwrap_vector and not reader.at_end() and text[reader.pos] in "[(":
        start = reader.pos
        closer = _CLOSERS[text[start]]
        kind = "vector" if closer == "]" else "list"
        reader.pos += 1
        while True:
            reader.skip_ws()
            if reader.pos >= len(text):
                raise reader.fail(f"missing {closer!r} for the {kind} opened here", start)
            if text[reader.pos] == closer:
                reader.pos += 1
                break
            if text.startswith("#_", reader.pos):  # a discarded op: skip it, keep going
                reader.pos += 2
                reader.skip_ws()
                reader.read()
                continue
            line = reader.line_at(reader.pos)
            yield reader.read(), line
        if not reader.at_end():
            raise reader.fail(f"unexpected text after the history {kind}")
        return
    while not reader.at_end():
        line = reader.line_at(reader.pos)
        yield reader._read_discarding(), line
