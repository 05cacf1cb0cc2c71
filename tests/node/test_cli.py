"""`ukehi kv` and `ukehi node` from a terminal: output, --json, exit codes, bad flags (254)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from cluster import REPO, free_port


def ukehi(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ukehi.cli", *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env={**os.environ, **(env or {})},
    )


def test_kv_commands_against_a_cluster(make_cluster, monkeypatch):
    cluster = make_cluster(3)
    monkeypatch.setenv("UKEHI_TLS_DIR", cluster.certs_dir)  # client.pem and admin.pem of the cluster's CA
    cluster.start()
    asyncio.run(cluster.wait_for_leader())
    addrs = ",".join(cluster.addresses)

    put = ukehi("kv", "put", "greeting", "hello world", "--cluster", addrs)
    assert put.returncode == 0, put.stderr
    get = ukehi("kv", "get", "greeting", "--cluster", addrs)
    assert get.returncode == 0 and get.stdout == "hello world\n"

    cas_bad = ukehi("kv", "cas", "greeting", "nope", "x", "--cluster", addrs)
    assert cas_bad.returncode == 1 and "cas_failed" in cas_bad.stderr
    cas_json = ukehi("kv", "cas", "greeting", "nope", "x", "--cluster", addrs, "--json")
    obj = json.loads(cas_json.stdout)
    assert cas_json.returncode == 1 and obj["outcome"] == "fail" and obj["error"] == "cas_failed"
    assert ukehi("kv", "cas", "fresh", "1", "--absent", "--cluster", addrs).returncode == 0
    assert ukehi("kv", "delete", "greeting", "--cluster", addrs).returncode == 0
    gone = ukehi("kv", "get", "greeting", "--cluster", addrs, "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout)["value"] is None

    status = ukehi("kv", "status", "--json", "--cluster", cluster.addresses[0])
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    for key in ("id", "role", "term", "leader", "commit_index", "applied_index", "members", "recovering", "clock"):
        assert key in st, key
    assert st["id"] == "n1" and st["role"] in ("leader", "follower") and sorted(st["members"]) == ["n1", "n2", "n3"]

    acquire = ukehi("kv", "acquire", "L", "me", "--ttl-ms", "5000", "--cluster", addrs)
    assert acquire.returncode == 0 and int(acquire.stdout) > 0


def test_kv_unreachable_cluster_fails_definitely():
    port = free_port()  # nothing listens there
    r = ukehi("kv", "put", "k", "v", "--cluster", f"127.0.0.1:{port}", "--timeout", "1", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"] == "connect_failed"


def test_bad_flags_exit_254_with_a_message(tmp_path):
    cases = [
        (["kv", "get", "k", "--cluster", "nonsense"], "HOST:PORT"),
        (["kv", "get", "k"], "--cluster"),
        (["node", "--id", "n1", "--peers", "n2=127.0.0.1:1", "--data-dir", str(tmp_path)], "not in --peers"),
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path),
          "--election-timeout", "300:100"], "election timeout"),
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path),
          "--read-mode", "sloppy"], "read-mode"),
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1"], "--data-dir"),
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path),
          "--unsafe-bug", "stale-read", "--insecure"], "UKEHI_I_KNOW_THIS_IS_UNSAFE"),
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path)],
         "--tls-dir DIR"),  # mutual TLS unless --insecure
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path),
          "--insecure", "--tls-dir", str(tmp_path)], "contradict"),
        (["node", "--id", "n1", "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path),
          "--max-inflight", "0"], "--max-inflight must be a whole number >= 1"),
    ]
    for args, needle in cases:
        r = ukehi(*args, env={"UKEHI_I_KNOW_THIS_IS_UNSAFE": ""})
        assert r.returncode == 254, (args, r.returncode, r.stderr)
        assert needle in r.stderr, (args, r.stderr)


def test_node_config_file_and_flag_override(tmp_path):
    port = free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'id = "n1"\npeers = "n1=127.0.0.1:{port}"\ndata-dir = "{tmp_path / "data"}"\n'
        'election-timeout = "150:300"\nheartbeat = 50\nread-mode = "lease"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ukehi.cli", "node", "--config", str(cfg), "--read-mode", "readindex", "--insecure"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        async def check() -> dict:
            from ukehi.client import UkehiClient

            async with UkehiClient([f"127.0.0.1:{port}"], timeout=2.0) as c:
                for _ in range(100):
                    r = await c.status(f"127.0.0.1:{port}")
                    if r.ok and r.value["role"] == "leader":
                        assert (await c.put("k", "v")).ok
                        return r.value
                    await asyncio.sleep(0.1)
            raise AssertionError("single node from a config file never became leader")

        st = asyncio.run(check())
        assert st["id"] == "n1" and st["read_mode"] == "readindex"  # the flag beat the file
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert "event=shutdown" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
