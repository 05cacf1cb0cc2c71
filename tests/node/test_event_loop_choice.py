"""Which event loop a node runs on: uvloop only when installed and the node is plain TCP."""

from __future__ import annotations

import importlib.util

import pytest

from ukehi.node.server import loop_factory

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_tls_nodes_and_an_explicit_asyncio_use_the_stdlib_loop(monkeypatch):
    monkeypatch.delenv("UKEHI_EVENT_LOOP", raising=False)
    assert loop_factory(tls=True) is None
    monkeypatch.setenv("UKEHI_EVENT_LOOP", "asyncio")
    assert loop_factory(tls=False) is None


def test_asking_for_uvloop_with_tls_or_a_bad_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("UKEHI_EVENT_LOOP", "uvloop")
    with pytest.raises(ValueError, match="only with --insecure"):
        loop_factory(tls=True)
    monkeypatch.setenv("UKEHI_EVENT_LOOP", "tokio")
    with pytest.raises(ValueError, match="use auto, uvloop or asyncio"):
        loop_factory(tls=False)


@pytest.mark.skipif(HAVE_UVLOOP, reason="uvloop is installed here")
def test_without_uvloop_auto_falls_back_and_an_explicit_ask_says_how_to_install(monkeypatch):
    monkeypatch.delenv("UKEHI_EVENT_LOOP", raising=False)
    assert loop_factory(tls=False) is None
    monkeypatch.setenv("UKEHI_EVENT_LOOP", "uvloop")
    with pytest.raises(ValueError, match=r"pip install 'ukehi-jepsen\[fast\]'"):
        loop_factory(tls=False)


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed (pip install -e '.[fast]')")
def test_with_uvloop_a_plain_tcp_node_uses_it(monkeypatch):
    import uvloop

    monkeypatch.delenv("UKEHI_EVENT_LOOP", raising=False)
    assert loop_factory(tls=False) is uvloop.new_event_loop
