"""The ``bad-input`` checker: judge the bad-input probe's records (``harness/probes.py``).

Invalid, naming the probe, the node and the answer, when

- a probe was accepted: answered ``ok``, or anything but the refusal the protocol defines
  (the connection closed, or ``bad_request`` with a message); ``not_leader``, ``timeout`` or
  ``unavailable`` to a malformed request mean the node got as far as proposing it;
- a refusal came without a message (an empty ``bad_request``);
- a well-formed request of an answer scenario (``level`` ``answer``: a get of a key never
  written, a cas on a missing key, a release of a lock nobody holds, a release by the holder
  with its token, an add_node of a 300-character node id, ...) got another answer than the
  one the API determines, which its record carries in ``expected`` (:func:`answer_matches`);
- the node neither answered nor closed within the probe's timeout (hung);
- a probed key does not hold what it held before the battery (a probe changed data);
- a node that was probed no longer runs or answers a status request afterwards, unless the
  run says it is down on purpose (``availability.json`` ``down_on_purpose``);
- a real node closed more probe connections than its ``status.bad_frames`` grew by (it hung
  up without its ``bad-frame`` log line saying why).

Not blamed (counted as ``inconclusive``): ``recovering`` answers (a node replaying its WAL
answers that before it reads a request), a leader-only probe (the answer scenarios' steps
among them) that met a node no longer leading (``not_leader``, ``unavailable``, ``timeout``),
except a step whose record says ``leader_only`` false (a refusal that comes before any
node looks at its role: there, those answers are wrong), a probe whose connection could not
be opened. Unknown when the battery itself
failed or did not finish, or when every probe was inconclusive. Valid otherwise, with the
number of probes (0, with a note, when no node was running to probe).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["PROBES_FILE", "answer_matches", "check_probes", "probes_checker", "read_probes"]

PROBES_FILE = "probes.jsonl"
#: answers that mean "refused before doing anything" for any request
_NOT_BLAMED = frozenset({"recovering"})
#: answers a leader-only probe may get when leadership moved (nothing was done either way)
_LEADER_MOVED = frozenset({"not_leader", "unavailable", "timeout"})
SHOWN = 20  # problems listed in results.json


def read_probes(path: str | Path) -> list[dict[str, Any]] | None:
    """The records of a probes.jsonl (None: no such file). A torn last line (the run was
    killed while writing it) is dropped; the missing ``end`` record then says so."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    records = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON; re-run the test") from None
    return records


def _show(answer: Mapping[str, Any]) -> str:
    outcome = answer.get("outcome")
    if outcome == "answered":
        if answer.get("type") == "ok":
            return f"ok {json.dumps(answer.get('value'))}"
        return f"error {answer.get('code')}: {answer.get('message')!r}"
    detail = answer.get("reason") or answer.get("detail") or answer.get("message")
    return f"{outcome}" + (f" ({detail})" if detail else "")


def _same(a: Any, b: Any) -> bool:
    # JSON-exact: False is not 0, 1 is not 1.0 (the wire keeps the types apart too)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def answer_matches(expected: Mapping[str, Any], answer: Mapping[str, Any]) -> bool:
    """Whether ``answer`` (an answer record, harness/probes.py) is the ``expected`` one of an
    answer scenario's step: ``{"type": "ok", "value": V}``, ``{"type": "ok", "token_above":
    N}``, ``{"type": "ok", "fields": {...}}`` or ``{"type": "error", "code": C}``."""
    if answer.get("outcome") != "answered":
        return False
    if expected.get("type") == "error":
        return answer.get("type") == "error" and answer.get("code") == expected.get("code")
    if answer.get("type") != "ok":
        return False
    value = answer.get("value")
    if "token_above" in expected:
        return isinstance(value, int) and not isinstance(value, bool) and value > expected["token_above"]
    if "fields" in expected:
        return isinstance(value, dict) and all(_same(value.get(k), v) for k, v in expected["fields"].items())
    return _same(value, expected.get("value"))


def _show_expected(expected: Mapping[str, Any]) -> str:
    if expected.get("type") == "error":
        return f"error {expected.get('code')}"
    if "token_above" in expected:
        return f"ok with a token above {expected['token_above']}"
    if "fields" in expected:
        return f"ok with {json.dumps(expected['fields'])}"
    return f"ok {json.dumps(expected.get('value'))}"


def _judge_answer(record: Mapping[str, Any]) -> tuple[str, str | None]:
    """An answer scenario's step: ("answered" | "inconclusive" | "problem", the problem)."""
    answer = record.get("answer") or {}
    expected = record.get("expected") or {}
    if answer_matches(expected, answer):
        return "answered", None
    outcome = answer.get("outcome")
    if outcome == "connect-failed":
        return "inconclusive", None
    if outcome == "no-answer":
        return "problem", f"hung: {_show(answer)}"
    code = answer.get("code") if answer.get("type") == "error" else None
    # A step every node refuses before it looks at its role (an unusable node id) has no
    # leadership excuse; records of battery 2 carry leader_only true on every step.
    if code in _NOT_BLAMED or (record.get("leader_only", True) and code in _LEADER_MOVED):
        return "inconclusive", None  # nothing known was done: the scenario stopped there
    return "problem", f"wrong answer: expected {_show_expected(expected)}, got {_show(answer)}"


def _judge_probe(record: Mapping[str, Any]) -> tuple[str, str | None]:
    """("refused" | "answered" | "inconclusive" | "problem", the problem in words)."""
    if record.get("expect") == "answer":
        return _judge_answer(record)
    answer = record.get("answer") or {}
    outcome = answer.get("outcome")
    if outcome == "closed":
        return "refused", None
    if outcome == "connect-failed":
        return "inconclusive", None
    if outcome == "no-answer":
        return "problem", f"hung: {_show(answer)}"
    if outcome != "answered":
        return "problem", f"answered with something that is not a frame: {_show(answer)}"
    if answer.get("type") == "ok":
        return "problem", f"accepted: {_show(answer)}"
    code = answer.get("code")
    if code == "bad_request":
        if not answer.get("message"):
            return "problem", "refused bad_request without a message saying what is wrong"
        return "refused", None
    if code in _NOT_BLAMED or (record.get("leader_only") and code in _LEADER_MOVED):
        return "inconclusive", None
    return "problem", f"not refused as bad input: {_show(answer)}"


def check_probes(records: Iterable[Mapping[str, Any]] | None,
                 down_on_purpose: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Judge one battery's records (module doc)."""
    if records is None:
        return {"valid": "unknown", "error": f"no {PROBES_FILE}: no bad-input probe ran in this run"}
    records = list(records)
    down = dict(down_on_purpose or {})
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        kinds.setdefault(str(r.get("kind")), []).append(r)
    start = (kinds.get("start") or [{}])[0]
    problems: list[dict[str, Any]] = []
    counts = {"refused": 0, "answered": 0, "inconclusive": 0, "problem": 0}
    closed: dict[str, int] = {}
    for r in kinds.get("probe", []):
        verdict, why = _judge_probe(r)
        counts[verdict] += 1
        if (r.get("answer") or {}).get("outcome") == "closed":
            closed[r.get("node")] = closed.get(r.get("node"), 0) + 1
        if why is not None:
            expected = ("the connection closed" if r.get("expect") == "close" else
                        _show_expected(r.get("expected") or {}) if r.get("expect") == "answer" else
                        "error bad_request with a message")
            problems.append({"probe": r.get("probe"), "node": r.get("node"), "sent": r.get("what"),
                             "expected": expected, "answer": r.get("answer"), "problem": why})
    before = start.get("bad_frames_before") or {}
    for r in kinds.get("alive", []):
        node = r.get("node")
        if node in down:
            continue
        if not r.get("running"):
            problems.append({"node": node, "problem": "the node stopped during the bad-input battery"})
        elif not r.get("status"):
            problems.append({"node": node, "problem": "the node runs but answered no status request after the "
                                                      "bad-input battery (hung)"})
        elif start.get("counts_bad_frames") and isinstance(before.get(node), int) \
                and isinstance(r.get("bad_frames_after"), int):
            grew = r["bad_frames_after"] - before[node]
            if 0 <= grew < closed.get(node, 0):
                problems.append({"node": node, "problem": f"closed {closed[node]} probe connections but its "
                                 f"status bad_frames grew by {grew}: it hung up without logging why"})
    unread = []
    for r in kinds.get("data", []):
        read = r.get("read") or {}
        if read.get("outcome") != "answered" or read.get("type") != "ok":
            unread.append(r.get("key"))
            continue
        got = read.get("value")
        if got != r.get("expected"):
            problems.append({"key": r.get("key"), "node": r.get("node"), "expected": r.get("expected"), "got": got,
                             "problem": f"a probe changed data: {r.get('key')!r} holds {json.dumps(got)}, "
                                        f"not {json.dumps(r.get('expected'))}"})
    out: dict[str, Any] = {"probes": len(kinds.get("probe", [])), "battery": start.get("battery"),
                           "nodes": start.get("nodes", []), "refused": counts["refused"],
                           "answered": counts["answered"], "inconclusive": counts["inconclusive"]}
    unwritten = [r.get("key") for r in kinds.get("setup", []) if r.get("put") is not None
                 and (r.get("answer") or {}).get("type") != "ok"]
    if unwritten or (kinds.get("setup") and not any(r.get("put") is not None for r in kinds["setup"])):
        # No leader, or the write failed: the stateful probes met no scalar, and a read
        # afterwards that differs may be that write's doing (reported, as it is found).
        out["setup"] = f"the scalars the probes aim at were not all written: {unwritten or 'no leader'}"
    if unread:
        out["unread_keys"] = unread
    if start.get("not_running"):
        out["not_probed"] = start["not_running"]
    if problems:
        out.update(valid=False, problems=problems[:SHOWN], problem_count=len(problems),
                   explanation="; ".join(_line(p) for p in problems[:3]))
        return out
    if kinds.get("error"):
        out.update(valid="unknown", error=f"the battery failed: {kinds['error'][0].get('error')}")
    elif not kinds.get("end"):
        out.update(valid="unknown", error="the battery did not finish (the run was stopped during it)")
    elif out["probes"] and not counts["refused"] and not counts["answered"]:
        out.update(valid="unknown", error="no probe met a refusal or a problem (every one inconclusive, e.g. no "
                                          "connection could be opened): nothing was tested")
    else:
        if not out["probes"]:
            out["note"] = "no node was running to probe"
        out["valid"] = True
        out["battery_seconds"] = kinds["end"][0].get("seconds")
    return out


def _line(p: Mapping[str, Any]) -> str:
    where = " ".join(f"{k} {p[k]}" for k in ("probe", "node") if p.get(k))
    return f"{where}: {p['problem']}" if where else str(p["problem"])


def probes_checker(run_dir: str | Path) -> Any:
    """The checker for one stored run (harness/analysis.py): its probes.jsonl, and the
    nodes ``availability.json`` says were down on purpose."""

    def check(history: Iterable[Any], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from .availability import load_facts

        facts = load_facts(run_dir) or {}
        return check_probes(read_probes(Path(run_dir) / PROBES_FILE), facts.get("down_on_purpose"))

    return check
