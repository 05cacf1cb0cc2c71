"""The triage registry: survivors a person has judged, so a report says what each miss is.

``triage.toml`` (next to this module) lists triaged mutants. An entry is keyed so that it
survives line moves: the file, the operator, and the stripped source text of the mutated
line; ``function`` (the enclosing function, ``Class.method``) when that text occurs on more
than one line of the file, and ``original`` (the replaced code, whitespace collapsed) when
one line holds more than one mutant of the operator; ``occurrence = N`` (the Nth match, in
line order) when even that repeats (``return True`` three times in one function). Each
entry has a ``category``:

- ``equivalent``: the mutant cannot change what the system does (a one-line reason says why);
  the only category the score "without equivalents" leaves out;
- ``performance``: it changes timing or message counts only; no correctness checker can
  see it (a harness limit, stays in every denominator);
- ``limit``: a documented limit of the harness (an input check of data the node builds
  itself, a path only an invariant violation reaches).

An entry that matches no mutant is *stale* (the code changed under it) and one that matches
several is *ambiguous*: ``mutate --check-triage`` lists both so the registry cannot rot
silently.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .operators import OPERATORS, Mutant

CATEGORIES: tuple[str, ...] = ("equivalent", "performance", "limit")
DEFAULT_TRIAGE_PATH = Path(__file__).with_name("triage.toml")
_FIELDS = {"file", "operator", "text", "function", "original", "occurrence", "category", "reason"}


def _squash(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Entry:
    file: str
    operator: str
    text: str                   # the mutated line, stripped
    category: str
    reason: str
    function: str | None = None  # enclosing function (Class.method), when the text repeats in the file
    original: str | None = None  # the replaced code, when the line holds several mutants of the operator
    occurrence: int | None = None  # the Nth (1-based, in line order) of the mutants the other fields match

    @property
    def label(self) -> str:
        where = f" in {self.function}" if self.function else ""
        where += f" (occurrence {self.occurrence})" if self.occurrence else ""
        what = f" [{self.original}]" if self.original else ""
        return f"{self.file} {self.operator}{where}: {self.text!r}{what}"

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "reason": self.reason}


@dataclass(frozen=True)
class MutantKey:
    """What a triage entry is matched against: stable across line moves."""

    file: str
    operator: str
    text: str
    function: str | None
    original: str


class SourceIndex:
    """Line texts and enclosing functions of the files under one root, each parsed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, tuple[list[str], list[tuple[int, int, str]]]] = {}

    def _load(self, path: str) -> tuple[list[str], list[tuple[int, int, str]]]:
        if path not in self._files:
            source = (self.root / path).read_text(encoding="utf-8")
            spans: list[tuple[int, int, str]] = []

            def walk(node: ast.AST, prefix: str) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        name = f"{prefix}{child.name}"
                        if not isinstance(child, ast.ClassDef):
                            spans.append((child.lineno, child.end_lineno or child.lineno, name))
                        walk(child, name + ".")
                    else:
                        walk(child, prefix)

            walk(ast.parse(source), "")
            self._files[path] = (source.splitlines(), spans)
        return self._files[path]

    def function_at(self, path: str, line: int) -> str | None:
        """The innermost function (``Class.method``) around LINE, or None at module level."""
        _, spans = self._load(path)
        inside = [s for s in spans if s[0] <= line <= s[1]]
        return max(inside, key=lambda s: s[0])[2] if inside else None

    def key(self, mutant: Mutant) -> MutantKey:
        lines, _ = self._load(mutant.path)
        return MutantKey(mutant.path, mutant.operator, lines[mutant.line - 1].strip(),
                         self.function_at(mutant.path, mutant.line), _squash(mutant.original))


def _matches(entry: Entry, key: MutantKey) -> bool:
    return (entry.file == key.file and entry.operator == key.operator and entry.text == key.text
            and (entry.function is None or entry.function == key.function)
            and (entry.original is None or entry.original == key.original))


@dataclass
class Matching:
    """The registry against a set of mutants: which entry each mutant matched, and the
    entries that match none (stale) or several (ambiguous) among the files looked at."""

    by_id: dict[str, Entry]
    hits: list[tuple[Entry, list[str]]]     # every entry about a file looked at, with the ids it matched

    @property
    def stale(self) -> list[Entry]:
        return [e for e, ids in self.hits if not ids]

    @property
    def ambiguous(self) -> list[tuple[Entry, list[str]]]:
        return [(e, ids) for e, ids in self.hits if len(ids) > 1]

    def problems(self) -> list[str]:
        out = [f"stale triage entry (matches no mutant: the code changed?): {e.label}" for e in self.stale]
        out += [f"ambiguous triage entry (matches {len(ids)} mutants: add function = or original =): {e.label}: "
                + ", ".join(ids) for e, ids in self.ambiguous]
        return out


@dataclass(frozen=True)
class Registry:
    entries: tuple[Entry, ...]
    source: str = ""

    @classmethod
    def load(cls, path: Path | str = DEFAULT_TRIAGE_PATH) -> "Registry":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ValueError(f"triage registry {path}: {err}") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: dict[str, Any], source: str = "<data>") -> "Registry":
        raw = data.get("mutant", [])
        if not isinstance(raw, list) or set(data) - {"mutant"}:
            raise ValueError(f"triage registry {source}: write [[mutant]] tables only")
        entries: list[Entry] = []
        for i, item in enumerate(raw, 1):
            where = f"triage registry {source}, entry {i}"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: write a [[mutant]] table")
            extra = set(item) - _FIELDS
            missing = {"file", "operator", "text", "category", "reason"} - set(item)
            if extra or missing:
                raise ValueError(f"{where}: fields are file, operator, text, category, reason, and optionally "
                                 f"function and original" + (f"; unknown: {', '.join(sorted(extra))}" if extra else "")
                                 + (f"; missing: {', '.join(sorted(missing))}" if missing else ""))
            occurrence = item.pop("occurrence", None)
            if occurrence is not None and (type(occurrence) is not int or occurrence < 1):
                raise ValueError(f"{where}: occurrence is a number from 1 (the Nth match in line order)")
            if not all(isinstance(v, str) and v.strip() for v in item.values()):
                raise ValueError(f"{where}: every field but occurrence is a non-empty string")
            if item["category"] not in CATEGORIES:
                raise ValueError(f"{where}: category {item['category']!r}: choose from {', '.join(CATEGORIES)}")
            if item["operator"] not in OPERATORS:
                raise ValueError(f"{where}: operator {item['operator']!r}: choose from {', '.join(OPERATORS)}")
            if "\n" in item["reason"]:
                raise ValueError(f"{where}: the reason is one line")
            entries.append(Entry(item["file"], item["operator"], item["text"].strip(), item["category"],
                                 item["reason"].strip(), item.get("function"),
                                 _squash(item["original"]) if "original" in item else None, occurrence))
        return cls(tuple(entries), source)

    def match(self, mutants: Iterable[Mutant], root: Path, files: Iterable[str] | None = None) -> Matching:
        """Match MUTANTS (files under ROOT) against the registry. Entries about FILES (default:
        the mutants' files) that match none are stale; a mutant matched by an ambiguous
        entry is still marked, by the first entry that matches it."""
        index = SourceIndex(root)
        mutants = list(mutants)
        looked_at = set(files) if files is not None else {m.path for m in mutants}
        keys = sorted(((m.line, m.col, m.id, index.key(m)) for m in mutants
                       if any(e.file == m.path for e in self.entries)), key=lambda k: k[:2])
        hits: list[tuple[Entry, list[str]]] = []
        by_id: dict[str, Entry] = {}
        for entry in self.entries:
            if entry.file not in looked_at:
                continue
            ids = [mid for _, _, mid, key in keys if _matches(entry, key)]
            if entry.occurrence is not None:
                ids = ids[entry.occurrence - 1:entry.occurrence]
            hits.append((entry, ids))
            for mid in ids:
                by_id.setdefault(mid, entry)
        return Matching(by_id, hits)


def load_registry(path: Path | str | None) -> Registry:
    """The registry at PATH, the packaged one for None; an empty one for "none"."""
    if path is not None and str(path) == "none":
        return Registry(())
    return Registry.load(DEFAULT_TRIAGE_PATH if path is None else path)


def triage_counts(categories: Sequence[str | None]) -> dict[str, int]:
    """How many of CATEGORIES (None = untriaged) fall in each category."""
    counts = {c: 0 for c in (*CATEGORIES, "untriaged")}
    for c in categories:
        counts[c or "untriaged"] += 1
    return counts
