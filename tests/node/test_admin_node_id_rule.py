"""The admin's node-id rule (``ukehi.node.admin.node_id_refusal``) against the id rule of
``ukehi node --id`` (``ukehi.config``): an add_node must not let in a member no node could
be started as, and removals keep the core's wider bound so such a member can still go."""

from __future__ import annotations

import pytest

from ukehi import wire
from ukehi.config import MAX_NODE_NAME_LEN, ConfigError, parse_peers
from ukehi.node.admin import node_id_refusal
from ukehi.raft.types import MAX_NODE_ID_LEN


def _startable(node: str) -> bool:
    try:
        parse_peers(f"{node}=127.0.0.1:7000")
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("length", [1, MAX_NODE_NAME_LEN - 1, MAX_NODE_NAME_LEN, MAX_NODE_NAME_LEN + 1,
                                    MAX_NODE_ID_LEN, MAX_NODE_ID_LEN + 1])
def test_add_node_accepts_exactly_the_ids_a_node_can_start_with(length: int) -> None:
    node = "n" * length
    refused = node_id_refusal("add_node", node, new_member=True)
    assert (refused is None) == _startable(node)
    if refused is not None:
        kind, body = refused
        assert kind == wire.MsgType.ERROR and body["code"] == wire.ErrorCode.BAD_REQUEST.value
        assert "nothing was done" in body["message"]


def test_removal_and_transfer_keep_the_cores_bound() -> None:
    # A member an older build let in with a 65-256 character id can still be removed.
    assert node_id_refusal("remove_node", "n" * (MAX_NODE_NAME_LEN + 1)) is None
    assert node_id_refusal("transfer_leader", "n" * MAX_NODE_ID_LEN) is None
    assert node_id_refusal("remove_node", "n" * (MAX_NODE_ID_LEN + 1)) is not None
