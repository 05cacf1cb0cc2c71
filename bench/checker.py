"""Benchmark of the linearizability checker: operations checked per second and peak memory.

Generated cas-register histories (linearizable by construction, see
``checkers.generate``) of 1,000 to 100,000 operations, with 5, 20 and 50 concurrent
processes over 1, 10 and 100 keys, with 0% and 5% ``info`` ops; plus adversarial
histories that must end ``unknown`` within the time budget; plus, optionally, history
files given on the command line (e.g. Porcupine's ``kv/c50-ok.txt``) to compare with
Porcupine's own speed.

Each cell runs in a fresh forked process, so its peak memory (the rise of the
process's peak RSS during the check) is its own.  The target is at least 20,000 ops/s
on 100,000-operation histories with 20 processes over 100 keys.

``--vs-go`` instead times our checker and Go Porcupine side by side, in one run: the
Porcupine corpus (``--corpus DIR``, default ``../shared/vectors/porcupine``: its
``jepsen/*.log`` etcd logs and ``kv/*.txt`` kv logs) and a synthetic 100,000-op history
(20 processes, 100 keys), each parsed once, then only the check timed, in-process on
both sides, ``--reps`` runs alternating Go and Python (median per file, summed per
group).  The Go driver (``bench/porcupine_driver/main.go``, our own code) is built in a
temporary directory against ``../shared/porcupine`` (Go Porcupine's library files, never
copied here); without ``go`` or that folder the Go column is skipped with the reason.
Verdicts must agree.  It also times reading a 100,000-op JSONL history and Porcupine's kv
files (against the reading of before issue 17), and ``ukehi-jepsen check`` process start-up
against a bare ``python -c pass`` in the same run (wall and CPU milliseconds).  Reading is
timed three ways, alternating in one run: the default reader (the compiled one,
``checkers._fastread``, when it is built), the pure-Python reader (what
``UKEHI_PURE_PYTHON=1`` or an install without a C compiler reads with) and the reading of
before issue 17.  ``--reading-only`` times just that.

    .venv/bin/python bench/checker.py [--quick] [--budget S] [--file PATH ...]
    .venv/bin/python bench/checker.py --vs-go [--reps 3] [--corpus DIR ...]
    .venv/bin/python bench/checker.py --reading-only [--reps 5]

Prints a table, and as the last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkers.checker import check_operations  # noqa: E402
from checkers.generate import generate_history  # noqa: E402
from checkers.mapping import infer_model, to_operations  # noqa: E402
from checkers.model import UNKNOWN, Operation  # noqa: E402
from checkers.models import APPEND, CAS, READ, WRITE, make_model  # noqa: E402
from checkers.readers import read_history  # noqa: E402

TARGET = {"ops": 100_000, "processes": 20, "keys": 100, "ops_per_s": 20_000}
ROOT = Path(__file__).resolve().parent.parent
PORCUPINE_DIR = ROOT.parent / "shared" / "porcupine"
DEFAULT_CORPUS = ROOT.parent / "shared" / "vectors" / "porcupine"
GO_DRIVER = ROOT / "bench" / "porcupine_driver" / "main.go"
# Goals of issue 17 (ratios against Go Porcupine measured in the same run).
GOAL_RATIO = 1.0
GOAL_START_MS = 150
GOAL_READ_SPEEDUP = 5.0


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(check: Callable[[], Any]) -> tuple[Any, float, float, float, str]:
    """(result, wall seconds, CPU seconds of this process, peak MiB above the start,
    how memory was measured).  CPU time is shown too because on a shared machine the
    wall time also counts other people's work."""
    gc.collect()
    if _reset_peak_rss() and _status_kib("VmRSS") is not None:
        base = _status_kib("VmRSS") or 0
        started, cpu = time.perf_counter(), time.process_time()
        result = check()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        peak = _status_kib("VmHWM") or base
        return result, elapsed, cpu, max(peak - base, 0) / 1024, "rss"
    started, cpu = time.perf_counter(), time.process_time()
    result = check()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    tracemalloc.start()
    check()
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, cpu, peak_bytes / 2**20, "tracemalloc"


def _adversarial(n_keys: int, width: int = 26) -> list[Operation]:
    """Per key: ``width`` overlapping writes, then a read of a value never written.
    Proving it illegal means trying every subset of the writes."""
    ops: list[Operation] = []
    for k in range(n_keys):
        key = f"k{k}"
        ops += [Operation(i, (WRITE, key, i, None), i, None, 1000 + i) for i in range(width)]
        ops.append(Operation(width, (READ, key, None, None), 2000, -1, 2001))
    return ops


def _cell(spec: dict[str, Any], budget: float) -> dict[str, Any]:
    model = make_model("cas-register")
    if spec["kind"] == "generated":
        history = generate_history("cas-register", n_ops=spec["ops"], n_processes=spec["processes"],
                                   n_keys=spec["keys"], info_fraction=spec["info"], seed=spec.get("seed", 1))
        operations = to_operations(history, "cas-register")
    elif spec["kind"] == "adversarial":
        operations = _adversarial(spec["keys"])
    else:
        loaded = read_history(spec["path"])
        name = {"jepsen-log": "cas-register", "porcupine-kv": "porcupine-kv"}.get(loaded.format) \
            or infer_model(loaded.ops)
        model = make_model(name)
        operations = to_operations(loaded.ops, name, loaded.conventions)
        spec = dict(spec, ops=len(operations), model=name)
    result, elapsed, cpu, peak_mib, how = _measure(lambda: check_operations(model, operations, budget))
    return dict(spec, verdict=result.value, seconds=round(elapsed, 3), cpu_seconds=round(cpu, 3),
                ops_per_s=round(len(operations) / elapsed) if elapsed > 0 else None,
                peak_mib=round(peak_mib, 1), memory=how)


def _child(conn: Any, spec: dict[str, Any], budget: float) -> None:
    try:
        conn.send(_cell(spec, budget))
    except Exception as err:  # noqa: BLE001 - report the cell's failure, keep the bench going
        conn.send(dict(spec, verdict="error", error=repr(err)))
    conn.close()


def run_cell(spec: dict[str, Any], budget: float) -> dict[str, Any]:
    """Run one cell in a fresh process (own memory peak); a hard wall limit backs the budget."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, spec, budget))
    proc.start()
    child.close()
    wall = budget * 3 + 120  # generation of 100k ops plus the budget, with room
    if parent.poll(wall):
        out = parent.recv()
    else:
        proc.kill()
        out = dict(spec, verdict="hang", seconds=wall)
    proc.join()
    return out


def matrix(quick: bool) -> list[dict[str, Any]]:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    cells = []
    for n in sizes:
        for processes in (5, 20, 50):
            for keys in (1, 10, 100):
                for info in (0.0, 0.05):
                    cells.append({"kind": "generated", "ops": n, "processes": processes, "keys": keys,
                                  "info": info})
    if quick:
        cells.append({"kind": "generated", **{k: TARGET[k] for k in ("ops", "processes", "keys")},
                      "info": 0.05})
    return cells


# ---- side by side with Go Porcupine ----

def build_go_driver(workdir: Path) -> tuple[Path | None, str]:
    """Build bench/porcupine_driver against ../shared/porcupine; (binary, "") or (None, why not)."""
    go = shutil.which("go")
    if go is None:
        return None, "no go toolchain (apt-get install golang-go)"
    if not (PORCUPINE_DIR / "checker.go").is_file():
        return None, f"no Go Porcupine at {PORCUPINE_DIR}"
    shutil.copy(GO_DRIVER, workdir / "main.go")
    (workdir / "go.mod").write_text("module ukehibench\n\ngo 1.16\n\n"
                                    "require github.com/anishathalye/porcupine v0.0.0\n\n"
                                    f"replace github.com/anishathalye/porcupine => {PORCUPINE_DIR}\n")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOCACHE=str(workdir / "cache"),
               GOPATH=str(workdir / "gopath"))
    built = subprocess.run([go, "build", "-o", "driver", "."], cwd=workdir, env=env,
                           capture_output=True, text=True)
    if built.returncode != 0:
        return None, "go build failed: " + " ".join(built.stderr.split())[:300]
    return workdir / "driver", ""


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def go_rows(model_name: str, operations: list[Operation]) -> list[list[Any]]:
    """Our operations in the Go driver's shape (see bench/porcupine_driver/main.go)."""
    kv = model_name == "porcupine-kv"

    def enc(v: Any) -> str:
        return ("" if v is None else str(v)) if kv else json.dumps(_plain(v))

    rows = []
    for position, op in enumerate(operations):
        kind, key, a, b = op.input
        unknown = op.output is UNKNOWN
        if kind not in ((READ, WRITE, APPEND) if kv else (READ, WRITE, CAS)):
            raise ValueError(f"the Go driver has no kind {kind} for {model_name}")
        out = "" if unknown or kind in (WRITE, APPEND) else (
            ("true" if op.output else "false") if kind == CAS else enc(op.output))
        client = op.client_id if isinstance(op.client_id, int) else position
        rows.append([client, kind, key if kv else json.dumps(_plain(key)), enc(a), enc(b), out,
                     int(unknown), op.call, -1 if op.return_time is None else op.return_time])
    return rows


def corpus_cases(dirs: list[Path]) -> list[dict[str, Any]]:
    """Porcupine's etcd logs (jepsen/*.log) and kv logs (kv/*.txt) under each dir, parsed."""
    cases = []
    for base in dirs:
        for group, pattern in (("etcd", "jepsen/*.log"), ("kv", "kv/*.txt")):
            for path in sorted(base.glob(pattern)):
                loaded = read_history(str(path))
                name = {"jepsen-log": "cas-register", "porcupine-kv": "porcupine-kv"}[loaded.format]
                cases.append({"name": path.name, "group": group, "model": name,
                              "operations": to_operations(loaded.ops, name, loaded.conventions)})
    return cases


def synthetic_case() -> dict[str, Any]:
    history = generate_history("cas-register", n_ops=TARGET["ops"], n_processes=TARGET["processes"],
                               n_keys=TARGET["keys"], info_fraction=0.05, seed=1)
    return {"name": "synthetic-100k", "group": "synthetic", "model": "cas-register",
            "operations": to_operations(history, "cas-register")}


def run_go(driver: Path, cases: list[dict[str, Any]], budget: float, workdir: Path) -> dict[str, tuple[str, float]]:
    spec_path = workdir / "cases.json"
    if not spec_path.exists():
        spec_path.write_text(json.dumps({"reps": 1, "timeout_s": budget, "cases": [
            {"name": c["name"], "model": c["model"], "ops": go_rows(c["model"], c["operations"])}
            for c in cases]}))
    done = subprocess.run([str(driver), str(spec_path)], capture_output=True, text=True, check=True)
    out = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        out[row["name"]] = (row["verdict"], row["seconds"])
    return out


def run_python(cases: list[dict[str, Any]], budget: float) -> dict[str, tuple[str, float]]:
    out = {}
    for c in cases:
        model = make_model(c["model"])
        gc.collect()
        started = time.perf_counter()
        result = check_operations(model, c["operations"], budget)
        out[c["name"]] = (result.value, time.perf_counter() - started)
    return out


def _read_jsonl_before(path: Path) -> list[Any]:
    """The JSONL reading of before issue 17 (every line through Op.from_dict), the reference."""
    from checkers.history import Op

    with open(path, encoding="utf-8") as f:
        return [Op.from_dict(json.loads(line), n) for n, line in enumerate(f, 1) if line.strip()]


def time_reading(tmp: Path, reps: int) -> dict[str, Any]:
    """Median wall and CPU seconds to read a 100,000-op JSONL history (200,000 lines) with
    read_history (the compiled reader when it is built), with the pure-Python reader, and
    with the reading of before issue 17, alternating (CPU time as well: on a shared machine
    the wall time also counts other people's work).  ``compiled`` says whether the first
    used the compiled reader, or why not."""
    import checkers.history as history
    from checkers import native
    from checkers.history import dumps_op

    history_ops = generate_history("cas-register", n_ops=TARGET["ops"], n_processes=TARGET["processes"],
                                   n_keys=TARGET["keys"], info_fraction=0.05, seed=1)
    path = tmp / "history-100k.jsonl"
    path.write_text("".join(dumps_op(op) + "\n" for op in history_ops))
    del history_ops
    compiled = history.compiled_reader()
    if compiled is not None:
        why_not = ""
    elif os.environ.get(native.PURE_PYTHON_ENV, "") not in ("", "0"):
        why_not = f"{native.PURE_PYTHON_ENV} is set"
    else:
        why_not = "checkers._fastread is not built (no C compiler or Python headers at install time?)"

    def read_with(module: Any) -> Callable[[], Any]:
        def read() -> Any:
            saved = history._compiled
            history._compiled = module if module is not None else False
            try:
                return read_history(str(path))
            finally:
                history._compiled = saved
        return read

    readers: list[tuple[str, Callable[[], Any]]] = [("read", read_with(compiled))]
    if compiled is not None:
        readers.append(("python", read_with(None)))
    readers.append(("before", lambda: _read_jsonl_before(path)))
    runs: dict[str, list[float]] = {f"{name}{unit}": [] for name, _ in readers for unit in ("_s", "_cpu_s")}
    for _ in range(reps):
        for name, read in readers:
            gc.collect()
            started, cpu = time.perf_counter(), time.process_time()
            ops = read()
            runs[f"{name}_s"].append(time.perf_counter() - started)
            runs[f"{name}_cpu_s"].append(time.process_time() - cpu)
            del ops
    out: dict[str, Any] = {name: statistics.median(values) for name, values in runs.items()}
    if compiled is None:  # the default reader is the pure-Python one
        out["python_s"], out["python_cpu_s"] = out["read_s"], out["read_cpu_s"]
    out["compiled"] = why_not or True
    out["reps"] = reps
    return out


def report_reading(reading: dict[str, Any]) -> dict[str, Any]:
    """Print the reading figures; their part of the JSON summary."""
    before, before_cpu = reading["before_s"], reading["before_cpu_s"]
    speedup, cpu_speedup = before / reading["read_s"], before_cpu / reading["read_cpu_s"]
    python_speedup = before / reading["python_s"]
    print(f"reading a {TARGET['ops']:,}-op JSONL history (median of {reading['reps']} alternating runs):")
    print(f"{'reader':<34}{'wall s':>9}{'CPU s':>9}{'vs before':>11}{'CPU vs before':>15}")
    shown = [("compiled (checkers._fastread)" if reading["compiled"] is True else "default (pure Python)", "read")]
    if reading["compiled"] is True:
        shown.append(("pure Python (UKEHI_PURE_PYTHON=1)", "python"))
    shown.append(("before issue 17", "before"))
    for label, name in shown:
        print(f"{label:<34}{reading[f'{name}_s']:>9.3f}{reading[f'{name}_cpu_s']:>9.3f}"
              f"{before / reading[f'{name}_s']:>10.2f}x{before_cpu / reading[f'{name}_cpu_s']:>14.2f}x")
    if reading["compiled"] is not True:
        print(f"compiled reader not used: {reading['compiled']}")
    print(f"reading: {speedup:.2f}x faster than before issue 17, {cpu_speedup:.2f}x in CPU "
          f"(goal >= {GOAL_READ_SPEEDUP:g}x: {'met' if speedup >= GOAL_READ_SPEEDUP else 'NOT met'}); "
          f"pure Python {python_speedup:.2f}x")
    return {"read_100k_s": round(reading["read_s"], 3), "read_100k_before_s": round(before, 3),
            "read_100k_cpu_s": round(reading["read_cpu_s"], 3), "read_100k_before_cpu_s": round(before_cpu, 3),
            "read_100k_python_s": round(reading["python_s"], 3),
            "read_100k_python_cpu_s": round(reading["python_cpu_s"], 3),
            "read_speedup": round(speedup, 2), "read_cpu_speedup": round(cpu_speedup, 2),
            "read_python_speedup": round(python_speedup, 2),
            "read_python_cpu_speedup": round(before_cpu / reading["python_cpu_s"], 2),
            "read_compiled": reading["compiled"], "read_reps": reading["reps"],
            "read_goal_met": speedup >= GOAL_READ_SPEEDUP}


def reading_only(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="checker-bench-") as tmp_name:
        reading = time_reading(Path(tmp_name), args.reps)
    summary = report_reading(reading)
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def time_kv_reading(corpus: list[Path], reps: int) -> tuple[float, float, int] | None:
    """Median CPU seconds to read Porcupine's kv files with read_history and with the EDN
    reader every line went through before issue 17; None without kv files."""
    from checkers.readers import read_edn_lines

    paths = [p for base in corpus for p in sorted(base.glob("kv/*.txt"))]
    if not paths:
        return None
    texts = [p.read_text(encoding="utf-8") for p in paths]
    now, before = [], []
    for _ in range(reps):
        cpu = time.process_time()
        for p in paths:
            read_history(str(p))
        now.append(time.process_time() - cpu)
        cpu = time.process_time()
        for text in texts:
            read_edn_lines(text)
        before.append(time.process_time() - cpu)
    return statistics.median(now), statistics.median(before), len(paths)


def _child_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def time_start(tmp: Path, reps: int) -> dict[str, Any]:
    """Median wall ms and CPU ms of `ukehi-jepsen check` on a 2-op history, and of a bare
    `python -c pass`, alternating.  Bytecode is cached (in a temporary folder) and warmed
    once, as on an installed machine: this session's PYTHONDONTWRITEBYTECODE would otherwise
    make every start compile the checker's modules anew."""
    cli = Path(sys.executable).parent / "ukehi-jepsen"
    tiny = tmp / "tiny.jsonl"
    tiny.write_text('{"index":0,"time":0,"process":0,"type":"invoke","f":"write","value":1}\n'
                    '{"index":1,"time":1,"process":0,"type":"ok","f":"write","value":1}\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    if not cli.exists():
        return {"why": f"no {cli}"}
    commands = {"bare": [sys.executable, "-c", "pass"], "check": [str(cli), "check", str(tiny)]}
    for argv in commands.values():  # warm the bytecode cache and the page cache
        subprocess.run(argv, env=env, capture_output=True)
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(reps):
        for name, argv in commands.items():
            cpu_before = _child_cpu_ms()
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, text=True)
            wall[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append(_child_cpu_ms() - cpu_before)
            if done.returncode != 0:
                return {"why": f"{name} failed: " + done.stderr.strip()[:200]}
    out: dict[str, Any] = {"why": ""}
    for name in commands:
        out[f"{name}_ms"] = statistics.median(wall[name])
        out[f"{name}_cpu_ms"] = statistics.median(cpu[name])
    return out


def vs_go(args: argparse.Namespace) -> int:
    corpus = [Path(d) for d in args.corpus] or ([DEFAULT_CORPUS] if DEFAULT_CORPUS.is_dir() else [])
    cases = corpus_cases(corpus)
    if not args.no_synthetic:
        cases.append(synthetic_case())
    with tempfile.TemporaryDirectory(prefix="checker-bench-") as tmp_name:
        tmp = Path(tmp_name)
        driver, why_not = build_go_driver(tmp)
        py_times: dict[str, list[float]] = {c["name"]: [] for c in cases}
        go_times: dict[str, list[float]] = {c["name"]: [] for c in cases}
        verdicts: dict[str, dict[str, str]] = {c["name"]: {} for c in cases}
        for _ in range(args.reps):  # alternate, so load changes hit both sides alike
            if driver is not None:
                for name, (verdict, seconds) in run_go(driver, cases, args.budget, tmp).items():
                    go_times[name].append(seconds)
                    verdicts[name]["go"] = verdict
            for name, (verdict, seconds) in run_python(cases, args.budget).items():
                py_times[name].append(seconds)
                verdicts[name]["python"] = verdict
        reading = time_reading(tmp, args.reps)
        kv_reading = time_kv_reading(corpus, args.reps)
        start = time_start(tmp, max(args.reps * 3, 10))

    header = f"{'file':<18}{'group':<10}{'ops':>7}  {'verdict':<9}{'python s':>10}{'go s':>10}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    mismatches: list[str] = []
    undecided: list[str] = []
    for c in cases:
        name = c["name"]
        py = statistics.median(py_times[name])
        go = statistics.median(go_times[name]) if go_times[name] else None
        v = verdicts[name]
        if "go" in v and v["go"] != v["python"]:
            # a side that ran out of the budget decided nothing: only ok against illegal differs
            (undecided if "unknown" in (v["go"], v["python"]) else mismatches).append(name)
        verdict = v["python"] if v.get("go", v["python"]) == v["python"] else f"{v['python']}/go:{v['go']}"
        ratio = py / go if go else None
        rows.append({"name": name, "group": c["group"], "ops": len(c["operations"]), "verdict": v["python"],
                     "go_verdict": v.get("go"), "python_s": round(py, 5),
                     "go_s": None if go is None else round(go, 5),
                     "ratio": None if ratio is None else round(ratio, 2)})
        print(f"{name[:17]:<18}{c['group']:<10}{len(c['operations']):>7}  {verdict:<9}{py:>10.4f}"
              f"{'-' if go is None else f'{go:.4f}':>10}{'-' if ratio is None else f'{ratio:.2f}x':>8}")
    print()
    groups = {}
    for group in dict.fromkeys(c["group"] for c in cases):
        members = [r for r in rows if r["group"] == group]
        py = sum(r["python_s"] for r in members)
        go = sum(r["go_s"] for r in members) if driver is not None else None
        ratio = py / go if go else None
        groups[group] = {"files": len(members), "python_s": round(py, 4), "go_s": None if go is None else round(go, 4),
                         "ratio": None if ratio is None else round(ratio, 2),
                         "goal_met": None if ratio is None else ratio <= GOAL_RATIO}
        shown = "Go skipped" if ratio is None else f"{ratio:.2f}x Go ({'met' if ratio <= GOAL_RATIO else 'NOT met'})"
        print(f"{group:<10} {len(members):>3} file(s): python {py:.3f} s, go "
              f"{'-' if go is None else f'{go:.3f} s'}: {shown}")
    if driver is None:
        print(f"Go column skipped: {why_not}")
    reading_summary = report_reading(reading)
    if kv_reading is not None:
        kv_now, kv_before, kv_files = kv_reading
        print(f"reading Porcupine's {kv_files} kv files: {kv_now:.3f} s CPU, through the EDN reader as "
              f"before issue 17 {kv_before:.3f} s CPU: {kv_before / kv_now:.1f}x faster")
    if start["why"]:
        print(f"`ukehi-jepsen check` start-up: not measured ({start['why']})")
    else:
        print(f"`ukehi-jepsen check` on a 2-op file: {start['check_ms']:.0f} ms wall, {start['check_cpu_ms']:.0f} ms "
              f"CPU; bare `python -c pass` {start['bare_ms']:.0f} ms wall, {start['bare_cpu_ms']:.0f} ms CPU "
              f"(check / bare: {start['check_ms'] / start['bare_ms']:.1f}x wall, "
              f"{start['check_cpu_ms'] / start['bare_cpu_ms']:.1f}x CPU; goal <= {GOAL_START_MS} ms: "
              f"{'met' if start['check_ms'] <= GOAL_START_MS else 'NOT met'} in wall time, "
              f"{'met' if start['check_cpu_ms'] <= GOAL_START_MS else 'NOT met'} in CPU time)")
    if undecided:
        print(f"undecided within the {args.budget:g} s budget on one side (not a disagreement): "
              f"{', '.join(undecided)}")
    if mismatches:
        print(f"VERDICTS DIFFER: {', '.join(mismatches)}")
    summary = {"reps": args.reps, "budget_s": args.budget, "go": why_not or "ok", "groups": groups,
               **reading_summary,
               "kv_read_cpu_s": None if kv_reading is None else round(kv_reading[0], 4),
               "kv_read_before_cpu_s": None if kv_reading is None else round(kv_reading[1], 4),
               "check_start_ms": None if start["why"] else round(start["check_ms"], 1),
               "check_start_cpu_ms": None if start["why"] else round(start["check_cpu_ms"], 1),
               "python_start_ms": None if start["why"] else round(start["bare_ms"], 1),
               "python_start_cpu_ms": None if start["why"] else round(start["bare_cpu_ms"], 1),
               "check_start_vs_python": None if start["why"] else round(start["check_ms"] / start["bare_ms"], 2),
               "start_not_measured": start["why"] or None, "verdict_mismatches": mismatches, "undecided": undecided, "files": rows}
    print(json.dumps(summary, separators=(",", ":")))
    return 1 if mismatches else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k histories only, plus the target cell")
    parser.add_argument("--budget", type=float, default=5.0, help="time limit per check, seconds (default 5)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="also time this history file (any format `ukehi-jepsen check` reads), "
                             "e.g. Porcupine's kv/c50-ok.txt; repeatable")
    parser.add_argument("--vs-go", action="store_true", help="time our checker and Go Porcupine side by "
                        "side on Porcupine's corpus and a synthetic 100k-op history (see above)")
    parser.add_argument("--corpus", action="append", default=[], metavar="DIR",
                        help="--vs-go: a folder with Porcupine's jepsen/*.log and kv/*.txt (repeatable; "
                             f"default {DEFAULT_CORPUS})")
    parser.add_argument("--reps", type=int, default=3, help="--vs-go, --reading-only: runs per file, median taken "
                        "(default 3)")
    parser.add_argument("--no-synthetic", action="store_true", help="--vs-go: leave out the 100k-op history")
    parser.add_argument("--reading-only", action="store_true", help="time only the reading of a 100k-op JSONL "
                        "history: compiled, pure Python and before issue 17 (--reps runs, alternating)")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error("--budget must be positive seconds")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.reading_only:
        return reading_only(args)
    if args.vs_go:
        for d in args.corpus:
            if not Path(d).is_dir():
                parser.error(f"--corpus {d}: no such folder")
        return vs_go(args)
    for path in args.file:
        if not Path(path).is_file():
            parser.error(f"--file {path}: no such file")

    rows: list[dict[str, Any]] = []
    header = (f"{'kind':<12}{'ops':>8}{'procs':>6}{'keys':>6}{'info':>6}  {'verdict':<8}{'s':>8}{'cpu s':>8}"
              f"{'ops/s':>10}{'MiB':>8}")
    print(header)
    print("-" * len(header))

    def show(row: dict[str, Any]) -> None:
        rows.append(row)
        label = row["kind"] if row["kind"] != "file" else Path(row["path"]).name[:11]
        info = f"{row.get('info', 0) * 100:.0f}%" if "info" in row else "-"
        print(f"{label:<12}{row.get('ops', '-'):>8}{row.get('processes', '-'):>6}{row.get('keys', '-'):>6}"
              f"{info:>6}  {row['verdict']:<8}{row.get('seconds', 0):>8.2f}{row.get('cpu_seconds', 0):>8.2f}"
              f"{row.get('ops_per_s') or 0:>10}"
              f"{row.get('peak_mib', 0):>8.1f}", flush=True)

    for spec in matrix(args.quick):
        show(run_cell(spec, args.budget))
    for keys in (1, 100):
        show(run_cell({"kind": "adversarial", "ops": keys * 27, "keys": keys}, args.budget))
    for path in args.file:
        show(run_cell({"kind": "file", "path": path}, args.budget * 12))

    target_rows = [r for r in rows if r["kind"] == "generated" and r["ops"] == TARGET["ops"]
                   and r["processes"] == TARGET["processes"] and r["keys"] == TARGET["keys"]]
    target_speed = min((r["ops_per_s"] or 0 for r in target_rows if r["verdict"] == "ok"), default=None)
    adversarial_ok = all(r["verdict"] == "unknown" and r["seconds"] <= args.budget + 2
                         for r in rows if r["kind"] == "adversarial")
    hangs = [r for r in rows if r["verdict"] in ("hang", "error")]
    print()
    print(f"target: >= {TARGET['ops_per_s']} ops/s on {TARGET['ops']} ops, {TARGET['processes']} processes, "
          f"{TARGET['keys']} keys: {target_speed if target_speed is not None else 'n/a'} ops/s"
          f" ({'met' if target_speed and target_speed >= TARGET['ops_per_s'] else 'NOT met'})")
    print(f"adversarial histories unknown within the budget: {'yes' if adversarial_ok else 'NO'}; "
          f"hangs or errors: {len(hangs)}")
    summary = {"budget_s": args.budget, "target": dict(TARGET, measured_ops_per_s=target_speed,
                                                       met=bool(target_speed and target_speed >= TARGET["ops_per_s"])),
               "adversarial_unknown_in_budget": adversarial_ok, "hangs_or_errors": len(hangs), "cells": rows}
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if not hangs else 1


if __name__ == "__main__":
    sys.exit(main())
