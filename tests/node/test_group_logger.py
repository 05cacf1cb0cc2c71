"""A sharded node's per-group logger takes a line that names its own `group` field.

A misrouted peer message (meant for another node id at this address, or another group) is
logged with the message's group; the per-group logger adds its own. Passing both raised
TypeError inside the peer-message path, which the server took for a bad Raft message and
answered by closing the whole peer connection (seen in CI: two test nodes given one port).
"""

from __future__ import annotations

import io
from types import SimpleNamespace

from ukehi.node.api import ClientAPI
from ukehi.node.groups import GroupLogger
from ukehi.nodelog import NodeLogger, parse_line
from ukehi.raft.messages import Heartbeat


def test_a_group_logger_line_with_its_own_group_field_is_written() -> None:
    out = io.StringIO()
    log = GroupLogger(NodeLogger("n1", "debug", stream=out), 3)
    log.info("plain")
    log.info("about-another-group", group=7)
    first, second = (parse_line(line) for line in out.getvalue().splitlines())
    assert first["group"] == "3" and first["event"] == "plain"
    assert second["group"] == "7" and second["event"] == "about-another-group"


def test_a_misrouted_peer_message_is_logged_and_dropped_not_raised() -> None:
    out = io.StringIO()
    pushed: list[object] = []
    replica = SimpleNamespace(phase="running", config=SimpleNamespace(node_id="n1"), group_id=2,
                              log=GroupLogger(NodeLogger("n1", "debug", stream=out), 2),
                              driver=SimpleNamespace(push_peer_message=pushed.append))
    msg = Heartbeat(group_id=2, term=5, src="n2", dst="n3", commit=0)  # meant for n3
    ClientAPI.handle_peer_message(replica, msg)  # type: ignore[arg-type]
    assert pushed == []
    line = parse_line(out.getvalue().strip())
    assert line["event"] == "misrouted-message" and line["dst"] == "n3" and line["group"] == "2"
