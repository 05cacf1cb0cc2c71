"""`ukehi-jepsen check FILE`: judge a history file, ours or another tool's.

Prints the verdict and a short explanation (for an invalid history: the key, the op
that could not be linearized and the state it met), optionally the counterexample
page (--html) or one JSON object (--json), and exits 0 valid, 1 invalid, 2 unknown,
254 bad input (unreadable file, unknown format, bad line: named with its number).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from checkers.fencing import check_fencing
from checkers.history import HistoryError
from checkers.linearizability import DEFAULT_TIME_LIMIT, analyze
from checkers.mapping import infer_model
from checkers.models import MODEL_FACTORIES
from checkers.readers import FORMATS, LoadedHistory, read_history_text, unpack_independent
from checkers.results import exit_code
from checkers.stats import check_stats
from checkers.visualize import visualize
from harness.cli import BadArgument

_FORMAT_DEFAULT_MODEL = {"jepsen-log": "cas-register", "porcupine-kv": "porcupine-kv"}


def parse_initial(text: Optional[str]) -> Any:
    """``--initial``: ``nil``/``null`` is no value, JSON is read as JSON (``0``, ``"a"``,
    ``[1,2]``), anything else is taken as a string."""
    if text is None or text in ("nil", "null"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def run_check(file: Path, fmt: str = "auto", model: Optional[str] = None, initial: Optional[str] = None,
              time_limit: float = DEFAULT_TIME_LIMIT, html_out: Optional[Path] = None,
              workers: Optional[int] = None, independent: bool = False) -> tuple[dict[str, Any], str]:
    """Check ``file``; returns (result dict, human summary).  Raises :class:`BadArgument`."""
    if fmt != "auto" and fmt not in FORMATS:
        raise BadArgument(f"unknown --format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    if model is not None and model not in MODEL_FACTORIES:
        raise BadArgument(f"unknown --model {model!r}; choose one of {', '.join(MODEL_FACTORIES)}")
    if time_limit < 0:
        raise BadArgument(f"--time-limit must be >= 0 seconds (0: no limit), got {time_limit}")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise BadArgument(f"cannot read {file}: {err.strerror or err}; check the path") from None
    except UnicodeDecodeError as err:
        raise BadArgument(f"{file} is not UTF-8 text (byte {err.start}); is it a history file?") from None
    try:
        loaded = read_history_text(text, fmt, str(file))
        if independent:
            loaded = LoadedHistory(unpack_independent(loaded.ops), loaded.format, loaded.conventions)
    except HistoryError as err:
        raise BadArgument(f"{file}: {err}") from None
    model_name = model or _FORMAT_DEFAULT_MODEL.get(loaded.format) or infer_model(loaded.ops)
    try:
        analysis = analyze(loaded.ops, model_name, initial=parse_initial(initial),
                           time_limit=time_limit or None, conventions=loaded.conventions, workers=workers)
    except HistoryError as err:
        raise BadArgument(f"{file}: {err}") from None
    except ValueError as err:  # a model asked to apply an op it does not know
        raise BadArgument(f"{file}: {err}; choose another --model") from None
    result = analysis.result
    explanation = result["explanation"]
    if model_name == "fenced-register":
        try:
            result = check_fencing(loaded.ops, linearizability=result)
        except HistoryError as err:
            raise BadArgument(f"{file}: {err}") from None
        explanation = result["explanation"]
    result = dict(result, file=str(file), format=loaded.format, stats=check_stats(loaded.ops))
    if html_out is not None:
        try:
            visualize(analysis.model, analysis.info, str(html_out), analysis.counterexamples,
                      title=file.name)
        except OSError as err:
            raise BadArgument(f"cannot write {html_out}: {err.strerror or err}") from None
    word = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[result["valid"]]
    summary = (f"{word}: {file} ({loaded.format}, model {model_name}, "
               f"{analysis.result['operations']} operations)\n{explanation}")
    if html_out is not None:
        summary += f"\ncounterexample page: {html_out}"
    return result, summary


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(
        # FILE and --time-limit are parsed here rather than by typer, so that bad values
        # exit 254 with a message like every other bad input.
        file: Optional[str] = typer.Argument(None, help="History file: JSONL, Jepsen history.edn, "
                                                        "Jepsen log, Porcupine kv."),
        fmt: str = typer.Option("auto", "--format", help="auto|jsonl|edn|jepsen-log|porcupine-kv"),
        model: Optional[str] = typer.Option(None, "--model", help="register|cas-register|kv|porcupine-kv|"
                                            "fenced-register (default: from the format and ops)"),
        initial: Optional[str] = typer.Option(None, "--initial", help="Register's initial value "
                                              "(JSON, or nil; default nil)."),
        time_limit: str = typer.Option(f"{DEFAULT_TIME_LIMIT:g}", "--time-limit",
                                       help="Seconds before the answer is 'unknown' (0: no limit)."),
        html_out: Optional[Path] = typer.Option(None, "--html", help="Write the counterexample page here."),
        as_json: bool = typer.Option(False, "--json", help="Print the verdict as one JSON object."),
        independent: bool = typer.Option(False, "--independent", help="Values are Jepsen independent "
                                         "(key, value) pairs: check per key."),
    ) -> None:
        """Check a history for linearizability; exit 0 valid, 1 invalid, 2 unknown, 254 bad input."""
        if file is None:
            raise BadArgument("give the history file to check: ukehi-jepsen check FILE")
        try:
            seconds = float(time_limit)
        except ValueError:
            raise BadArgument(f"--time-limit must be a number of seconds, got {time_limit!r}") from None
        result, summary = run_check(Path(file), fmt, model, initial, seconds, html_out,
                                    independent=independent)
        if as_json:
            typer.echo(json.dumps(result, default=repr))
        else:
            typer.echo(summary)
        raise typer.Exit(exit_code(result["valid"]))
