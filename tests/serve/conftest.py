"""A results dir with one of everything (tests/serve/serve_fixtures.py) and a live server on it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from harness.serve.app import App
from harness.serve.server import make

from serve_fixtures import LIVE, add_traps, build_store


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "results"
    root.mkdir()
    ids = build_store(root)
    add_traps(root, base / "outside")
    return root, ids


@pytest.fixture(scope="session")
def server(store: tuple[Path, dict[str, str]]) -> Iterator[str]:
    """The app on a free loopback port, in a thread of the test process; yields its base URL."""
    root, _ = store
    httpd = make(App(root, live_seconds=LIVE, reanalysis_time_limit=10.0), "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, name="serve-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
