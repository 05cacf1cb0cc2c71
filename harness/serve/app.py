"""The results browser as a WSGI application (standard library + Jinja2, no JavaScript).

Routes (everything is GET but the re-analysis, which is a POST from loopback only):

    /                                   every run, newest first, paged and filtered
    /run/<test>/<stamp>/                one run: verdict, checkers, plots, files, links
    /run/<test>/<stamp>/history         the history, filtered by process, key, type, f
    /run/<test>/<stamp>/log/<node>      a node's log with the fault windows marked
    /run/<test>/<stamp>/file/<path>     a file of the run, as stored (plots, pages, logs)
    /run/<test>/<stamp>/reanalysis/<s>  a re-analysis: state and the diff of verdicts
    POST /run/<test>/<stamp>/reanalyze  start one (loopback, same origin, form token)
    /zip/<test>/<stamp>                 the run directory as a zip
    /groups, /group/<kind>/...          test-count series, matrix and regress tables
    /compare?run=A&run=B                two runs side by side
    /static/style.css

Every name in a URL goes through harness/serve/paths.py; whatever it refuses is a 404.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape

from . import reanalyze, views
from .catalog import VERDICTS, Catalog, Group, Run, rate
from .paths import NotFound, safe_path, split_name

PAGE_SIZE = 50
HERE = Path(__file__).resolve().parent
# Our pages carry no scripts and load nothing from elsewhere; stored HTML pages
# (timeline.html, linearizability.html) get the same policy.
CSP = "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; form-action 'self'"

StartResponse = Callable[..., Any]


class Response:
    def __init__(self, body: bytes | Iterable[bytes], status: str = "200 OK",
                 content_type: str = "text/html; charset=utf-8", headers: list[tuple[str, str]] | None = None,
                 length: int | None = None) -> None:
        self.body = body
        self.status = status
        self.headers = [("Content-Type", content_type), ("X-Content-Type-Options", "nosniff"),
                        ("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer"),
                        ("Cache-Control", "no-store"), *(headers or [])]
        if isinstance(body, bytes):
            self.headers.append(("Content-Length", str(len(body))))
        elif length is not None:
            self.headers.append(("Content-Length", str(length)))


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class App:
    """``App(results_dir)`` is a WSGI callable."""

    def __init__(self, results_dir: str | Path, *, live_seconds: float | None = None,
                 reanalysis_time_limit: float = 120.0) -> None:
        root = Path(results_dir).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"results dir {str(root)!r} does not exist; give one with --results-dir")
        self.root = root
        self.catalog = Catalog(root) if live_seconds is None else Catalog(root, live_seconds)
        self.reanalysis_time_limit = reanalysis_time_limit
        # The re-analysis form carries this token: a page on another site cannot read it, so
        # it cannot make the browser POST for it (with the Origin check, against CSRF).
        self.form_token = secrets.token_urlsafe(24)
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                               autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.env.filters["q"] = lambda s: quote(str(s), safe="/")
        self.env.filters["seconds"] = lambda s: "-" if s is None else f"{s:.1f} s"
        self.env.filters["size"] = _size
        self.env.globals["VERDICTS"] = VERDICTS

    # --- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.dispatch(environ)
        except NotFound:
            response = self.not_found()
        start_response(response.status, response.headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [response.body] if isinstance(response.body, bytes) else response.body

    def render(self, template: str, status: str = "200 OK", **context: Any) -> Response:
        html = self.env.get_template(template).render(root=str(self.root), **context)
        return Response(html.encode("utf-8"), status)

    def not_found(self) -> Response:
        return self.render("error.html", "404 Not Found", title="Not found",
                           message="Nothing here: no run, group or file of this results dir has that name.")

    def dispatch(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        raw = environ.get("PATH_INFO", "/") or "/"
        # PATH_INFO arrives decoded as latin-1 bytes; anything that is not plain ASCII is odd.
        if not raw.isascii() or "\\" in raw or "\x00" in raw:
            raise NotFound(raw)
        query = {k: v for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        path = raw.strip("/")
        if method not in ("GET", "HEAD", "POST"):
            return Response(b"method not allowed\n", "405 Method Not Allowed", "text/plain; charset=utf-8",
                            [("Allow", "GET, HEAD, POST")])
        if method == "POST":
            parts = path.split("/")
            if len(parts) == 4 and parts[0] == "run" and parts[3] == "reanalyze":
                return self.post_reanalyze(environ, f"{parts[1]}/{parts[2]}")
            return Response(b"method not allowed\n", "405 Method Not Allowed", "text/plain; charset=utf-8",
                            [("Allow", "GET, HEAD")])
        if path == "":
            return self.home(query)
        if path == "static/style.css":
            return Response((HERE / "static" / "style.css").read_bytes(), content_type="text/css; charset=utf-8")
        if path == "groups":
            return self.groups_page()
        if path == "compare":
            return self.compare(query)
        parts = path.split("/")
        if parts[0] == "group" and len(parts) >= 3:
            return self.group_page("/".join(parts[1:]))
        if parts[0] == "zip" and len(parts) == 3:
            return self.zip(f"{parts[1]}/{parts[2]}")
        if parts[0] == "run" and len(parts) >= 3:
            run_id = f"{parts[1]}/{parts[2]}"
            rest = parts[3:]
            if not rest:
                if not raw.endswith("/"):  # relative links on the page need the slash
                    self.catalog.run(run_id)  # a 404 for a name that is no run, not a redirect
                    return Response(b"", "301 Moved Permanently", headers=[("Location", f"/run/{quote(run_id)}/")])
                return self.run_page(run_id)
            if rest == ["history"]:
                return self.history_page(run_id, query)
            if rest[0] == "log" and len(rest) == 2:
                return self.log_page(run_id, rest[1])
            if rest[0] == "file" and len(rest) >= 2:
                return self.file(run_id, rest[1:])
            if rest[0] == "reanalysis" and len(rest) == 2:
                return self.reanalysis_page(run_id, rest[1])
        raise NotFound(path)

    # --- pages -----------------------------------------------------------------------------
    def home(self, query: dict[str, list[str]]) -> Response:
        def arg(name: str) -> str:
            return (query.get(name) or [""])[0].strip()

        runs = self.catalog.runs()
        workloads = sorted({r.workload for r in runs})
        nemeses = sorted({n for r in runs for n in r.nemeses})
        chosen = {k: arg(k) for k in ("workload", "nemesis", "verdict", "q")}
        shown = [r for r in runs
                 if (not chosen["workload"] or r.workload == chosen["workload"])
                 and (not chosen["nemesis"] or chosen["nemesis"] in r.nemeses
                      or (chosen["nemesis"] == "none" and not r.nemeses))
                 and (not chosen["verdict"] or r.state == chosen["verdict"])
                 and (not chosen["q"] or all(w in r.text() for w in chosen["q"].lower().split()))]
        try:
            page = max(1, int(arg("page") or 1))
        except ValueError:
            page = 1
        pages = max(1, -(-len(shown) // PAGE_SIZE))
        page = min(page, pages)
        window = shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        link = {k: v for k, v in chosen.items() if v}
        counts = {v: sum(1 for r in runs if r.state == v) for v in VERDICTS}
        return self.render("home.html", title="Runs", runs=window, total=len(runs), matched=len(shown),
                           page=page, pages=pages, chosen=chosen, workloads=workloads, nemeses=nemeses,
                           counts=counts, refresh=any(r.state == "running" for r in window),
                           page_link=lambda n: "/?" + urlencode({**link, "page": n}),
                           groups=len(self.catalog.groups(runs)))

    def run_page(self, run_id: str) -> Response:
        run = self.catalog.run(run_id)
        files = views.run_files(run)
        names = {f["name"] for f in files}
        plots = [p for p in views.PLOTS if p in names]
        plots += sorted(n for n in names if n.endswith(".png") and "/" not in n and n not in plots)
        previews = {f["name"]: views.preview(run.path / f["name"]) for f in files
                    if f["kind"] == "text" and f["size"] and "/" not in f["name"]}
        return self.render(
            "run.html", title=run.id, run=run, checkers=views.checker_rows(run), plots=plots, files=files,
            previews=previews, pages=[p for p in ("timeline.html", "linearizability.html") if p in names],
            test_json=views.pretty_json(run.path / "test.json"),
            results_json=views.pretty_json(run.path / "results.json"),
            nodes=views.node_logs(run), reanalyses=reanalyze.reanalyses(run.path),
            token=self.form_token, refresh=run.state == "running")

    def history_page(self, run_id: str, query: dict[str, list[str]]) -> Response:
        run = self.catalog.run(run_id)
        history, error = views.load_history(run)

        def arg(name: str) -> str:
            return (query.get(name) or [""])[0].strip()

        chosen = {k: arg(k) for k in ("process", "key", "type", "f")}
        ops = views.filter_history(history, chosen["process"], chosen["key"], chosen["type"], chosen["f"])
        try:
            page = max(1, int(arg("page") or 1))
        except ValueError:
            page = 1
        pages = max(1, -(-len(ops) // views.HISTORY_PAGE))
        page = min(page, pages)
        rows = [views.history_row(op) for op in ops[(page - 1) * views.HISTORY_PAGE: page * views.HISTORY_PAGE]]
        link = {k: v for k, v in chosen.items() if v}
        return self.render("history.html", title=f"{run.id}: history", run=run, rows=rows, error=error,
                           total=len(history), matched=len(ops), chosen=chosen,
                           choices=views.history_choices(history), page=page, pages=pages,
                           page_link=lambda n: "?" + urlencode({**link, "page": n}))

    def log_page(self, run_id: str, node: str) -> Response:
        run = self.catalog.run(run_id)
        safe_path(run.path, ["nodes", node, "node.log"], want="file")
        history, _ = views.load_history(run)
        windows = views.fault_windows(run, history)
        rows, total, origin = views.marked_log(run, node, history, windows)
        return self.render("log.html", title=f"{run.id}: {node} log", run=run, node=node, rows=rows, total=total,
                           shown=min(total, views.LOG_LINES), windows=windows, aligned=origin is not None)

    def file(self, run_id: str, parts: list[str]) -> Response:
        run = self.catalog.run(run_id)
        path = safe_path(run.path, parts, want="file")
        return Response(path.read_bytes(), content_type=views.content_type(path))

    def zip(self, run_id: str) -> Response:
        run = self.catalog.run(run_id)
        size, chunks = views.zip_run(run)
        name = f"{run.test}-{run.stamp}.zip"
        return Response(chunks, content_type="application/zip", length=size,
                        headers=[("Content-Disposition", f'attachment; filename="{name}"')])

    def groups_page(self) -> Response:
        return self.render("groups.html", title="Groups", groups=self.catalog.groups())

    def group_page(self, group_id: str) -> Response:
        group = self.catalog.group(group_id)
        context: dict[str, Any] = {"title": group.title, "group": group}
        if group.kind == "test-count":
            checkers = list(dict.fromkeys(n for r in group.runs for n in r.checkers))
            context["checkers"] = checkers
            context["checker_rates"] = {
                n: rate(sum(1 for r in group.runs if r.checkers.get(n) == "invalid"),
                        sum(1 for r in group.runs if n in r.checkers)) for n in checkers}
        elif group.kind == "matrix":
            context["cells"] = {(c["policy"], c["target"]): c for c in group.rows}
        else:
            context["across"] = self.catalog.regress_history()
        return self.render(f"group_{group.kind.replace('-', '_')}.html", **context)

    def compare(self, query: dict[str, list[str]]) -> Response:
        ids = [i for i in (query.get("run") or []) if i][:2]
        if len(ids) < 2:
            ids = [i for i in ((query.get("a") or [""])[0], (query.get("b") or [""])[0]) if i]
        if len(ids) != 2:
            return self.render("error.html", "400 Bad Request", title="Compare two runs",
                               message="Pick exactly two runs to compare (tick two boxes on the list of runs).")
        a, b = (self.catalog.run(i) for i in ids)
        ha, _ = views.load_history(a)
        hb, _ = views.load_history(b)
        qa, qb = views.quantiles(ha), views.quantiles(hb)
        checkers = list(dict.fromkeys([*a.checkers, *b.checkers]))
        return self.render("compare.html", title="Compare", a=a, b=b, spec=views.spec_diff(a.spec, b.spec),
                           checkers=checkers, fs=list(dict.fromkeys([*qa, *qb])), qa=qa, qb=qb,
                           plots=[(p, (a.path / p).is_file(), (b.path / p).is_file()) for p in views.PLOTS[:3]
                                  if (a.path / p).is_file() or (b.path / p).is_file()])

    # --- re-analysis -----------------------------------------------------------------------
    def post_reanalyze(self, environ: dict[str, Any], run_id: str) -> Response:
        refusal = self._refuse_post(environ)
        if refusal:
            return self.render("error.html", "403 Forbidden", title="Re-analysis refused", message=refusal)
        run = self.catalog.run(run_id)
        if run.state == "running":
            return self.render("error.html", "409 Conflict", title="Re-analysis refused",
                               message="This run is still being written; re-analyse it once it has finished.")
        stamp = reanalyze.start(run.path, time_limit=self.reanalysis_time_limit)
        return Response(b"", "303 See Other",
                        headers=[("Location", f"/run/{quote(run.id)}/reanalysis/{quote(stamp)}")])

    def _refuse_post(self, environ: dict[str, Any]) -> str | None:
        if not is_loopback(environ.get("REMOTE_ADDR")):
            return "Re-analysis is offered only to a browser on this machine (loopback)."
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(min(max(length, 0), 4096)).decode("ascii", "replace")
        token = (parse_qs(body).get("token") or [""])[0]
        if not secrets.compare_digest(token, self.form_token):
            return "The form is out of date (the server restarted?): reload the run's page and press the button again."
        origin = environ.get("HTTP_ORIGIN")
        host = environ.get("HTTP_HOST", "")
        if origin and origin != "null" and origin.split("://", 1)[-1] != host:
            return f"The request came from another site ({origin}); use the button on this server's page."
        if environ.get("HTTP_SEC_FETCH_SITE") not in (None, "same-origin", "none"):
            return "The request came from another site; use the button on this server's page."
        return None

    def reanalysis_page(self, run_id: str, stamp: str) -> Response:
        run = self.catalog.run(run_id)
        dest = safe_path(run.path, [reanalyze.REANALYSIS, stamp], want="dir")
        state = reanalyze.state(dest)
        stored = _read_json(dest / reanalyze.STORED_RESULTS)
        new = _read_json(dest / "results.json")
        error = (dest / reanalyze.ERROR).read_text(encoding="utf-8", errors="replace") if state == "failed" else None
        base = f"reanalysis/{stamp}"
        files = sorted(p.name for p in dest.iterdir() if p.is_file() and not p.is_symlink()
                       and p.suffix in (".png", ".html", ".json"))
        return self.render("reanalysis.html", title=f"{run.id}: re-analysis {stamp}", run=run, stamp=stamp,
                           state=state, diff=reanalyze.verdict_diff(stored, new) if new else [],
                           error=error, base=base, files=files, refresh=state == "running",
                           new_json=json.dumps(new, indent=2, sort_keys=True) if new else None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


__all__ = ["App", "Group", "Run", "is_loopback", "split_name"]
