"""Quorum arithmetic for simple and joint configurations (etcd-raft's quorum package).

In a joint configuration C_old,new every decision needs a majority of *both* voter sets:
the committed index is the smaller of the two majorities' indexes, and an election is won
only when both halves vote yes.
"""

from __future__ import annotations

import enum
from typing import Callable, Collection, Mapping

from .types import Membership

__all__ = ["VoteResult", "majority_index", "committed_index", "vote_result", "has_quorum"]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority_index(voters: Collection[str], acked: Callable[[str], int]) -> int:
    """The largest index that a majority of `voters` has acknowledged.

    An empty voter set places no constraint (returns a huge number), so that in the joint
    computation `min(...)` it is neutral, as in etcd.
    """
    n = len(voters)
    if n == 0:
        return 1 << 64
    values = sorted((acked(v) for v in voters), reverse=True)
    return values[n // 2]


def committed_index(membership: Membership, acked: Callable[[str], int]) -> int:
    idx = majority_index(membership.voters, acked)
    if membership.outgoing:
        idx = min(idx, majority_index(membership.outgoing, acked))
    return 0 if idx == 1 << 64 else idx


def _simple_vote(voters: Collection[str], votes: Mapping[str, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    yes = no = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            yes += 1
        elif got is False:
            no += 1
    q = len(voters) // 2 + 1
    if yes >= q:
        return VoteResult.WON
    if len(voters) - no < q:
        return VoteResult.LOST
    return VoteResult.PENDING


def vote_result(membership: Membership, votes: Mapping[str, bool]) -> VoteResult:
    r1 = _simple_vote(membership.voters, votes)
    r2 = _simple_vote(membership.outgoing, votes) if membership.outgoing else VoteResult.WON
    if r1 is r2:
        return r1
    if VoteResult.LOST in (r1, r2):
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(membership: Membership, members: Collection[str]) -> bool:
    """True if `members` contains a majority of every voter set of `membership`."""
    votes = {m: True for m in members}
    return vote_result(membership, votes) is VoteResult.WON
