"""The harness's per-run CA on a real local cluster: files, permissions, and clocks set back."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

from harness.backends.local import LocalCluster
from harness.db import UkehiDB
from ukehi.client import UkehiClient


def test_run_certificates_survive_a_node_clock_set_back_an_hour(tmp_path: Path) -> None:
    """The clock nemesis moves node clocks back (its bumps add up); a node whose clock reads
    before a certificate's start refuses it. The run's certificates are backdated, so a node
    an hour in the past still accepts its peers and clients on fresh connections."""
    with LocalCluster(["n1", "n2", "n3"], results_dir=tmp_path, isolation="loopback", faketime=True) as cluster:
        db = UkehiDB(cluster, use_fake_clock=True)
        try:
            db.start_all()
            asyncio.run(db.wait_for_leader())
            certs = tmp_path / "certs"
            assert (certs / "ca.pem").is_file() and (certs / "admin.pem").is_file()
            for name in cluster.nodes:
                tls = tmp_path / "nodes" / name / "tls"
                assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
                assert stat.S_IMODE(os.stat(tls / "node.key").st_mode) == 0o600
                assert "--tls-dir" in db.argv(name) and "--insecure" not in db.argv(name)
            n1 = cluster.nodes["n1"]
            n1.set_clock(-3600.0)
            time.sleep(1.0)  # libfaketime re-reads its file
            for name in ("n1", "n2", "n3"):  # every connection to and from n1 is made anew
                cluster.nodes[name].kill()
                db.start(name)
                asyncio.run(db.wait_for_leader(timeout=30, nodes_may_be_down=True))

            async def check() -> dict:
                async with UkehiClient([f"{n1.address}:{n1.ports[0]}"], timeout=5.0) as c:
                    for _ in range(50):
                        if (await c.put("k", "v")).ok:
                            break
                        await asyncio.sleep(0.2)
                    # Applying follows committing by a moment: wait (bounded) until n1 caught up.
                    for _ in range(50):
                        st = (await c.status(f"{n1.address}:{n1.ports[0]}")).value
                        if st["applied_index"] >= st["commit_index"] > 0:
                            break
                        await asyncio.sleep(0.1)
                    return st
            st = asyncio.run(check())
            assert abs(st["clock"] - (time.time() - 3600)) < 120, st["clock"]  # n1 really is an hour back
            assert st["tls"] is True and st["tls_refused"] == 0, st
            assert st["applied_index"] >= st["commit_index"] > 0
        finally:
            db.stop_all()


def test_an_insecure_db_runs_plain_tcp_and_makes_no_certificates(tmp_path: Path) -> None:
    """`ukehi-jepsen run --insecure`: nodes with --insecure, no CA, the harness's clients on plain TCP."""
    with LocalCluster(["n1", "n2", "n3"], results_dir=tmp_path, isolation="loopback") as cluster:
        db = UkehiDB(cluster, insecure=True)
        try:
            assert all("--insecure" in db.argv(n) and "--tls-dir" not in db.argv(n) for n in cluster.nodes)
            db.start_all()
            asyncio.run(db.wait_for_leader())
            statuses = asyncio.run(db.statuses())
            assert all(s is not None and s["tls"] is False for s in statuses.values()), statuses
            assert not (tmp_path / "certs").exists()
            assert not any((tmp_path / "nodes" / n / "tls").exists() for n in cluster.nodes)
            log = (tmp_path / "nodes" / "n1" / "node.log").read_text()
            assert "level=warning" in log and "event=insecure" in log
        finally:
            db.stop_all()
