"""`ukehi-jepsen cluster up --shards S --replication-factor R` in containers, poked with `ukehi kv`."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from harness.backends.docker import LABEL_CLUSTER
from test_docker_cluster_cli import cluster_flag, jepsen, kv, tls_dir_of

pytestmark = pytest.mark.docker


def test_sharded_cluster_up_serves_every_shard_and_shows_its_leaders(docker_client: Any, node_image: Any,
                                                                     tmp_path: Path, no_leftovers: None) -> None:
    name = f"ukjs{secrets.token_hex(3)}"
    try:
        up = jepsen(["cluster", "up", "--nodes", "3", "--shards", "4", "--replication-factor", "2",
                     "--name", name, "--results-dir", str(tmp_path)], tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "shard map: epoch 1, 4 shards, replication factor 2" in up.stdout
        addresses, certs = cluster_flag(up.stdout), tls_dir_of(up.stdout)
        first = addresses.split(",")[0]
        # `ukehi kv` given one node: keys of every shard land, wherever they live.
        for i in range(12):
            put = kv(["put", "--cluster", first, f"key-{i}", f"value-{i}"], tls_dir=certs)
            assert put.returncode == 0, put.stdout + put.stderr
        for i in range(12):
            got = kv(["get", "--cluster", first, f"key-{i}"], tls_dir=certs)
            assert got.returncode == 0 and got.stdout.strip() == f"value-{i}", got.stdout + got.stderr
        every = kv(["status", "--all", "--cluster", addresses], tls_dir=certs)
        assert every.returncode == 0, every.stdout + every.stderr
        lines = every.stdout.splitlines()
        table = lines[lines.index("leaders per shard:") + 1:]
        assert len(table) == 4 and all("leader n" in line for line in table), every.stdout
        status = jepsen(["cluster", "status", "--name", name], tmp_path)
        assert status.returncode == 0 and status.stdout.count(" leads ") == 3, status.stdout
    finally:
        jepsen(["cluster", "down", "--name", name], tmp_path)
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={name}"}) == []
