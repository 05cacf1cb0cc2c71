"""Membership changes: the requests, how they turn a configuration into the next, and the
byte encoding of configuration entries.

A config entry's data is the *whole resulting configuration* as a small JSON object
(`{"voters": [...], "outgoing": [...], "learners": [...]}`), not a delta: a node can then
take the configuration of any entry at face value, and reverting to an earlier one after a
log truncation needs no replay.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Iterable

from .types import Membership, check_node_id

__all__ = [
    "ConfChangeType",
    "ConfChange",
    "enter_config",
    "leave_joint",
    "encode_membership",
    "decode_membership",
    "MAX_CONFIG_BYTES",
]

# A configuration entry of a few hundred nodes is a few KiB; anything far bigger is hostile.
MAX_CONFIG_BYTES = 64 * 1024


class ConfChangeType(str, enum.Enum):
    ADD_VOTER = "add_voter"  # add a node as voter, or promote a learner
    ADD_LEARNER = "add_learner"  # add a non-voting node that receives the log
    REMOVE = "remove"  # remove a voter or a learner


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: ConfChangeType
    node: str

    def __post_init__(self) -> None:
        if not isinstance(self.op, ConfChangeType):
            try:
                object.__setattr__(self, "op", ConfChangeType(self.op))
            except ValueError:
                ops = ", ".join(t.value for t in ConfChangeType)
                raise ValueError(f"unknown conf change op {self.op!r}; use one of {ops}") from None
        check_node_id("conf change node", self.node)


def enter_config(current: Membership, changes: Iterable[ConfChange]) -> Membership:
    """The configuration that `changes` lead to from `current` (which must not be joint).

    If the voter set changes, the result is the joint configuration C_old,new (voters = new
    set, outgoing = old set); a second entry (see `leave_joint`) later moves to C_new. If only
    learners change, the result is a simple configuration: learners never count toward a
    quorum, so no joint phase is needed.
    """
    if current.joint:
        raise ValueError("cannot start a membership change while the configuration is joint")
    changes = list(changes)
    if not changes:
        raise ValueError("a membership change needs at least one ConfChange")
    voters = set(current.voters)
    learners = set(current.learners)
    seen: set[str] = set()
    for change in changes:
        if change.node in seen:
            raise ValueError(f"node {change.node!r} appears twice in one membership change")
        seen.add(change.node)
        if change.op is ConfChangeType.ADD_VOTER:
            if change.node in voters:
                raise ValueError(f"node {change.node!r} is already a voter")
            learners.discard(change.node)
            voters.add(change.node)
        elif change.op is ConfChangeType.ADD_LEARNER:
            if change.node in voters:
                raise ValueError(
                    f"node {change.node!r} is a voter; remove it first to make it a learner"
                )
            if change.node in learners:
                raise ValueError(f"node {change.node!r} is already a learner")
            learners.add(change.node)
        else:
            if change.node not in voters and change.node not in learners:
                raise ValueError(f"node {change.node!r} is not a member; nothing to remove")
            voters.discard(change.node)
            learners.discard(change.node)
    if not voters:
        raise ValueError("a membership change must leave at least one voter")
    new_voters = frozenset(voters)
    if new_voters == current.voters:
        return Membership(voters=new_voters, learners=frozenset(learners))
    return Membership(voters=new_voters, outgoing=current.voters, learners=frozenset(learners))


def leave_joint(current: Membership) -> Membership:
    """C_new from C_old,new: drop the outgoing voter set."""
    if not current.joint:
        raise ValueError("configuration is not joint; nothing to leave")
    return Membership(voters=current.voters, learners=current.learners)


def encode_membership(membership: Membership) -> bytes:
    """The data of a CONFIG entry: canonical JSON (sorted), so equal configs encode equally."""
    return json.dumps(
        {
            "voters": sorted(membership.voters),
            "outgoing": sorted(membership.outgoing),
            "learners": sorted(membership.learners),
        },
        separators=(",", ":"),
    ).encode()


def _node_list(obj: dict, key: str) -> frozenset[str]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise ValueError(f"config entry field {key!r} must be a list of node ids")
    return frozenset(check_node_id(f"config entry {key} item", v) for v in value)


def decode_membership(data: bytes) -> Membership:
    """Parse a CONFIG entry's data; raises ValueError naming what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"config entry data must be bytes, got {type(data).__name__}")
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"config entry is {len(data)} bytes, more than {MAX_CONFIG_BYTES}")
    try:
        obj = json.loads(bytes(data).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config entry is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"voters", "outgoing", "learners"}:
        raise ValueError(
            "config entry must be a JSON object with exactly voters, outgoing, learners"
        )
    return membership_from_lists(
        _node_list(obj, "voters"), _node_list(obj, "outgoing"), _node_list(obj, "learners")
    )


def membership_from_lists(
    voters: frozenset[str], outgoing: frozenset[str], learners: frozenset[str]
) -> Membership:
    """Build a Membership, turning its invariant violations into ValueError for decoders."""
    return Membership(voters=voters, outgoing=outgoing, learners=learners)
