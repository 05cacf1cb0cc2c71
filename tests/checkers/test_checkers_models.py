"""Each model's step function, one rule at a time."""

import pytest

from checkers.model import UNKNOWN
from checkers.models import (APPEND, CAS, DELETE, FENCED_PUT, READ, WRITE, describe_operation, make_model)


def step(model, state, inp, out):
    return model.step(state, inp, out)


def test_register_reads_writes_and_nil_initial():
    m = make_model("cas-register")
    assert m.init() is None
    assert step(m, None, (READ, None, None, None), None) == (True, None)
    assert step(m, None, (READ, None, None, None), 0) == (False, None)
    assert step(m, 3, (READ, None, None, None), UNKNOWN) == (True, 3)
    assert step(m, 3, (WRITE, None, 4, None), None) == (True, 4)
    assert make_model("register", initial=0).init() == 0


def test_cas_success_failure_and_unknown():
    m = make_model("cas-register")
    assert step(m, 1, (CAS, None, 1, 2), True) == (True, 2)
    assert step(m, 1, (CAS, None, 0, 2), True)[0] is False     # cannot succeed: compare fails
    assert step(m, 1, (CAS, None, 0, 2), False) == (True, 1)     # returned false: compare failed
    assert step(m, 1, (CAS, None, 1, 2), False)[0] is False     # cannot return false: compare holds
    assert step(m, 1, (CAS, None, 1, 2), UNKNOWN) == (True, 2)
    assert step(m, 1, (CAS, None, 0, 2), UNKNOWN) == (True, 1)


def test_kv_delete_makes_a_key_absent():
    m = make_model("kv")
    assert step(m, 5, (DELETE, "k", None, None), None) == (True, None)


def test_porcupine_kv_appends_strings():
    m = make_model("porcupine-kv")
    assert m.init() == ""
    assert step(m, "x", (APPEND, "k", "y", None), None) == (True, "xy")
    assert step(m, "xy", (READ, "k", None, None), "xy") == (True, "xy")
    assert step(m, "xy", (READ, "k", None, None), "x")[0] is False
    with pytest.raises(ValueError, match="cannot apply 'cas'"):
        step(m, "", (CAS, "k", "a", "b"), True)


def test_fenced_register_refuses_lower_tokens():
    m = make_model("fenced-register")
    s0 = m.init()
    assert s0 == (None, None)
    ok, s1 = step(m, s0, (FENCED_PUT, "k", "a", 5), True)
    assert ok and s1 == ("a", 5)
    assert step(m, s1, (FENCED_PUT, "k", "b", 5), True) == (True, ("b", 5))   # equal token: accepted
    assert step(m, s1, (FENCED_PUT, "k", "c", 4), True)[0] is False          # lower token accepted: illegal
    assert step(m, s1, (FENCED_PUT, "k", "c", 4), False) == (True, s1)         # refused, as it must be
    assert step(m, s1, (FENCED_PUT, "k", "c", 6), False)[0] is False         # higher token refused: illegal
    assert step(m, s1, (FENCED_PUT, "k", "c", 4), UNKNOWN) == (True, s1)
    assert step(m, s1, (READ, "k", None, None), "a") == (True, s1)


def test_descriptions_are_readable():
    assert describe_operation((CAS, "k1", 1, 2), True) == "k1: cas 1->2 -> ok"
    assert describe_operation((READ, None, None, None), None) == "read -> nil"
    assert describe_operation((WRITE, None, 3, None), UNKNOWN) == "write 3 (?)"


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'set'"):
        make_model("set")
