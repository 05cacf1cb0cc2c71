"""The ssh settings of a test: validated in TestSpec, stored in test.json, passed by `run`'s options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.commands.run import build_spec
from harness.spec import SpecError, TestSpec


def spec(**ssh: object) -> TestSpec:
    return TestSpec(name="t", workload="register", nodes=("10.0.0.1", "10.0.0.2"), backend="ssh", **ssh)


def test_ssh_settings_are_validated_with_the_fix() -> None:
    with pytest.raises(SpecError, match="--ssh-host-key-policy 'yes': choose one of strict, accept-new, ignore"):
        spec(ssh_host_key_policy="yes")
    with pytest.raises(SpecError, match="--ssh-port 0: give a TCP port"):
        spec(ssh_port=0)
    with pytest.raises(SpecError, match="--ssh-node-port 70000: give a TCP port"):
        spec(ssh_node_port=70000)
    assert spec().ssh_host_key_policy == "strict"  # safe by default


def test_ssh_settings_survive_test_json() -> None:
    original = spec(ssh_user="ops", ssh_key="/k", ssh_port=2222, ssh_host_key_policy="accept-new",
                    ssh_known_hosts="/kh", ssh_node_port=7400)
    again = TestSpec.from_dict(json.loads(original.to_json()))
    assert again == original


def test_run_options_reach_the_spec(tmp_path) -> None:
    built = build_spec(workload="register", nemesis="none", nemesis_interval=5.0, nodes="h1,h2,h3",
                       node_count=None, concurrency="2n", rate=10.0, time_limit=5.0, seed=0, backend="ssh",
                       read_mode="readindex", corruption_policy="truncate-to-last-good",
                       results_dir=str(tmp_path), leave_running=False, name=None, node_option=[],
                       ssh=dict(ssh_user="u", ssh_key=None, ssh_port=2200, ssh_host_key_policy="ignore",
                                ssh_known_hosts=None, ssh_node_port=7001))
    assert (built.nodes, built.ssh_user, built.ssh_port, built.ssh_host_key_policy, built.ssh_node_port) == \
        (("h1", "h2", "h3"), "u", 2200, "ignore", 7001)


def test_a_missing_key_file_is_a_usage_error_before_anything_starts(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--backend", "ssh", "--nodes", "127.0.0.1",
                           "--ssh-key", str(tmp_path / "nope"), "--results-dir", str(tmp_path / "r"),
                           "--time-limit", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 254
    assert "--ssh-key" in proc.stderr and "no such file" in proc.stderr and "Traceback" not in proc.stderr
