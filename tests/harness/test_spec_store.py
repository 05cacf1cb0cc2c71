import json
import os
from datetime import datetime, timezone

import pytest

from harness.spec import SpecError, TestSpec, default_node_names, parse_concurrency
from harness.store import StoreError, new_run, resolve_run


def spec(**kw):
    base = dict(name="t", workload="register", nodes=tuple(default_node_names(3)))
    base.update(kw)
    return TestSpec(**base)


def test_concurrency_per_node():
    assert parse_concurrency("3n", 5) == 15
    assert parse_concurrency("7", 5) == 7
    assert parse_concurrency(4, 2) == 4


@pytest.mark.parametrize("text", ["", "n", "-1", "0", "2x", "0n"])
def test_bad_concurrency_says_how(text):
    with pytest.raises(SpecError, match="concurrency"):
        parse_concurrency(text, 3)


@pytest.mark.parametrize("kw, fix", [
    (dict(nodes=()), "--node-count"),
    (dict(time_limit=-1), "--time-limit"),
    (dict(time_limit=0), "--time-limit"),
    (dict(rate=0), "--rate"),
    (dict(backend="k8s"), "--backend"),
    (dict(read_mode="eventual"), "--read-mode"),
    (dict(corruption_policy="yolo"), "--corruption-policy"),
    (dict(nodes=("n1", "n1")), "repeat"),
    (dict(nodes=("bad name",)), "node name"),
    (dict(name="a/b"), "test name"),
])
def test_bad_spec_names_the_setting(kw, fix):
    with pytest.raises(SpecError, match=fix):
        spec(**kw)


def test_spec_json_round_trip_keeps_seed_and_versions():
    s = spec(seed=42, nemeses=("partition", "kill"), node_options={"heartbeat": 50})
    d = json.loads(s.to_json())
    assert d["seed"] == 42 and d["versions"]["ukehi"]
    assert TestSpec.from_dict(d) == s


def test_new_run_makes_dirs_and_latest_links(tmp_path):
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    first = new_run(tmp_path, "register", now=t0)
    second = new_run(tmp_path, "register", now=t0)  # same millisecond: distinct dir
    assert first.path != second.path
    assert os.path.realpath(tmp_path / "register" / "latest") == str(second.path)
    assert os.path.realpath(tmp_path / "latest") == str(second.path)
    assert not os.path.isabs(os.readlink(tmp_path / "latest"))
    second.history.write_text("")
    assert resolve_run(None, tmp_path).path == second.path
    assert resolve_run(tmp_path / "register").path == second.path


def test_resolve_run_errors_say_what_to_give(tmp_path):
    with pytest.raises(StoreError, match="no run has been stored"):
        resolve_run(None, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="has no history.jsonl"):
        resolve_run(tmp_path / "empty")


def test_unwritable_results_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="--results-dir"):
        new_run(blocker / "sub", "t")
