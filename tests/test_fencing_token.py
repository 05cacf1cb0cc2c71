"""FencingToken / FencingTokenState: layout, ordering, validation."""

import copy
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ukehi.fencing import MAX_TOKEN, FencingToken, FencingTokenState

u32 = st.integers(min_value=0, max_value=0xFFFF_FFFF)


def test_layout_term_high_seq_low() -> None:
    tok = FencingToken.new(3, 7)
    assert int(tok) == (3 << 32) | 7
    assert tok.term == 3 and tok.seq == 7
    assert FencingToken.new_leader_term(9) == FencingToken.new(9, 0)


def test_is_a_u64_for_wal_and_msgpack() -> None:
    tok = FencingToken.new(0xFFFF_FFFF, 0xFFFF_FFFF)
    assert int(tok) == MAX_TOKEN
    assert struct.unpack("<Q", struct.pack("<Q", tok))[0] == MAX_TOKEN
    back = msgpack.unpackb(msgpack.packb(FencingToken.new(5, 1)))
    assert FencingToken(back) == FencingToken.new(5, 1)
    assert FencingToken(back).term == 5


@given(u32, u32)
def test_round_trip_through_int(term: int, seq: int) -> None:
    tok = FencingToken.new(term, seq)
    again = FencingToken(int(tok))
    assert (again.term, again.seq) == (term, seq)


@given(u32, u32, u32, u32)
def test_later_term_always_greater(t1: int, s1: int, t2: int, s2: int) -> None:
    a, b = FencingToken.new(t1, s1), FencingToken.new(t2, s2)
    if t1 < t2:
        assert a < b
    if t1 == t2:
        assert (a < b) == (s1 < s2)


def test_bump_seq() -> None:
    tok = FencingToken.new(2, 41)
    nxt = tok.bump_seq()
    assert isinstance(nxt, FencingToken)
    assert (nxt.term, nxt.seq) == (2, 42)
    assert tok.seq == 41  # immutable


def test_bump_seq_refuses_to_wrap_into_next_term() -> None:
    with pytest.raises(OverflowError, match="exhausted in term 4"):
        FencingToken.new(4, 0xFFFF_FFFF).bump_seq()


@pytest.mark.parametrize(
    "term,seq,match",
    [(-1, 0, "term must be >= 0"), (0, -1, "seq must be >= 0"),
     (1 << 32, 0, "term must fit in 32 bits"), (0, 1 << 32, "seq must fit in 32 bits")],
)
def test_new_rejects_out_of_range(term: int, seq: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FencingToken.new(term, seq)


@pytest.mark.parametrize("value", [-1, MAX_TOKEN + 1, 1 << 70])
def test_int_constructor_rejects_non_u64(value: int) -> None:
    with pytest.raises(ValueError, match="u64"):
        FencingToken(value)


@pytest.mark.parametrize("value", [1.0, "5", True, None])
def test_rejects_non_int(value: object) -> None:
    with pytest.raises(TypeError):
        FencingToken(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FencingToken.new(value, 0)  # type: ignore[arg-type]


def test_copy_and_repr() -> None:
    tok = FencingToken.new(1, 2)
    assert copy.deepcopy(tok) == tok and type(copy.copy(tok)) is FencingToken
    assert repr(tok) == "FencingToken(term=1, seq=2)"


def test_state_issues_increasing_tokens_in_term() -> None:
    st_ = FencingTokenState()
    assert st_.bump_term_token(5) == FencingToken.new(5, 0)
    issued = [st_.issue_token() for _ in range(3)]
    assert issued == [FencingToken.new(5, 1), FencingToken.new(5, 2), FencingToken.new(5, 3)]
    assert st_.current == FencingToken.new(5, 3)


def test_state_new_term_tokens_above_old_term() -> None:
    st_ = FencingTokenState()
    st_.bump_term_token(1)
    old = [st_.issue_token() for _ in range(1000)]
    st_.bump_term_token(2)
    new = st_.issue_token()
    assert all(new > t for t in old)


@pytest.mark.parametrize("term", [3, 2, 0])
def test_state_refuses_to_go_backwards_or_repeat_term(term: int) -> None:
    st_ = FencingTokenState()
    st_.bump_term_token(3)
    st_.issue_token()
    with pytest.raises(ValueError, match="terms must strictly increase"):
        st_.bump_term_token(term)
    assert st_.current == FencingToken.new(3, 1)  # unchanged after the refusal


def test_state_observe_raises_floor_only() -> None:
    st_ = FencingTokenState()
    st_.observe(FencingToken.new(4, 9))
    st_.observe(FencingToken.new(2, 100))
    assert st_.current == FencingToken.new(4, 9)
    assert st_.issue_token() == FencingToken.new(4, 10)
    with pytest.raises(ValueError):
        st_.bump_term_token(4)
