"""Mutation operators: find the places in a Python file where one small change makes a mutant.

Each mutant is a text splice on the original source (a byte range replaced by new text),
found from the stdlib `ast`, so everything around the change stays byte for byte as it was.
A mutant's id is ``path:line:col:operator`` (line 1-based, col a 0-based character offset),
stable as long as the file does not change.

Operators (the classic ones, aimed at what breaks consensus code):

- ``cmp_flip``: ``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``is`` <-> ``is not``,
  ``in`` <-> ``not in``
- ``int_plus1`` / ``int_minus1``: an int literal (|n| <= 64) plus or minus one: indexes,
  offsets, quorum arithmetic, loop bounds
- ``floordiv_plus1`` / ``floordiv_minus1``: ``x // k`` becomes ``(x // k + 1)`` / ``(x // k - 1)``
  (the quorum size ``len(voters) // 2``)
- ``drop_stmt``: a simple statement (call, assignment, return, raise, break, continue, del)
  replaced by ``pass``
- ``swap_if``: an ``if``'s branches swapped; an ``if`` without ``else`` gets its test negated
- ``and_or``: ``and`` <-> ``or``
- ``negate_return``: a boolean return value negated (``return x < y`` -> ``return not (x < y)``)

Not mutated, because such mutants are equivalent or say nothing: docstrings, imports,
``__all__``, annotations, f-strings, decorators, asserts, ``if TYPE_CHECKING`` /
``if __name__ == "__main__"`` blocks, logging calls (``.debug/.info/.warning/.error/...``),
and int literals above 64 in absolute value (timeouts, sizes, magic numbers).
"""

from __future__ import annotations

import ast
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

OPERATORS: tuple[str, ...] = (
    "cmp_flip", "int_plus1", "int_minus1", "floordiv_plus1", "floordiv_minus1",
    "drop_stmt", "swap_if", "and_or", "negate_return",
)

MAX_INT_LITERAL = 64

_CMP_FLIPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
_DROPPABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise,
              ast.Delete, ast.Break, ast.Continue)


@dataclass(frozen=True)
class Mutant:
    """One mutant: replace bytes [start, end) of the file (line/col pairs) with `replacement`."""

    path: str          # relative to the project root, with forward slashes
    line: int          # 1-based
    col: int           # 0-based character offset
    operator: str
    start: tuple[int, int]   # (line, byte col) of the replaced range
    end: tuple[int, int]     # (line, byte col), exclusive
    original: str
    replacement: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}:{self.col}:{self.operator}"

    def describe(self) -> str:
        def short(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= 60 else text[:57] + "..."
        return f"{short(self.original)} -> {short(self.replacement)}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["id"] = self.id
        data["description"] = self.describe()
        return data


def apply(source: str, mutant: Mutant) -> str:
    """The mutated source: `source` with the mutant's range replaced."""
    lines = source.encode("utf-8").splitlines(keepends=True)
    (l1, c1), (l2, c2) = mutant.start, mutant.end
    head = b"".join(lines[:l1 - 1]) + lines[l1 - 1][:c1]
    tail = lines[l2 - 1][c2:] + b"".join(lines[l2:])
    return (head + mutant.replacement.encode("utf-8") + tail).decode("utf-8")


class _Finder:
    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path
        self.lines = source.encode("utf-8").splitlines(keepends=True)
        self.tree = ast.parse(source)
        self.found: list[Mutant] = []
        self.parents: dict[int, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[id(child)] = parent

    # --- helpers ---------------------------------------------------------------------
    def _segment(self, node: ast.AST) -> str:
        l1, c1, l2, c2 = node.lineno, node.col_offset, node.end_lineno, node.end_col_offset
        if l1 == l2:
            return self.lines[l1 - 1][c1:c2].decode("utf-8")
        parts = [self.lines[l1 - 1][c1:]] + self.lines[l1:l2 - 1] + [self.lines[l2 - 1][:c2]]
        return b"".join(parts).decode("utf-8")

    def _char_col(self, line: int, byte_col: int) -> int:
        return len(self.lines[line - 1][:byte_col].decode("utf-8", errors="replace"))

    def _add(self, node: ast.AST, operator: str, replacement: str, at: ast.AST | None = None) -> None:
        where = at or node
        original = self._segment(node)
        if replacement == original:
            return
        self.found.append(Mutant(
            path=self.path, line=where.lineno, col=self._char_col(where.lineno, where.col_offset),
            operator=operator, start=(node.lineno, node.col_offset),
            end=(node.end_lineno, node.end_col_offset), original=original, replacement=replacement))

    def _expr_text(self, node: ast.AST, original: ast.AST) -> str:
        text = ast.unparse(node)
        # A multi-line original may rely on its own line breaks; parentheses keep it one expression.
        return f"({text})" if original.lineno != original.end_lineno else text

    # --- what to skip ----------------------------------------------------------------
    @staticmethod
    def _is_log_call(node: ast.AST) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LOG_METHODS)

    @staticmethod
    def _is_guard_block(node: ast.If) -> bool:
        test = ast.unparse(node.test)
        return test in ("TYPE_CHECKING", "typing.TYPE_CHECKING") or "__name__" in test

    def _is_elif(self, node: ast.If) -> bool:
        return self.lines[node.lineno - 1][node.col_offset:].lstrip().startswith(b"elif")

    def _skipped_children(self, node: ast.AST) -> set[int]:
        """ids of child nodes whose whole subtree is never mutated."""
        skip: list[ast.AST] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip += node.decorator_list + ([node.returns] if node.returns else [])
            args = node.args
            skip += [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs if a.annotation]
            skip += [a.annotation for a in (args.vararg, args.kwarg) if a is not None and a.annotation]
        elif isinstance(node, ast.ClassDef):
            skip += node.decorator_list
        elif isinstance(node, ast.AnnAssign):
            skip.append(node.annotation)
        return {id(n) for n in skip}

    # --- the walk --------------------------------------------------------------------
    def run(self) -> list[Mutant]:
        self._visit(self.tree, fn_returns_bool=False)
        return self.found

    def _visit(self, node: ast.AST, fn_returns_bool: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.JoinedStr, ast.Assert, ast.Global, ast.Nonlocal)):
            return
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # docstrings and `...`
        if isinstance(node, ast.Expr) and self._is_log_call(node.value):
            return
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        if isinstance(node, ast.If) and self._is_guard_block(node):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn_returns_bool = node.returns is not None and ast.unparse(node.returns) == "bool"
        elif isinstance(node, ast.Lambda):
            fn_returns_bool = False

        self._mutations_at(node, fn_returns_bool)
        skipped = self._skipped_children(node)
        for child in ast.iter_child_nodes(node):
            if id(child) not in skipped:
                self._visit(child, fn_returns_bool)

    def _mutations_at(self, node: ast.AST, fn_returns_bool: bool) -> None:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                flip = _CMP_FLIPS.get(type(op))
                if flip is None:
                    continue
                mutated = ast.Compare(left=node.left, ops=[flip() if j == i else o for j, o in enumerate(node.ops)],
                                      comparators=node.comparators)
                at = node if i == 0 else node.comparators[i - 1]
                self._add(node, "cmp_flip", self._expr_text(mutated, node), at=at)
        elif (isinstance(node, ast.Constant) and type(node.value) is int
              and abs(node.value) <= MAX_INT_LITERAL):
            self._add(node, "int_plus1", str(node.value + 1))
            self._add(node, "int_minus1", str(node.value - 1))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.FloorDiv):
            text = ast.unparse(node)
            self._add(node, "floordiv_plus1", f"({text} + 1)")
            self._add(node, "floordiv_minus1", f"({text} - 1)")
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self._add(node, "and_or", self._expr_text(ast.BoolOp(op=other, values=node.values), node))
        elif isinstance(node, ast.If) and not self._is_elif(node):
            self._swap_if(node)

        if isinstance(node, _DROPPABLE) and not isinstance(self.parents.get(id(node)), (ast.Module, ast.ClassDef)):
            # Module and class-level statements are definitions: dropping one only makes a NameError.
            self._add(node, "drop_stmt", "pass")
        if isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            boolish = (fn_returns_bool or isinstance(value, (ast.Compare, ast.BoolOp))
                       or (isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not))
                       or (isinstance(value, ast.Constant) and isinstance(value.value, bool)))
            redundant = (isinstance(value, ast.Compare) and len(value.ops) == 1
                         and isinstance(value.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In, ast.NotIn)))
            if boolish and not redundant:  # (cmp_flip already negates ==, is, in)
                if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                    negated = str(not value.value)
                elif isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not):
                    negated = f"({ast.unparse(value.operand)})"
                else:
                    negated = f"not ({ast.unparse(value)})"
                self._add(value, "negate_return", negated)

    def _swap_if(self, node: ast.If) -> None:
        indent_bytes = self.lines[node.lineno - 1][:node.col_offset]
        if indent_bytes.strip():
            return  # `if` not at the start of its line (cannot happen for a statement, but be safe)
        indent = indent_bytes.decode("utf-8")
        if node.orelse:
            swapped = ast.If(test=node.test, body=node.orelse, orelse=node.body)
        else:
            swapped = ast.If(test=ast.UnaryOp(op=ast.Not(), operand=node.test), body=node.body, orelse=[])
        text = ast.unparse(swapped)
        replacement = "\n".join(line if i == 0 or not line else indent + line
                                for i, line in enumerate(text.splitlines()))
        self._add(node, "swap_if", replacement)


def is_valid(source: str, mutant: Mutant, original_dump: str | None = None) -> bool:
    """The mutated source compiles and is a different program (not, say, `-0` for `0`)."""
    try:
        tree = ast.parse(apply(source, mutant))
        compile(tree, mutant.path, "exec")
    except (SyntaxError, ValueError):
        return False
    return ast.dump(tree) != (original_dump or ast.dump(ast.parse(source)))


def find_mutants(source: str, path: str, operators: Iterable[str] = OPERATORS, *, check: bool = True) -> list[Mutant]:
    """Every mutant of one file's source, in (line, col, operator) order.

    With `check`, each is compiled and compared with the original (slow on big files: a
    run checks only the mutants it picks, see `select`).
    """
    wanted = set(operators)
    unknown = wanted - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(OPERATORS)}")
    found = [m for m in _Finder(source, path).run() if m.operator in wanted]
    result: list[Mutant] = []
    seen: set[str] = set()
    original_dump = ast.dump(ast.parse(source)) if check else None
    for mutant in sorted(found, key=lambda m: (m.line, m.col, m.operator, m.start, m.end)):
        if mutant.id in seen or (check and not is_valid(source, mutant, original_dump)):
            continue
        seen.add(mutant.id)
        result.append(mutant)
    return result


class Validator:
    """`is_valid` for mutants of files under one root, parsing each original once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, tuple[str, str]] = {}

    def __call__(self, mutant: Mutant) -> bool:
        if mutant.path not in self._files:
            source = (self.root / mutant.path).read_text(encoding="utf-8")
            self._files[mutant.path] = (source, ast.dump(ast.parse(source)))
        source, dump = self._files[mutant.path]
        return is_valid(source, mutant, dump)


def python_files(root: Path, targets: Sequence[str]) -> list[str]:
    """The .py files under `targets` (files or directories relative to `root`), sorted."""
    files: set[str] = set()
    for target in targets:
        target = target.strip().strip("/")
        path = root / target
        if path.is_file() and path.suffix == ".py":
            files.add(target)
        elif path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py")
                         if "__pycache__" not in p.parts)
        else:
            raise ValueError(f"mutation target {target!r} is neither a .py file nor a directory under {root}")
    return sorted(files)


def collect_mutants(root: Path, targets: Sequence[str], operators: Iterable[str] = OPERATORS, *,
                    check: bool = False) -> list[Mutant]:
    """The candidate mutants of every .py file under `targets` (not compiled unless `check`)."""
    ops = tuple(operators)
    mutants: list[Mutant] = []
    for rel in python_files(root, targets):
        mutants += find_mutants((root / rel).read_text(encoding="utf-8"), rel, ops, check=check)
    return mutants


def select(mutants: Sequence[Mutant], *, sample: int = 0, seed: int = 0, ids: Sequence[str] = (),
           valid: Callable[[Mutant], bool] | None = None) -> list[Mutant]:
    """Pick the mutants to run, in id order: the given ids, else `sample` of them (0 = all).

    The sample is the first `sample` valid mutants of the list shuffled with `seed`, so the
    same seed on the same code picks the same mutants.
    """
    if ids:
        by_id = {m.id: m for m in mutants}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"no such mutant: {', '.join(missing)} (list them with --list)")
        invalid = [i for i in ids if valid is not None and not valid(by_id[i])]
        if invalid:
            raise ValueError(f"mutant(s) {', '.join(invalid)} do not compile or change nothing")
        return [by_id[i] for i in dict.fromkeys(ids)]
    order = list(mutants)
    if 0 < sample < len(order):
        random.Random(seed).shuffle(order)
    chosen: list[Mutant] = []
    for mutant in order:
        if valid is None or valid(mutant):
            chosen.append(mutant)
            if len(chosen) == sample:
                break
    position = {m.id: i for i, m in enumerate(mutants)}
    return sorted(chosen, key=lambda m: position[m.id])
