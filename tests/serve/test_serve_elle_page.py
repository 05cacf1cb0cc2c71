"""The run page links the transactional checker's anomaly page (elle.html, cycles drawn in
SVG) from the elle checker's row, and serves it under the stored pages' policy."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.serve.app import App

sys.path.insert(0, str(Path(__file__).parent))
from serve_fixtures import write_run  # noqa: E402
from test_serve_http import wsgi  # noqa: E402

from checkers.elle import check  # noqa: E402
from checkers.elle.page import cycle_page  # noqa: E402
from checkers.elle.txn import history_of  # noqa: E402


def test_run_page_links_the_elle_page_with_its_cycle_picture(tmp_path: Path) -> None:
    root = tmp_path / "results"
    root.mkdir()
    # a G-single: T1 read x's append but missed y's, from one transaction
    result = check(history_of([(0, "ok", [("append", "x", 1), ("append", "y", 1)], 0, 10),
                               (1, "ok", [("r", "x", (1,)), ("r", "y", ())], 0, 10)]), "list-append")
    assert result["valid"] is False
    result["page"] = "elle.html"  # as workloads.txn's checker records it
    run = write_run(root, "list-append-partition", "20260101T100000.000Z", check=False, workload="list-append",
                    results={"valid": False, "checkers": {"elle": result}})
    (run / "elle.html").write_text(cycle_page(result, title="list-append run"), encoding="utf-8")
    app = App(root, live_seconds=5.0, reanalysis_time_limit=10.0)
    status, _, body = wsgi(app, "/run/list-append-partition/20260101T100000.000Z/")
    page_text = body.decode()
    assert status.startswith("200") and '<a href="file/elle.html">counterexample page</a>' in page_text
    assert "G-single" in page_text  # the checker row's explanation
    status, headers, page = wsgi(app, "/run/list-append-partition/20260101T100000.000Z/file/elle.html")
    assert status.startswith("200") and b"<svg" in page and b"G-single" in page
    assert "script-src" not in headers["Content-Security-Policy"]
