"""`ukehi-jepsen serve` over HTTP and WSGI, without a browser: what each page says about the
store, what is refused (traversal, symlinks, odd names: 404), and the re-analysis gate."""

from __future__ import annotations

import html
import http.client
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from wsgiref.util import setup_testing_defaults

import pytest

from harness.serve.app import App, is_loopback
from harness.serve.catalog import Catalog
from harness.serve.server import is_loopback_host

from serve_fixtures import LIVE

VALID = "register-partition/20260101T100000.000Z"


def raw_get(base: str, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    """A request with the path sent exactly as written (no client-side normalisation)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest(method, path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}


def wsgi(app: App, path: str, method: str = "GET", body: bytes = b"", **env: Any) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update({"PATH_INFO": path, "REQUEST_METHOD": method, "wsgi.input": io.BytesIO(body),
                    "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1", "QUERY_STRING": ""})
    environ.update(env)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    out = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], out


def test_catalog_tells_every_state(store):
    root, ids = store
    states = {r.id: r.state for r in Catalog(root.resolve(), LIVE).runs()}
    for role in ("valid", "invalid", "unknown", "crashed", "incomplete", "running"):
        assert states[ids[role]] == role, (role, states)
    assert not any("SECRET" in i or i.startswith("outside-test") or "2099" in i for i in states)


def test_interrupted_run_is_incomplete(tmp_path):
    from serve_fixtures import write_run

    root = tmp_path / "results"
    write_run(root, "register-stopped", "20260105T000000.000Z", check=False,
              results={"valid": True, "ops": 7, "incomplete": True, "interrupted_by": "SIGTERM", "checkers": {}})
    (run,) = Catalog(root.resolve(), LIVE).runs()
    assert run.state == "incomplete"


def test_home_lists_runs_newest_first_with_columns(server, store):
    _, ids = store
    status, body, headers = raw_get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    order = [page.index(f'/run/{ids[role]}/"') for role in ("running", "incomplete", "crashed", "unknown",
                                                              "invalid", "valid")]
    assert order == sorted(order), "runs must be newest first"
    for state in ("valid", "invalid", "unknown", "running", "incomplete", "crashed"):
        assert f'data-verdict="{state}"' in page
    assert "faults:" in page and "elapsed" in page  # the running run's live progress line
    assert '<meta http-equiv="refresh"' in page
    assert "SECRET" not in page


def test_home_filters(server, store):
    _, ids = store
    _, body, _ = raw_get(server, "/?verdict=invalid")
    page = body.decode()
    assert page.count('class="run"') == 2 and ids["invalid"] in page and ids["valid"] not in page
    _, body, _ = raw_get(server, "/?workload=kv")
    assert body.decode().count('class="run"') == 1
    _, body, _ = raw_get(server, "/?nemesis=kill")
    assert body.decode().count('class="run"') == 1
    _, body, _ = raw_get(server, "/?q=unjudged")
    assert ids["incomplete"] in body.decode() and body.decode().count('class="run"') == 1


def test_home_pages(store, monkeypatch):
    import harness.serve.app as appmod

    root, _ = store
    monkeypatch.setattr(appmod, "PAGE_SIZE", 4)
    app = App(root, live_seconds=LIVE)
    _, _, first = wsgi(app, "/")
    _, _, third = wsgi(app, "/", QUERY_STRING="page=3")
    assert first.decode().count('class="run"') == 4 and third.decode().count('class="run"') == 1
    assert "page 1 of 3" in first.decode() and 'rel="next"' in first.decode()


def test_run_page_has_checkers_plots_and_links(server, store):
    _, ids = store
    status, body, _ = raw_get(server, f"/run/{ids['invalid']}/")
    page = body.decode()
    assert status == 200
    assert "not linearizable" in page and 'href="file/linearizability.html"' in page
    assert 'href="file/timeline.html"' in page and 'src="file/latency.png"' in page
    assert "\"workload\": \"register\"" in html.unescape(page)  # test.json pretty-printed
    assert 'href="log/n1"' in page and f'href="/zip/{ids["invalid"]}"' in page
    status, png, headers = raw_get(server, f"/run/{ids['invalid']}/file/latency.png")
    assert status == 200 and headers["content-type"] == "image/png" and png.startswith(b"\x89PNG")
    status, page_bytes, headers = raw_get(server, f"/run/{ids['invalid']}/file/linearizability.html")
    assert status == 200 and b"NOT linearizable" in page_bytes and "default-src 'none'" in headers["content-security-policy"]


def test_history_filters(server, store):
    _, ids = store
    _, body, _ = raw_get(server, f"/run/{ids['valid']}/history?process=nemesis")
    page = body.decode()
    assert page.count('class="op ') == 4 and "start-partition" in page
    _, body, _ = raw_get(server, f"/run/{ids['valid']}/history?type=fail")
    assert body.decode().count('class="op ') == 1
    _, body, _ = raw_get(server, f"/run/{ids['valid']}/history?key=2&type=ok")
    assert body.decode().count('class="op ') == 1


def test_node_log_marks_fault_window(server, store):
    _, ids = store
    _, body, _ = raw_get(server, f"/run/{ids['valid']}/log/n1")
    page = body.decode()
    assert "partition starts at 1.00 s" in page and "partition ends at 3.01 s" in page
    rows = [line for line in page.splitlines() if "event=" in line]
    assert [('class="fault"' in r) for r in rows] == [False, True, False], rows


def test_crashed_run_page_says_so(server, store):
    _, ids = store
    _, body, _ = raw_get(server, f"/run/{ids['crashed']}/")
    assert "stopped in the middle of this run" in body.decode()
    _, body, _ = raw_get(server, f"/run/{ids['running']}/")
    assert 'id="progress"' in body.decode() and 'http-equiv="refresh"' in body.decode()


def test_groups_and_flake_rates(server, store):
    _, ids = store
    _, body, _ = raw_get(server, "/groups")
    page = body.decode()
    for kind in ("test-count", "matrix", "regress"):
        assert f'data-kind="{kind}"' in page
    # the fixture's regress table: one bug caught (the 1 invalid run of 3) and one escape, the
    # one case that failed the suite, counted beside the flake rate so a catch is not read as a flake
    regress_row = page.split('data-kind="regress"', 1)[1].split("</tr>", 1)[0]
    assert "1/3 (33%)" in regress_row and "failed the suite: 1/3" in regress_row
    _, body, _ = raw_get(server, f"/group/{ids['test-count']}")
    page = body.decode()
    assert '<b id="flake-rate">1/3 (33%)</b>' in page and "linearizable 1/3 (33%)" in page
    _, body, _ = raw_get(server, f"/group/{ids['matrix']}")
    page = body.decode()
    assert "invalid (1 of 2)" in page and "flake 1/2 (50%)" in page and "not in this store" in page
    assert f'href="/run/{ids["invalid"]}/"' in page
    _, body, _ = raw_get(server, f"/group/{ids['regress']}")
    page = body.decode()
    assert "Planted bugs detected: <b>1/2</b>" in page and "escaped" in page and f'href="/run/{ids["valid"]}/"' in page


def test_compare(server, store):
    _, ids = store
    status, body, _ = raw_get(server, f"/compare?run={ids['valid']}&run={ids['invalid']}")
    page = body.decode()
    assert status == 200
    assert '<tr class="diff"><td>nemeses</td>' in page and "<td>read</td>" in page
    assert page.count(f'src="/run/{ids["valid"]}/file/') == 3  # latency, quantiles and rate side by side
    _, body, _ = raw_get(server, f"/compare?run={ids['valid']}&run={ids['crashed']}")
    assert "no latency.png" in body.decode()  # the crashed run was never rendered
    status, _, _ = raw_get(server, f"/compare?run={ids['valid']}")
    assert status == 400


def test_zip_has_the_run_and_nothing_else(server, store):
    _, ids = store
    status, body, headers = raw_get(server, f"/zip/{VALID}")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert "attachment" in headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    top = VALID.replace("/", "-")
    assert f"{top}/history.jsonl" in names and f"{top}/nodes/n1/node.log" in names
    assert not any("leak" in n or ".hidden" in n or "secret" in n for n in names), names
    assert b"SECRET" not in body


TRAVERSALS = [
    f"/run/{VALID}/file/../../../../etc/passwd",
    f"/run/{VALID}/file/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    f"/run/{VALID}/file/..%2f..%2f..%2fetc%2fpasswd",
    f"/run/{VALID}/file/%252e%252e/%252e%252e/etc/passwd",
    f"/run/{VALID}/file/leak.txt",  # a symlink to a file outside
    f"/run/{VALID}/file/leakdir/secret.txt",  # through a symlinked directory
    f"/run/{VALID}/file/.hidden",
    f"/run/{VALID}/file/nodes/n1/node.log%00.png",
    f"/run/{VALID}/file/nodes\\n1\\node.log",
    f"/run/{VALID}/file//etc/passwd",
    f"/run/{VALID}/log/..%2f..%2f..%2foutside",
    f"/run/{VALID}/reanalysis/..%2f..",
    "/run/outside-test/secret.txt/",  # a symlinked test dir
    "/run/register-partition/20991231T000000.000Z/",  # a symlinked run dir
    "/run/register-partition/20991231T000000.000Z/file/secret.txt",
    "/zip/outside-test/x",
    "/zip/register-partition/20991231T000000.000Z",
    "/zip/../outside",
    "/group/matrix/..%2f..%2foutside",
    "/group/test-count/../../outside",
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/run/register-partition",
    "/run/%C3%A9t%C3%A9/x/",
    "/nothing-here",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_and_odd_names_are_404(server, path):
    status, body, _ = raw_get(server, path)
    assert status == 404, (path, status)
    assert b"SECRET" not in body and b"root:" not in body


def test_only_get_and_the_reanalysis_post(server):
    status, _, _ = raw_get(server, f"/run/{VALID}/", method="DELETE")
    assert status == 405
    status, _, _ = raw_get(server, f"/run/{VALID}/file/history.jsonl", method="PUT")
    assert status == 405


def _token(app: App, run_id: str) -> str:
    _, _, page = wsgi(app, f"/run/{run_id}/")
    marker = 'name="token" value="'
    text = page.decode()
    return text[text.index(marker) + len(marker):].split('"')[0]


def test_reanalysis_refused_off_loopback_or_without_the_form(store):
    root, ids = store
    app = App(root, live_seconds=LIVE)
    token = _token(app, ids["valid"])
    body = f"token={token}".encode()
    path = f"/run/{ids['valid']}/reanalyze"
    status, _, page = wsgi(app, path, "POST", body, REMOTE_ADDR="192.0.2.7")
    assert status.startswith("403") and b"loopback" in page
    status, _, _ = wsgi(app, path, "POST", b"token=wrong")
    assert status.startswith("403")
    status, _, page = wsgi(app, path, "POST", body, HTTP_ORIGIN="http://evil.example", HTTP_HOST="127.0.0.1:8080")
    assert status.startswith("403") and b"another site" in page
    status, _, _ = wsgi(app, path, "POST", body, HTTP_SEC_FETCH_SITE="cross-site")
    assert status.startswith("403")
    status, _, _ = wsgi(app, f"/run/{ids['running']}/reanalyze", "POST", body)
    assert status.startswith("409")
    assert not (root / ids["valid"] / "reanalysis").exists()


def test_reanalysis_checks_a_copy_and_shows_the_diff(store):
    root, ids = store
    app = App(root, live_seconds=LIVE, reanalysis_time_limit=10.0)
    run_dir = root / ids["incomplete"]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    token = _token(app, ids["incomplete"])
    status, headers, _ = wsgi(app, f"/run/{ids['incomplete']}/reanalyze", "POST", f"token={token}".encode(),
                              HTTP_ORIGIN="http://127.0.0.1:8080", HTTP_HOST="127.0.0.1:8080")
    assert status.startswith("303")
    location = headers["Location"]
    deadline = time.monotonic() + 60
    while True:
        status, _, page = wsgi(app, location)
        if b'id="state">done' in page or time.monotonic() > deadline:
            break
        assert b'id="state">running' in page
        time.sleep(0.2)
    assert b'id="state">done' in page, page.decode()[-2000:]
    text = page.decode()
    assert "Verdicts: stored vs now" in text and "The verdicts changed." in text  # none stored, one now
    # nothing of the stored run changed; the new results are in the copy
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before and "results.json" not in after
    stamp = location.rsplit("/", 1)[1]
    copy = run_dir / "reanalysis" / stamp
    assert json.loads((copy / "results.json").read_text())["checkers"]["linearizable"]["valid"] is True
    # the run page links it, and the run itself is still unjudged
    _, _, run_page = wsgi(app, f"/run/{ids['incomplete']}/")
    assert f'href="reanalysis/{stamp}"'.encode() in run_page and b"v-incomplete" in run_page


def test_loopback_checks():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.1.2.3") and not is_loopback("") and not is_loopback(None)
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost") and is_loopback_host("::1")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("192.168.1.5")


def _serve_until_listening(args: list[str]) -> tuple[int | None, str]:
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if " at http://" in line:
                break
    finally:
        if proc.poll() is None:
            proc.terminate()
        code = proc.wait(timeout=10)
    return code, "".join(lines)


def test_serve_command_warns_off_loopback(store):
    root, _ = store
    _, out = _serve_until_listening(["--results-dir", str(root), "--host", "0.0.0.0", "--port", "0"])
    assert "WARNING: listening on 0.0.0.0, not loopback" in out and " at http://0.0.0.0:" in out
    _, out = _serve_until_listening(["--results-dir", str(root), "--port", "0"])
    assert "WARNING" not in out and " at http://127.0.0.1:" in out


def test_serve_command_bad_arguments(tmp_path: Path):
    code, out = _serve_until_listening(["--results-dir", str(tmp_path / "missing")])
    assert code == 254 and "is not a directory" in out
    code, out = _serve_until_listening(["--results-dir", str(tmp_path), "--port", "70000"])
    assert code == 254 and "--port 70000" in out
