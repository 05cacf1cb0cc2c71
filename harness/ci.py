"""What regression CI reads: JUnit XML (``--junit FILE``), the results as JSON (``--json``),
and node lists from a file (``--nodes-file FILE``, as Jepsen's).

JUnit: one ``<testcase>`` per run (``run``, one per seed of ``--test-count``) or per case
(``regress``). A valid run (a detected bug, a passing correct-build case) passes; an invalid
run (an escaped bug, a false alarm) is a ``<failure>``; an unknown verdict or a run the
harness could not finish is an ``<error>``. Each case carries the run directory and every
checker's verdict as properties, and the failing checkers' explanations as its text, so a
CI system shows why without opening the store. ``regress``'s simulated column adds one case
per row (class ``ukehi-jepsen.regress.sim``); a bug the simulator has no workload for yet is
``<skipped>``.

``--json`` prints one JSON document on stdout and sends the human summary to stderr, so
``ukehi-jepsen run --json | jq .valid`` works.
"""

from __future__ import annotations

import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO


class CIError(ValueError):
    """A CI option that cannot work (the message names the option and the fix)."""


@dataclass
class Case:
    """One JUnit test case."""

    classname: str
    name: str
    seconds: float
    status: str  # "passed" | "failure" | "error" | "skipped"
    message: str = ""
    text: str = ""
    properties: dict[str, str] = field(default_factory=dict)


def _verdict_word(valid: Any) -> str:
    return {True: "valid", False: "invalid"}.get(valid, "unknown")


def _explanations(verdict: Mapping[str, Any]) -> str:
    lines = []
    for name, result in (verdict.get("checkers") or {}).items():
        if not isinstance(result, Mapping) or result.get("valid") is True:
            continue
        why = result.get("explanation") or result.get("error") or ""
        lines.append(f"{name}: {_verdict_word(result.get('valid'))}" + (f"\n{why}" if why else ""))
    return "\n\n".join(lines)


def run_case(spec: Any, verdict: Mapping[str, Any], run_dir: str, seconds: float) -> Case:
    """The test case of one ``run``: named by test and seed."""
    valid = verdict.get("valid")
    checkers = {n: _verdict_word(r.get("valid")) for n, r in (verdict.get("checkers") or {}).items()
                if isinstance(r, Mapping)}
    failed = [n for n, w in checkers.items() if w != "valid"]
    props = {"run_dir": run_dir, "verdict": _verdict_word(valid), "seed": str(spec.seed),
             "workload": spec.workload, "nemeses": ",".join(spec.nemeses) or "none",
             "nodes": ",".join(spec.nodes), "ops": str(verdict.get("ops", 0)),
             **{f"checker.{n}": w for n, w in checkers.items()}}
    if valid is True:
        status, message = "passed", ""
    elif valid is False:
        status, message = "failure", f"invalid: {', '.join(n for n in failed if checkers[n] == 'invalid')}"
    else:
        status, message = "error", "unknown: " + (", ".join(failed) or "no checker decided")
    return Case(f"ukehi-jepsen.{spec.name}", f"seed {spec.seed}", seconds, status, message,
                _explanations(verdict) + f"\n\nresults in {run_dir}", props)


def regress_cases(rows: Iterable[Any]) -> list[Case]:
    """One test case per regress row (harness/regress.py Row): detected / valid pass,
    escaped and false alarms fail, a crashed case, an unknown verdict or a targeted schedule
    that never reached its bug is an error."""
    cases = []
    for r in rows:
        props = {"run_dir": r.run_dir or "", "outcome": r.outcome, "workload": r.workload, "nemeses": r.nemeses,
                 "seed": str(r.seed), "caught_by": ",".join(r.caught_by),
                 "first_violation_s": "" if r.first_violation_s is None else str(r.first_violation_s),
                 "runs": str(getattr(r, "runs", 1))}
        if r.ok:
            status, message = "passed", ""
        elif r.outcome in ("error", "unknown", "not reached"):  # the run could not decide
            status, message = "error", f"{r.outcome}: {r.detail}".rstrip(": ")
        else:
            status, message = "failure", f"{r.outcome}: {r.detail or 'no checker found a violation'}"
        text = (f"{r.bug} under {r.nemeses} ({r.workload}, seed {r.seed}): {r.outcome}"
                + (f", caught by {', '.join(r.caught_by)}" if r.caught_by else "")
                + (f", first violation at {r.first_violation_s} s" if r.first_violation_s is not None else "")
                + (f"\n{r.detail}" if r.detail else "") + (f"\nresults in {r.run_dir}" if r.run_dir else "")
                + "".join(f"\nearlier: {e}" for e in getattr(r, "earlier", ())))
        cases.append(Case("ukehi-jepsen.regress", f"{r.bug} (seed {r.seed})", float(r.wall_s or 0.0), status,
                          message, text, props))
    return cases


def regress_sim_cases(rows: Iterable[Any]) -> list[Case]:
    """One test case per row of regress's simulated column (harness/regress_sim.py SimRow):
    found / "not found (sim)" / a clean correct build pass, a bug no longer found and a
    failing correct-build seed fail, a bug whose workload the simulator lacks is skipped."""
    cases = []
    for r in rows:
        props = {"outcome": r.outcome, "workload": r.workload, "start_seed": str(r.start_seed),
                 "budget": str(r.budget), "seeds_run": str(r.seeds_run), "caught_by": ",".join(r.caught_by),
                 "first_failing_seed": "" if r.first_failing_seed is None else str(r.first_failing_seed),
                 "first_failing_family": getattr(r, "first_failing_family", None) or "",
                 "family_seeds": str(getattr(r, "family_seeds", 0)),
                 "seeds_to_first_failure": "" if r.seeds_to_first_failure is None else str(r.seeds_to_first_failure),
                 "run_dir": r.run_dir or ""}
        if r.outcome == "not run":
            status, message = "skipped", f"not run: {r.detail}"
        elif r.ok:
            status, message = "passed", ""
        else:
            status, message = "failure", f"{r.outcome}: {r.detail}"
        family = getattr(r, "first_failing_family", None)
        text = (f"{r.bug} in the simulator ({r.workload}, seeds {r.span}): "
                f"{r.outcome}" + (f" at {family + '@' if family else 'seed '}{r.first_failing_seed}"
                                  if r.first_failing_seed is not None else "")
                + (f", caught by {', '.join(r.caught_by)}" if r.caught_by else "")
                + (f"\n{r.detail}" if r.detail else "") + (f"\nreplay: {r.replay}" if r.replay else "")
                + (f"\nresults in {r.run_dir}" if r.run_dir else ""))
        cases.append(Case("ukehi-jepsen.regress.sim", f"{r.bug} (sim {r.workload})", float(r.wall_s or 0.0),
                          status, message, text, props))
    return cases


def junit_xml(suite: str, cases: Sequence[Case], timestamp: str | None = None) -> str:
    """A JUnit XML document (the common Surefire/Jenkins shape) with one test suite."""
    counts = {s: sum(1 for c in cases if c.status == s) for s in ("failure", "error", "skipped")}
    total_s = f"{sum(c.seconds for c in cases):.3f}"
    root = ET.Element("testsuites", name="ukehi-jepsen", tests=str(len(cases)), failures=str(counts["failure"]),
                      errors=str(counts["error"]), time=total_s)
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(counts["failure"]),
                       errors=str(counts["error"]), skipped=str(counts["skipped"]), time=total_s,
                       timestamp=timestamp or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    for case in cases:
        el = ET.SubElement(ts, "testcase", classname=case.classname, name=case.name, time=f"{case.seconds:.3f}")
        if case.properties:
            props = ET.SubElement(el, "properties")
            for key, value in case.properties.items():
                ET.SubElement(props, "property", name=key, value=value)
        if case.status in ("failure", "error"):
            ET.SubElement(el, case.status, message=case.message, type=case.message.split(":")[0]).text = case.text
        elif case.status == "skipped":
            ET.SubElement(el, "skipped", message=case.message)
            if case.text:
                ET.SubElement(el, "system-out").text = case.text
        elif case.text:
            ET.SubElement(el, "system-out").text = case.text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def check_output_file(flag: str, path: str | None) -> None:
    """Refuse, before anything runs, an output file that cannot be written."""
    if path is None:
        return
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise CIError(f"{flag} {path}: is a directory; give a file name, e.g. {flag} results/junit.xml")
    if not parent.is_dir():
        raise CIError(f"{flag} {path}: the directory {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise CIError(f"{flag} {path}: cannot write in {str(parent)!r}; choose another place")


def write_text(path: str, text: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


class Report:
    """Collects a command's runs for ``--junit`` / ``--json``. With ``--json`` the command's
    own printing goes to stderr until :meth:`finish` prints the JSON on the real stdout."""

    def __init__(self, suite: str, junit: str | None, json_out: bool) -> None:
        check_output_file("--junit", junit)
        self.suite = suite
        self.junit = junit
        self.json_out = json_out
        self.cases: list[Case] = []
        self.runs: list[dict[str, Any]] = []
        self._started = time.monotonic()
        self._stdout: TextIO | None = None
        if json_out:
            self._stdout = sys.stdout
            sys.stdout = sys.stderr

    def add_run(self, spec: Any, verdict: Mapping[str, Any], run_dir: str) -> None:
        now = time.monotonic()
        self.cases.append(run_case(spec, verdict, run_dir, now - self._started))
        self._started = now
        self.runs.append({"name": spec.name, "seed": spec.seed, "run_dir": run_dir, "results": dict(verdict)})

    def finish(self, document: Mapping[str, Any] | None = None) -> None:
        """Write the JUnit file and print the JSON (``document``, or the runs' results)."""
        if self.junit:
            write_text(self.junit, junit_xml(self.suite, self.cases))
        if self._stdout is not None:
            sys.stdout = self._stdout
            self._stdout = None
        if self.json_out:
            if document is None:
                from checkers.results import merge_valid

                document = {"valid": merge_valid(r["results"].get("valid", "unknown") for r in self.runs),
                            "runs": self.runs}
            print(json.dumps(document, indent=2, sort_keys=True, default=str))
            sys.stdout.flush()


def read_nodes_file(path: str) -> list[str]:
    """Node names or hosts, one a line; blank lines and ``#`` comments are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CIError(f"--nodes-file {path}: cannot read it ({err.strerror or err}); give a file with "
                      "one node name or host per line") from None
    except UnicodeDecodeError:
        raise CIError(f"--nodes-file {path}: not UTF-8 text; give one node name or host per line") from None
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if "," in name or " " in name or "\t" in name:
            raise CIError(f"--nodes-file {path}: line {number} {line.strip()!r}: one node name or host per line")
        names.append(name)
    if not names:
        raise CIError(f"--nodes-file {path}: no node names in it; write one node name or host per line")
    return names


def merge_nodes(nodes: str | None, nodes_file: str | None) -> str | None:
    """``--nodes`` merged with ``--nodes-file`` (the file's names after --nodes', each once),
    as the comma list ``--nodes`` takes; ``nodes`` unchanged without a file."""
    if nodes_file is None:
        return nodes
    given = [n.strip() for n in (nodes or "").split(",") if n.strip()]
    if len(given) == 1 and given[0].isdigit():
        raise CIError(f"--nodes {given[0]} is a node count; with --nodes-file give names (or leave --nodes out)")
    return ",".join(dict.fromkeys([*given, *read_nodes_file(nodes_file)]))
