"""`ukehi-jepsen check FILE`: judge a history file, ours or another tool's.

Prints the verdict and a short explanation (for an invalid history: the key, the op
that could not be linearized and the state it met), optionally the counterexample
page (--html) or one JSON object (--json), and exits 0 valid, 1 invalid, 2 unknown,
254 bad input (unreadable file, unknown format, bad line: named with its number; a
JSONL history whose last line is cut off, unless --ignore-torn-tail is given or the file
is the history of a run that the harness never closed, i.e. it was killed mid-write).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, Optional

from checkers.history import HistoryError, TornTailError
from checkers.linearizability import DEFAULT_TIME_LIMIT, analyze
from checkers.mapping import infer_model
from checkers.models import MODEL_FACTORIES
from checkers.readers import FORMATS, LoadedHistory, read_history_text, unpack_independent
from checkers.results import exit_code
from checkers.stats import check_stats
from harness.cli import BadArgument

_FORMAT_DEFAULT_MODEL = {"jepsen-log": "cas-register", "porcupine-kv": "porcupine-kv"}


def parse_initial(text: Optional[str]) -> Any:
    """``--initial``: ``nil``/``null`` is no value, JSON is read as JSON (``0``, ``"a"``,
    ``[1,2]``), a bare word is taken as a string (``abc``); text that starts like JSON but is
    not (``{bad``, ``[1,``, ``"a``, ``1.2.3``) is a :class:`BadArgument`, never a string."""
    if text is None or text in ("nil", "null"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        stripped = text.strip()
        if not stripped or stripped[0] in '{["-+.0123456789' or stripped in ("true", "false"):
            raise BadArgument(f"--initial {text!r} is not valid JSON ({err.msg} at column {err.colno}); "
                              "give JSON such as 0, \"a\" or [1,2], or nil") from None
        return text
    return tuple(value) if isinstance(value, list) else value


def _torn_tail_policy(file: Path, ignore_torn_tail: bool) -> tuple[str, str | None]:
    """Whether a cut-off last line may be dropped, and why: asked for, or the file is a run's
    history that the harness never closed (it was killed while writing)."""
    if ignore_torn_tail:
        return "ignore", "as asked (--ignore-torn-tail)"
    from harness.store import HISTORY, TEST, RunDir  # only for a torn file: start-up time

    if file.name == HISTORY and (file.parent / TEST).is_file() and not RunDir(file.parent).history_closed:
        return "ignore", "the harness stopped while writing it (no history.closed in the run)"
    return "error", None


def run_check(file: Path, fmt: str = "auto", model: Optional[str] = None, initial: Optional[str] = None,
              time_limit: float = DEFAULT_TIME_LIMIT, html_out: Optional[Path] = None,
              workers: Optional[int] = None, independent: bool = False,
              ignore_torn_tail: bool = False, consistency: Optional[str] = None,
              all_failures: bool = False) -> tuple[dict[str, Any], str]:
    """Check ``file``; returns (result dict, human summary).  Raises :class:`BadArgument`."""
    if fmt != "auto" and fmt not in FORMATS:
        raise BadArgument(f"unknown --format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    if model is not None and model not in MODEL_FACTORIES:
        from checkers.elle import ELLE_MODELS  # the transactional checker: imported when needed

        if model not in ELLE_MODELS:
            raise BadArgument(f"unknown --model {model!r}; choose one of "
                              f"{', '.join([*MODEL_FACTORIES, *ELLE_MODELS])}")
    if time_limit < 0:
        raise BadArgument(f"--time-limit must be >= 0 seconds (0: no limit), got {time_limit}")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise BadArgument(f"cannot read {file}: {err.strerror or err}; check the path") from None
    except UnicodeDecodeError as err:
        raise BadArgument(f"{file} is not UTF-8 text (byte {err.start}); is it a history file?") from None
    initial_value = parse_initial(initial)
    note = None
    try:
        loaded = read_history_text(text, fmt, str(file), torn_tail="error")
    except TornTailError as err:
        torn_tail, torn_why = _torn_tail_policy(file, ignore_torn_tail)
        if torn_why is None:
            raise BadArgument(f"{file}: {err}") from None
        loaded = read_history_text(text, fmt, str(file), torn_tail=torn_tail)
        note = f"ignored the cut-off last line {err.line_number}: {torn_why}"
    except HistoryError as err:
        raise BadArgument(f"{file}: {err}") from None
    try:
        if independent:
            loaded = LoadedHistory(unpack_independent(loaded.ops), loaded.format, loaded.conventions)
    except HistoryError as err:
        raise BadArgument(f"{file}: {err}") from None
    # Transactions go to the Elle-style checker, which (about 25 ms of imports) is imported only
    # for a --model outside the linearizability models or a history with a txn op.
    if model not in MODEL_FACTORIES and (model is not None or any(op.f == "txn" for op in loaded.ops)):
        from harness.commands.check_txn import is_transactional, run_check_txn

        if model is not None or is_transactional(loaded.ops):
            return run_check_txn(loaded.ops, file, loaded.format, model, time_limit, html_out, consistency)
    model_name = model or _FORMAT_DEFAULT_MODEL.get(loaded.format) or infer_model(loaded.ops)
    # The history read so far (hundreds of thousands of objects, none in a cycle) is kept out
    # of the cyclic collector's scans while the check allocates: every full collection the
    # search triggered rescanned it (about a quarter of a 100k-op check's CPU).  Frozen
    # objects are still freed by reference counting; unfrozen again afterwards.
    gc.freeze()
    try:
        analysis = analyze(loaded.ops, model_name, initial=initial_value,
                           time_limit=time_limit or None, conventions=loaded.conventions, workers=workers,
                           all_failures=all_failures)
    except HistoryError as err:
        raise BadArgument(f"{file}: {err}") from None
    except ValueError as err:  # a model asked to apply an op it does not know
        raise BadArgument(f"{file}: {err}; choose another --model") from None
    finally:
        gc.unfreeze()
    result = analysis.result
    explanation = result["explanation"]
    if model_name == "fenced-register":
        try:
            from checkers.fencing import check_fencing  # imported when needed: start-up time

            result = check_fencing(loaded.ops, linearizability=result)
        except HistoryError as err:
            raise BadArgument(f"{file}: {err}") from None
        explanation = result["explanation"]
    result = dict(result, file=str(file), format=loaded.format, stats=check_stats(loaded.ops))
    if html_out is not None:
        # Imported here, not at the top: `check` must start fast (issue 17), and the
        # registry pulls in every nemesis and workload.
        from checkers.visualize import visualize
        from harness.registry import SHADING

        try:
            visualize(analysis.model, analysis.info, str(html_out), analysis.counterexamples,
                      title=file.name, history=loaded.ops,
                      # our nemeses' f names; other tools' histories get only start-X/stop-X pairs
                      shading=set(SHADING.values()) if loaded.format == "jsonl" else None)
        except OSError as err:
            raise BadArgument(f"cannot write {html_out}: {err.strerror or err}") from None
    word = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[result["valid"]]
    summary = (f"{word}: {file} ({loaded.format}, model {model_name}, "
               f"{analysis.result['operations']} operations)\n{explanation}")
    if html_out is not None:
        summary += f"\ncounterexample page: {html_out}"
    if note is not None:
        result["history_note"] = note
        summary += f"\nnote: {note}"
    return result, summary


# `check`'s command line, defined once: the typer command (help, usage errors, the full app)
# is generated from this table, and so is the fast path below, which parses the same options
# without importing typer, click or pydantic (issue 17: `check` starts in under 150 ms).
# (name, flag or None for the FILE argument, kind, default, help); kinds: "str" a value,
# "path" a value read as a Path, "flag" a boolean switch.
_OPTIONS: list[tuple[str, Optional[str], str, Any, str]] = [
    # FILE and --time-limit are parsed by run_check's caller rather than by typer, so that bad
    # values exit 254 with a message like every other bad input.
    ("file", None, "str", None, "History file: JSONL, Jepsen history.edn, Jepsen log, Porcupine kv."),
    ("fmt", "--format", "str", "auto", "auto|jsonl|edn|jepsen-log|porcupine-kv"),
    ("model", "--model", "str", None, "register|cas-register|kv|porcupine-kv|fenced-register|list-append|"
                                      "rw-register (default: from the format and ops)"),
    ("consistency", "--consistency", "str", None, "list-append/rw-register: models to check, "
                                                  "comma-separated (default strict-serializable)"),
    ("initial", "--initial", "str", None, "Register's initial value (JSON, or nil; default nil)."),
    ("time_limit", "--time-limit", "str", f"{DEFAULT_TIME_LIMIT:g}",
     "Seconds before the answer is 'unknown' (0: no limit)."),
    ("html_out", "--html", "path", None, "Write the counterexample page here."),
    ("as_json", "--json", "flag", False, "Print the verdict as one JSON object."),
    ("independent", "--independent", "flag", False, "Values are Jepsen independent (key, value) pairs: "
                                                    "check per key."),
    ("ignore_torn_tail", "--ignore-torn-tail", "flag", False, "JSONL whose last line is cut off: check the "
                                                              "lines before it (exit 254 otherwise)."),
    ("all_failures", "--all-failures", "flag", False, "Search every key to name every failing one "
                                                      "(default: stop at the first violation)."),
]
_HELP = "Check a history for linearizability; exit 0 valid, 1 invalid, 2 unknown, 254 bad input."


def check_command(file: Optional[str], fmt: str, model: Optional[str], consistency: Optional[str],
                  initial: Optional[str], time_limit: str, html_out: Optional[Path], as_json: bool,
                  independent: bool, ignore_torn_tail: bool, all_failures: bool) -> int:
    """The command's body, whichever parser read the arguments: prints, returns the exit code."""
    if file is None:
        raise BadArgument("give the history file to check: ukehi-jepsen check FILE")
    try:
        seconds = float(time_limit)
    except ValueError:
        raise BadArgument(f"--time-limit must be a number of seconds, got {time_limit!r}") from None
    result, summary = run_check(Path(file), fmt, model, initial, seconds, html_out,
                                independent=independent, ignore_torn_tail=ignore_torn_tail,
                                consistency=consistency, all_failures=all_failures)
    print(json.dumps(result, default=repr) if as_json else summary, flush=True)
    return exit_code(result["valid"])


def parse_fast(args: list[str]) -> Optional[dict[str, Any]]:
    """``check``'s arguments (after the word ``check``) read by the table, as click reads them
    (``--x V`` and ``--x=V``, the last one wins, options and FILE in any order, ``--`` ends
    options); None for anything else (``--help``, an unknown or incomplete option, a second
    FILE), which the caller hands to typer so that help and usage errors stay typer's own."""
    flags = {flag: (name, kind) for name, flag, kind, _, _ in _OPTIONS if flag is not None}
    values: dict[str, Any] = {name: default for name, _, _, default, _ in _OPTIONS}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        flag, eq, inline = arg.partition("=")
        if flag not in flags:
            return None
        name, kind = flags[flag]
        if kind == "flag":
            if eq:
                return None
            values[name] = True
            continue
        if not eq:
            if i >= len(args):
                return None
            inline = args[i]
            i += 1
        values[name] = Path(inline) if kind == "path" else inline
    if len(positional) > 1:
        return None
    values["file"] = positional[0] if positional else None
    return values


def register(app: Any) -> None:
    """Add ``check`` to the typer app, its parameters generated from :data:`_OPTIONS`."""
    import inspect

    import typer

    types = {"str": str, "path": Path, "flag": bool}
    params, annotations = [], {}
    for name, flag, kind, default, help_ in _OPTIONS:
        if flag is None:
            info = typer.Argument(default, help=help_)
        else:
            info = typer.Option(default, flag, help=help_)
        annotations[name] = types[kind] if default is not None else Optional[types[kind]]
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info,
                                        annotation=annotations[name]))

    def check(**kwargs: Any) -> None:
        raise typer.Exit(check_command(**kwargs))

    check.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    check.__annotations__ = dict(annotations, **{"return": None})
    check.__doc__ = _HELP
    app.command("check")(check)
