"""`fsync = false` turns durability off, so it is gated like `--unsafe-bug`: refused unless
UKEHI_I_KNOW_THIS_IS_UNSAFE=1 is set, and announced in the `starting` line, by a warning
line and in `kv status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cluster import REPO, free_port
from ukehi.bugs import ENV_VAR
from ukehi.config import ConfigError, build_config
from ukehi.nodelog import parse_line

BASE = {"node_id": "n1", "peers": "n1=127.0.0.1:7001", "data_dir": "d", "insecure": True}


def test_fsync_false_needs_the_safety_switch():
    with pytest.raises(ConfigError, match=f"fsync = false.*{ENV_VAR}=1"):
        build_config({**BASE, "fsync": False}, environ={})
    with pytest.raises(ConfigError, match=ENV_VAR):
        build_config({**BASE, "fsync": False}, environ={ENV_VAR: "yes"})  # exactly 1
    assert build_config({**BASE, "fsync": False}, environ={ENV_VAR: "1"}).fsync is False
    assert build_config(BASE, environ={}).fsync is True
    assert build_config({**BASE, "fsync": True}, environ={}).fsync is True


def test_fsync_takes_only_true_or_false():
    # bool("false") is True: a quoted "false" once left fsync on while the file said off.
    with pytest.raises(ConfigError, match=ENV_VAR):
        build_config({**BASE, "fsync": "false"}, environ={})
    with pytest.raises(ConfigError, match="fsync must be true or false"):
        build_config({**BASE, "fsync": "sometimes"}, environ={ENV_VAR: "1"})
    with pytest.raises(ConfigError, match="fsync must be true or false"):
        build_config({**BASE, "fsync": 0}, environ={ENV_VAR: "1"})


def _node_argv(tmp_path, port: int) -> list[str]:
    conf = tmp_path / "node.toml"
    conf.write_text("fsync = false\n")
    return [sys.executable, "-m", "ukehi.cli", "node", "--config", str(conf), "--id", "n1",
            "--peers", f"n1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"), "--insecure",
            "--election-timeout", "150:300", "--heartbeat", "50"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "UKEHI_TLS_DIR")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def test_a_config_file_with_fsync_false_is_refused_without_the_switch(tmp_path):
    out = subprocess.run(_node_argv(tmp_path, free_port()), cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 254, out.stderr
    assert "fsync = false" in out.stderr and f"{ENV_VAR}=1" in out.stderr
    assert not (tmp_path / "data").exists() or not os.listdir(tmp_path / "data")


def test_a_node_without_fsync_says_so_at_start_and_in_status(tmp_path):
    port = free_port()
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_node_argv(tmp_path, port), cwd=REPO, env=_env(**{ENV_VAR: "1"}),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            out = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "status", "--json",
                                  "--cluster", f"127.0.0.1:{port}", "--timeout", "1"],
                                 cwd=REPO, env=_env(), capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                status = json.loads(out.stdout)
                break
            time.sleep(0.2)
        assert status is not None, log_path.read_text()
        assert status["fsync"] is False
        human = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "status",
                                "--cluster", f"127.0.0.1:{port}", "--timeout", "2"],
                               cwd=REPO, env=_env(), capture_output=True, text=True, timeout=30)
        assert "fsync: False" in human.stdout, human.stdout + human.stderr
    finally:
        proc.terminate()
        proc.wait(15)
    lines = [parse_line(ln) for ln in log_path.read_text().splitlines() if "event=" in ln]
    starting = next(ln for ln in lines if ln["event"] == "starting")
    assert starting["fsync"] == "false"
    warned = [ln for ln in lines if ln["event"] == "unsafe-fsync-off"]
    assert warned and warned[0]["level"] == "warning"
