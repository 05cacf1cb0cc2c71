"""Issue 12 section 2, the `ukehi` CLI: bad addresses for `ukehi node`, `ukehi kv` against a
port that is not a Ukehi node, reads that got no answer, `kv status --all` naming the nodes it
could not reach, and `ukehi wal dump` on a directory that is not a WAL. Subprocesses run from a
temporary working directory with relative paths."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ukehi import kvcli

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
ENV.pop("UKEHI_TLS_DIR", None)  # plain TCP to the fake servers below


def ukehi(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ukehi.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


class FakeServer:
    """A TCP port that is not a Ukehi node: `http` answers like a web server, `banner` greets
    like sshd, `close` hangs up at once, `silent` accepts and never says anything."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.kind == "http":
                try:
                    conn.recv(100)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass
                conn.close()
            elif self.kind == "banner":
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
                self.held.append(conn)
            elif self.kind == "close":
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for conn in self.held:
            conn.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def fake():
    servers: list[FakeServer] = []

    def make(kind: str) -> FakeServer:
        servers.append(FakeServer(kind))
        return servers[-1]
    yield make
    for server in servers:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- ukehi node ------------------------------------------------------------------------------

@pytest.mark.parametrize("peers, words", [
    ("n1=[::1:7001", ["--peers entry n1", "'[::1:7001'", "not an address", "[::1]:7001"]),
    ("n1=127.0.0.1:7001,n2=[::1:7002", ["--peers entry n2", "'[::1:7002'"]),
    ("n1=[localhost]:7001", ["'[localhost]:7001'", "not an address"]),
    ("n1=no-such-host.invalid:7001", ["n1", "no-such-host.invalid", "does not resolve"]),
])
def test_node_refuses_an_address_it_cannot_use(tmp_path, peers, words):
    done = ukehi(tmp_path, "node", "--id", "n1", "--peers", peers, "--data-dir", "data", "--insecure")
    assert done.returncode == 254, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ukehi node: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "free port" not in lines[0]
    assert not (tmp_path / "data").exists()  # refused before the node touched anything


def test_node_refuses_an_unresolvable_listen_host(tmp_path):
    done = ukehi(tmp_path, "node", "--id", "n1", "--listen", "no-such-host.invalid:7001",
                 "--peers", "n1=127.0.0.1:7001", "--data-dir", "data", "--insecure")
    assert done.returncode == 254, done.stderr
    assert "--listen 'no-such-host.invalid:7001'" in done.stderr and "does not resolve" in done.stderr


@pytest.mark.parametrize("sharded", [False, True])
def test_node_whose_port_is_taken_says_so_and_exits_1(tmp_path, sharded):
    # Both node kinds (one Raft group, or a sharded host of many) share the listen step.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        shard_args = ["--shards", "2", "--replication-factor", "1"] if sharded else []
        done = ukehi(tmp_path, "node", "--id", "n1", "--listen", f"127.0.0.1:{port}",
                     "--peers", f"n1=127.0.0.1:{port}", "--data-dir", "data", "--insecure", *shard_args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"ukehi node: cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "pick a free port or stop the process that holds it" in done.stderr


# -- ukehi kv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["http", "banner", "close", "silent"])
def test_kv_get_against_a_port_that_is_not_ukehi_says_so_within_the_connect_timeout(tmp_path, fake, kind):
    server = fake(kind)
    started = time.monotonic()
    done = ukehi(tmp_path, "kv", "get", "greeting", "--cluster", server.address, "--timeout", "8")
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr  # failed, nothing was sent
    assert f"not a Ukehi node at {server.address}" in done.stderr, done.stderr
    assert "may still take effect" not in done.stderr
    # The connect timeout is 1 s; the rest is the interpreter starting (the op's 8 s is not waited).
    assert elapsed < 6, elapsed


def test_kv_leaves_out_an_address_that_is_not_ukehi_and_says_so(tmp_path, fake):
    server = fake("http")
    done = ukehi(tmp_path, "kv", "get", "k", "--cluster", f"{server.address},127.0.0.1:{free_port()}",
                 "--timeout", "1")
    assert f"warning: not a Ukehi node at {server.address}" in done.stderr, done.stderr
    assert done.returncode == 1  # the other address has nobody listening: definitely failed


def test_a_read_that_got_no_answer_is_failed_not_unknown(fake, monkeypatch, capsys):
    server = fake("silent")

    async def no_probe(addresses, timeout, tls=None):
        return {}  # get past the probe, so the read itself goes unanswered
    monkeypatch.setattr(kvcli, "_probe", no_probe)
    parser = argparse.ArgumentParser()
    kvcli.add_arguments(parser)
    code = kvcli.run(parser.parse_args(["get", "k", "--cluster", server.address, "--timeout", "0.5"]))
    err = capsys.readouterr().err
    assert code == kvcli.EXIT_FAILED, err
    assert "did not happen" in err and "a read has no effect" in err and "may still take effect" not in err
    code = kvcli.run(parser.parse_args(["get", "k", "--cluster", server.address, "--timeout", "0.5", "--json"]))
    assert code == kvcli.EXIT_FAILED and '"outcome": "fail"' in capsys.readouterr().out


def test_kv_status_all_names_every_node_it_could_not_reach(tmp_path, fake):
    http = fake("http")
    nobody = f"127.0.0.1:{free_port()}"
    done = ukehi(tmp_path, "kv", "status", "--all", "--cluster", f"{http.address},{nobody}", "--timeout", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{http.address}: unreachable (not_ukehi" in done.stdout
    assert f"{nobody}: unreachable (connect_failed" in done.stdout
    summary = done.stderr.strip().splitlines()
    assert len(summary) == 1 and "2 of 2 unreachable" in summary[0]
    assert http.address in summary[0] and nobody in summary[0]


# -- ukehi wal dump --------------------------------------------------------------------------

def test_wal_dump_of_a_directory_that_is_not_a_wal(tmp_path):
    (tmp_path / "node" / "wal").mkdir(parents=True)
    (tmp_path / "node" / "wal" / "notes.txt").write_text("not a segment")
    (tmp_path / "node" / "wal" / "photo.jpg").write_bytes(os.urandom(100))
    for target in ("node", "node/wal"):
        done = ukehi(tmp_path, "wal", "dump", target)
        assert done.returncode == 254, done.stdout + done.stderr
        assert done.stdout == ""  # no "clean": true report
        assert "holds no WAL segment" in done.stderr and "notes.txt" in done.stderr
    (tmp_path / "empty" / "wal").mkdir(parents=True)
    done = ukehi(tmp_path, "wal", "dump", "empty")  # a WAL nothing was written to: clean
    assert done.returncode == 0 and '"segments": 0' in done.stdout
