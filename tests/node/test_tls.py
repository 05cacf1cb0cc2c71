"""Mutual TLS on real nodes: who may connect, who may do what, and forged Raft traffic.

Every case runs against a 3-node cluster of real processes on loopback and checks three
things: the attempt is refused, the node logs a line that says why, and nothing changed
(term, leader, membership, snapshot index, data). Where it helps, a positive control shows
the same channel does work for whoever is allowed, so a refusal is the check's doing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl

from ukehi import certs, wire
from ukehi.client import UkehiClient
from ukehi.raft import messages as M
from ukehi.tls import ClientTLS, client_context


def _node_ctx(cluster, nid: str) -> ssl.SSLContext:
    d = cluster.node_tls_dir(nid)
    return client_context(os.path.join(d, "ca.pem"), os.path.join(d, "node.pem"), os.path.join(d, "node.key"))


def _heartbeat(term: int, src: str, dst: str) -> dict:
    return M.message_to_dict(M.Heartbeat(0, term, src, dst, 0))


async def _send_raw(port: int, ctx: ssl.SSLContext | None, frames: list[bytes]) -> bool:
    """Write frames over a fresh connection; True if the node then closed it (within 3 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **({"ssl": ctx} if ctx else {}))
    try:
        for f in frames:
            writer.write(f)
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(1024), 3.0)
            return data == b""
        except asyncio.TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
    finally:
        writer.close()


async def _snapshot_of_state(cluster) -> dict:
    st = await cluster.statuses()
    return {n: (s["term"], s["leader"], tuple(s["members"]), s["snapshot_index"]) for n, s in st.items()}


def _follower(statuses: dict, leader: str) -> str:
    return next(n for n in sorted(statuses) if n != leader)


def test_forged_sender_and_forged_term_are_dropped_and_counted(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        # Every node must know the leader (and its term) before the term is read: a follower
        # that had not heard the first heartbeat yet read term 0 and then, rightly, took term 1.
        # All three answering: a status call that timed out on the loaded machine left a node
        # out, and picking the liar among the other two then found nobody (StopIteration).
        st = await cluster.wait_until(
            lambda s: len(s) == len(cluster.nodes) and all(x.get("leader") == leader for x in s.values()), 10,
            "every node to know the leader")
        target = _follower(st, leader)
        liar = next(n for n in sorted(st) if n not in (leader, target))
        term = st[target]["term"]
        port = cluster.nodes[target].port
        hello = wire.encode_frame("hello", 0, {"role": "peer", "version": 1, "node": liar})
        # 1. A real node's certificate (liar) sending as the leader, term + 1,000,000.
        forged = wire.encode_frame("raft", 0, _heartbeat(term + 1_000_000, leader, target))
        await _send_raw(port, _node_ctx(cluster, liar), [hello, forged])
        # 2. A client certificate sending Raft traffic at all (the issue's forged heartbeat).
        closed = await _send_raw(port, cluster.ssl_context(), [
            wire.encode_frame("raft", 0, _heartbeat(term + 1_000_000, "stranger", target))])
        assert closed, "a client certificate's Raft frame must close its connection"
        # 3. A hello as a peer that is not the certificate's node.
        closed = await _send_raw(port, _node_ctx(cluster, liar), [
            wire.encode_frame("hello", 0, {"role": "peer", "version": 1, "node": leader})])
        assert closed
        await asyncio.sleep(0.5)
        after = (await cluster.statuses())[target]
        assert after["term"] == term and after["leader"] == leader, after
        assert after["forged_peer_messages"] >= 3, after
        text = cluster.nodes[target].log_text()
        assert text.count("event=forged-peer-message") >= 3, text[-3000:]
        assert "sender is not the connection's authenticated peer" in text
        # Control: the same heartbeat with the liar's own id as sender is authentic and is
        # obeyed (a legal higher term), so what stopped the forged one was the sender check.
        await _send_raw(port, _node_ctx(cluster, liar), [
            hello, wire.encode_frame("raft", 0, _heartbeat(term + 1_000_000, liar, target))])
        await cluster.wait_until(lambda s: s.get(target, {}).get("term", 0) >= term + 1_000_000, 10,
                                 "the authentic higher-term heartbeat to be taken", [target])

    asyncio.run(scenario())


def test_client_certificate_cannot_call_admin_verbs(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        before = await _snapshot_of_state(cluster)
        only_client = ClientTLS(cluster.ssl_context(admin=False))  # no admin certificate
        async with UkehiClient(cluster.addresses, timeout=3.0, tls=only_client) as c:
            assert (await c.put("k", "v")).ok  # KV ops are allowed
            target = next(n for n in cluster.nodes if n != leader)
            results = [
                await c.add_node("n9", "127.0.0.1:1"),
                await c.remove_node(target),
                await c.transfer_leader(target),
                await c.snapshot(),
                await c.snapshot(cluster.nodes[leader].address),
            ]
            for r in results:
                assert r.failed and r.error == "forbidden", r
                assert "admin certificate" in r.message, r
            assert (await c.status(cluster.nodes[leader].address)).ok  # status is allowed
        await asyncio.sleep(0.3)
        assert await _snapshot_of_state(cluster) == before
        text = cluster.nodes[leader].log_text()
        assert "event=forbidden" in text and "request=remove_node" in text, text[-2000:]
        st = (await cluster.statuses([leader]))[leader]
        assert st["forbidden_requests"] >= 4 and st["tls"] is True
        # A node certificate may not do KV operations either.
        node_only = ClientTLS(_node_ctx(cluster, leader))
        async with UkehiClient([cluster.nodes[leader].address], timeout=3.0, tls=node_only) as c:
            r = await c.put("k", "from-a-node-cert")
            assert r.failed and r.error == "forbidden", r
        # Control: the admin certificate may.
        async with cluster.client(timeout=10.0) as admin:
            r = await admin.transfer_leader(target)
            assert r.ok, r
            assert (await admin.get("k")).value == "v"

    asyncio.run(scenario())


def test_wrong_ca_expired_certificate_and_plain_tcp_are_refused(make_cluster, tmp_path):
    cluster = make_cluster(3)
    cluster.start()
    other = str(tmp_path / "other-ca")
    certs.init_ca(other)
    certs.issue(other, "mallory", "admin")
    now = dt.datetime.now(dt.timezone.utc)
    certs.issue(cluster.certs_dir, "old", "admin", not_before=now - dt.timedelta(days=10),
                not_after=now - dt.timedelta(days=1))
    ca = os.path.join(cluster.certs_dir, "ca.pem")
    # Mallory trusts the cluster's CA (she can see it) but her certificate is from her own.
    wrong_ca = ClientTLS(None, client_context(ca, os.path.join(other, "mallory.pem"), os.path.join(other, "mallory.key")))
    expired = ClientTLS(None, client_context(ca, os.path.join(cluster.certs_dir, "old.pem"),
                                             os.path.join(cluster.certs_dir, "old.key")))

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        addr = cluster.nodes[leader].address
        # Every node must know the leader before the state is compared: a follower that had
        # not heard the first heartbeat yet reads term 0 and no leader, then rightly changes.
        await cluster.wait_until(lambda s: all(x.get("leader") == leader for x in s.values()), 10,
                                 "every node to know the leader")
        before = await _snapshot_of_state(cluster)
        for name, tls in (("wrong CA", wrong_ca), ("expired", expired), ("plain TCP", None)):
            async with UkehiClient([addr], timeout=2.0, connect_timeout=1.0, tls=tls) as c:
                r = await c.put(f"key-{name}", "x")
                assert not r.ok, (name, r)
                r = await c.transfer_leader()
                assert not r.ok, (name, r)
        await asyncio.sleep(0.3)
        assert await _snapshot_of_state(cluster) == before
        async with cluster.client() as good:
            for name in ("wrong CA", "expired", "plain TCP"):
                assert (await good.get(f"key-{name}")).value is None
        st = (await cluster.statuses([leader]))[leader]
        assert st["tls_refused"] >= 3, st
        lines = [l for l in cluster.nodes[leader].log_text().splitlines() if "event=tls-refused" in l]
        text = "\n".join(lines)
        assert "expired" in text, text
        assert "not TLS" in text, text
        # The foreign CA has the same name as the cluster's: OpenSSL finds the issuer by name
        # and the signature does not verify (with another name: no local issuer).
        assert "signature failure" in text or "unable to get local issuer" in text, text

    asyncio.run(scenario())


def test_a_node_refuses_to_start_with_a_certificate_that_is_not_its_own(make_cluster):
    cluster = make_cluster(3)
    node = cluster.nodes["n1"]
    node.args[node.args.index("--tls-dir") + 1] = cluster.node_tls_dir("n2")
    node.start()
    assert node.wait_exit(30) == 254
    assert "is for node 'n2', not for node 'n1'" in node.log_text()


def test_insecure_node_says_so_at_start(make_cluster):
    cluster = make_cluster(1, tls=False)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with cluster.client() as c:
            assert (await c.put("k", "v")).ok
            st = (await c.status(cluster.addresses[0])).value
            assert st["tls"] is False
    asyncio.run(scenario())
    text = cluster.nodes["n1"].log_text()
    assert "level=warning" in text and "event=insecure" in text


def test_kv_cli_without_certificates_says_how_to_give_them(make_cluster):
    import subprocess
    import sys

    from cluster import REPO

    cluster = make_cluster(1)
    cluster.start()
    asyncio.run(cluster.wait_for_leader())
    env = {k: v for k, v in os.environ.items() if k != "UKEHI_TLS_DIR"}

    def kv(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", *args, "--cluster", cluster.addresses[0]],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=60)

    plain = kv("put", "k", "v")
    assert plain.returncode == 1 and "--tls-dir" in plain.stderr, plain.stderr
    assert kv("put", "k", "v", "--tls-dir", cluster.certs_dir).returncode == 0
    got = kv("get", "k", "--tls-dir", cluster.certs_dir)
    assert got.returncode == 0 and got.stdout == "v\n", got.stderr
    bad = kv("get", "k", "--tls-dir", os.path.join(cluster.certs_dir, "n1"))  # a node's dir: no client.pem
    assert bad.returncode == 254 and "client.pem" in bad.stderr, bad.stderr


def test_a_peer_link_accepts_only_the_peer_it_meant_to_reach(make_cluster):
    """n1 is told n2 and n3 live at each other's addresses: its links refuse both nodes (each
    presents the other's certificate), so none of its messages leave, while n2 and n3 (told
    the truth) carry on without it."""
    cluster = make_cluster(3)
    n1, n2, n3 = (cluster.nodes[n] for n in ("n1", "n2", "n3"))
    swapped = f"n1={n1.address},n2={n3.address},n3={n2.address}"
    n1.args[n1.args.index("--peers") + 1] = swapped
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader(among=["n2", "n3"], timeout=20)
        async with cluster.client(addresses=[cluster.nodes[leader].address]) as c:
            assert (await c.put("k", "v")).ok
        await asyncio.sleep(1.0)
        st = (await cluster.statuses([leader]))[leader]
        # n1's links never connected, so none of its answers reached the leader
        assert st["progress"]["n1"]["match"] == 0, st["progress"]
    asyncio.run(scenario())
    text = n1.log_text()
    assert "event=peer-identity-mismatch peer=n2" in text and "presented=\"node 'n3'\"" in text, text[-2000:]
    assert "event=peer-connected" not in text


def test_closing_a_client_does_not_wait_for_a_paused_node(make_cluster):
    """A TLS close waits for the node's close_notify, which a paused node never sends
    (asyncio's default: 30 s); the harness closes clients to paused nodes all the time."""
    import signal
    import time

    cluster = make_cluster(1)
    cluster.start()
    node = cluster.nodes["n1"]

    async def scenario() -> float:
        await cluster.wait_for_leader()
        async with cluster.client() as c:
            assert (await c.put("k", "v")).ok
            os.kill(node.pid, signal.SIGSTOP)
            t0 = time.monotonic()
        return time.monotonic() - t0

    try:
        took = asyncio.run(scenario())
    finally:
        os.kill(node.pid, signal.SIGCONT)
    assert took < 3.0, took


def test_the_node_needs_only_the_standard_library_ssl(make_cluster):
    """`cryptography` is the tools' dependency: a TLS node starts and serves with it unimportable."""
    import subprocess
    import sys

    from cluster import REPO

    cluster = make_cluster(1)
    node = cluster.nodes["n1"]
    blocker = ("import runpy, sys; sys.modules['cryptography'] = None; "
               "sys.argv = ['ukehi', 'node', *sys.argv[1:]]; runpy.run_module('ukehi.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", blocker, *node.args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    node.proc = proc  # killed by the fixture, whatever happens

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with cluster.client() as c:
            assert (await c.put("k", "v")).ok
    asyncio.run(scenario())
    proc.terminate()
    out = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert "tls=\"mutual (node 'n1')\"" in out, out[-2000:]


def test_certs_cli_as_the_readme_uses_it(tmp_path):
    """`ukehi certs init/issue` as in README's "Running Ukehi by hand", one node, then `ukehi kv`."""
    import subprocess
    import sys

    from cluster import REPO, NodeProc, free_port

    def ukehi(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ukehi.cli", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60, env={**os.environ, **(env or {})})

    ca, me, n1 = str(tmp_path / "ca"), str(tmp_path / "me"), str(tmp_path / "n1-tls")
    assert ukehi("certs", "init", ca).returncode == 0
    again = ukehi("certs", "init", ca)
    assert again.returncode == 254 and "already holds a CA" in again.stderr
    assert ukehi("certs", "issue", str(tmp_path / "nothing"), "--client", "x").returncode == 254
    assert ukehi("certs", "issue", ca, "--node", "n1", "--out", n1, "--as", "node").returncode == 0
    assert ukehi("certs", "issue", ca, "--client", "app", "--out", me, "--as", "client").returncode == 0
    assert ukehi("certs", "issue", ca, "--admin", "ops", "--out", me, "--as", "admin").returncode == 0
    assert oct(os.stat(os.path.join(me, "admin.key")).st_mode & 0o777) == "0o600"
    port = free_port()
    node = NodeProc("n1", port, str(tmp_path / "data"), str(tmp_path / "n1.log"),
                    ["--id", "n1", "--listen", f"127.0.0.1:{port}", "--peers", f"n1=127.0.0.1:{port}",
                     "--data-dir", str(tmp_path / "data"), "--election-timeout", "150:300", "--heartbeat", "50",
                     "--tls-dir", n1])
    node.start()
    try:
        env = {"UKEHI_TLS_DIR": me}
        put = None
        for _ in range(50):
            put = ukehi("kv", "put", "greeting", "hello", "--cluster", node.address, env=env)
            if put.returncode == 0:
                break
        assert put is not None and put.returncode == 0, (put.stderr, node.log_text()[-2000:])
        got = ukehi("kv", "get", "greeting", "--cluster", node.address, env=env)
        assert got.returncode == 0 and got.stdout == "hello\n"
        snap = ukehi("kv", "snapshot", "--cluster", node.address, env=env)  # admin: over admin.pem
        assert snap.returncode == 0, snap.stderr
    finally:
        node.terminate()


def test_a_bad_tls_directory_is_a_definite_client_error_not_an_exception(monkeypatch, tmp_path):
    monkeypatch.setenv("UKEHI_TLS_DIR", str(tmp_path))  # no certificates in it

    async def go():
        async with UkehiClient(["127.0.0.1:1"], timeout=1.0) as c:
            return await c.get("k")
    r = asyncio.run(go())
    assert r.failed and r.error == "invalid_argument" and "client.pem" in r.message, r
