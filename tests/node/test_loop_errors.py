"""The node's event-loop error handler: CPython's known double ``_call_connection_lost``
(gh-156512) is a warning in the node log, every other loop error still a traceback.

CI saw the CPython bug as a traceback on a correct node's stderr at shutdown (a TLS peer link
reset), and node-health failed the run."""

from __future__ import annotations

import asyncio
import io
import logging

from ukehi.node.server import known_asyncio_bug, report_loop_errors
from ukehi.nodelog import NodeLogger

CPYTHON_BUG = {"message": "Exception in callback _SelectorSocketTransport._call_connection_lost("
                          "ConnectionResetError(104, 'Connection reset by peer'))",
               "exception": AttributeError("'NoneType' object has no attribute 'connection_lost'")}


def test_only_the_known_cpython_bug_is_recognised() -> None:
    assert known_asyncio_bug(CPYTHON_BUG) is not None
    assert known_asyncio_bug({**CPYTHON_BUG, "exception": KeyError("x")}) is None
    assert known_asyncio_bug({"message": "Exception in callback Driver.cycle()",
                              "exception": AttributeError("'NoneType' object has no attribute 'term'")}) is None


def test_the_known_bug_is_a_warning_and_anything_else_reaches_the_default_handler(caplog) -> None:
    stream = io.StringIO()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        report_loop_errors(loop, NodeLogger("n1", stream=stream))
        loop.call_exception_handler(dict(CPYTHON_BUG))
        loop.call_exception_handler({"message": "Exception in callback Driver.cycle()",
                                     "exception": AttributeError("our own bug")})

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
    log = stream.getvalue()
    assert "event=asyncio-known-bug" in log and "gh-156512" in log and "level=warning" in log
    assert "our own bug" not in log
    reported = [r.getMessage() for r in caplog.records]
    assert any("Driver.cycle" in m for m in reported), reported  # a real error keeps its traceback
    assert not any("_call_connection_lost" in m for m in reported), reported
