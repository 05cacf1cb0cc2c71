"""`ukehi-jepsen check FILE --model list-append|rw-register`: transactional histories.

Our JSONL (``"f": "txn"``, ``"value": [["append", k, v], ["r", k, [..]]]``) and Elle's
EDN (``:f :txn``, ``:value [[:append 3 5] [:r 3 [1 5]]]``, which ``checkers.readers``
already reads into the same shape) go to ``checkers.elle``. Exit codes as for
linearizability: 0 valid, 1 invalid, 2 unknown, 254 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from checkers.elle import DEFAULT_CONSISTENCY, ELLE_MODELS, MODELS, TxnError, check
from checkers.elle.page import cycle_page
from checkers.elle.txn import APPEND
from checkers.history import Op
from harness.cli import BadArgument


def is_transactional(ops: Sequence[Op]) -> bool:
    """Whether the history's client ops are transactions (``f`` is ``txn``)."""
    return any(op.is_client and op.f == "txn" for op in ops)


def infer_txn_model(ops: Sequence[Op]) -> str:
    """list-append when some micro-op appends, else rw-register."""
    for op in ops:
        if op.is_client and op.f == "txn" and isinstance(op.value, tuple):
            if any(isinstance(m, tuple) and m and m[0] == APPEND for m in op.value):
                return "list-append"
    return "rw-register"


def parse_consistency(text: Optional[str]) -> tuple[str, ...]:
    if not text:
        return DEFAULT_CONSISTENCY
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise BadArgument(f"--consistency {text!r}: unknown model(s) {', '.join(bad) or '(none given)'}; "
                          f"choose from {', '.join(MODELS)}")
    return models


def run_check_txn(ops: Sequence[Op], file: Path, fmt: str, model: Optional[str],
                  time_limit: float, html_out: Optional[Path],
                  consistency: Optional[str] = None) -> tuple[dict[str, Any], str]:
    """Check a loaded transactional history; (result, summary). Raises BadArgument."""
    wanted = parse_consistency(consistency)
    model_name = model or infer_txn_model(ops)
    if model_name not in ELLE_MODELS:
        raise BadArgument(f"--model {model_name!r} is not transactional; choose {' or '.join(ELLE_MODELS)}")
    try:
        result = check(ops, model_name, consistency_models=wanted, time_limit=time_limit or None)
    except TxnError as err:
        raise BadArgument(f"{file}: {err}") from None
    result = dict(result, file=str(file), format=fmt)
    if html_out is not None:
        try:
            html_out.write_text(cycle_page(result, title=file.name), encoding="utf-8")
        except OSError as err:
            raise BadArgument(f"cannot write {html_out}: {err.strerror or err}") from None
    word = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[result["valid"]]
    t = result["txns"]
    summary = (f"{word}: {file} ({fmt}, model {model_name}, {t['ok']} ok / {t['info']} info / "
               f"{t['fail']} failed transactions; checked for {', '.join(wanted)})\n"
               f"{result['explanation']}")
    if html_out is not None:
        summary += f"\nanomaly page: {html_out}"
    return result, summary
