"""`ukehi-jepsen cluster up/status/logs/down` with `ukehi kv`, `image build` arguments, and the compose file."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.backends.docker import LABEL_CLUSTER, free_subnets

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


def jepsen(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def kv(args: list[str], timeout: float = 60, tls_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "UKEHI_TLS_DIR"}
    if tls_dir:
        env["UKEHI_TLS_DIR"] = tls_dir
    return subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def tls_dir_of(up_output: str) -> str:
    for line in up_output.splitlines():
        if "export UKEHI_TLS_DIR=" in line:
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"no certificates directory in:\n{up_output}")


def cluster_flag(up_output: str) -> str:
    for line in up_output.splitlines():
        if "ukehi kv get --cluster" in line:
            return line.split("--cluster", 1)[1].split()[0]
    raise AssertionError(f"no example command in:\n{up_output}")


def test_cluster_up_kv_put_get_status_logs_down(docker_client: Any, node_image: Any, tmp_path: Path,
                                                no_leftovers: None) -> None:
    name = f"ukjt{secrets.token_hex(3)}"
    try:
        up = jepsen(["cluster", "up", "--nodes", "3", "--name", name, "--results-dir", str(tmp_path)], tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"cluster {name} is up: 3 node(s)" in up.stdout
        addresses = cluster_flag(up.stdout)
        assert len(addresses.split(",")) == 3
        certs = tls_dir_of(up.stdout)  # the nodes talk mutual TLS with the cluster's own CA

        plain = kv(["put", "--cluster", addresses, "greeting", "no-certificate", "--timeout", "3"])
        assert plain.returncode != 0, plain.stdout  # refused without the cluster's certificates
        put = kv(["put", "--cluster", addresses, "greeting", "hello-from-docker"], tls_dir=certs)
        assert put.returncode == 0, put.stdout + put.stderr
        got = kv(["get", "--cluster", addresses, "greeting"], tls_dir=certs)
        assert got.returncode == 0 and got.stdout.strip() == "hello-from-docker", got.stdout + got.stderr

        status = jepsen(["cluster", "status", "--name", name], tmp_path)
        assert status.returncode == 0, status.stderr
        roles = [line.split()[4] for line in status.stdout.splitlines()[1:4]]
        assert sorted(roles) == ["follower", "follower", "leader"], status.stdout
        assert status.stdout.splitlines()[-1] == f"--cluster {addresses}"

        logs = jepsen(["cluster", "logs", "n2", "--name", name, "--lines", "5"], tmp_path)
        assert logs.returncode == 0 and "node=n2" in logs.stdout and len(logs.stdout.splitlines()) <= 5
        assert jepsen(["cluster", "logs", "n9", "--name", name], tmp_path).returncode == 254

        again = jepsen(["cluster", "up", "--name", name, "--results-dir", str(tmp_path)], tmp_path)
        assert again.returncode == 254 and "already up" in again.stderr

        down = jepsen(["cluster", "down", "--name", name], tmp_path)
        assert down.returncode == 0, down.stderr
        assert "removed (3 container(s)" in down.stdout
        assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={name}"}) == []
        # the data stays, for a person to look at
        assert list(tmp_path.glob(f"cluster-{name}/*/nodes/n1/node.log"))
        status_after = jepsen(["cluster", "status", "--name", name], tmp_path)
        assert status_after.returncode == 1 and "no cluster named" in status_after.stderr
    finally:
        jepsen(["cluster", "down", "--name", name], tmp_path)


def test_image_build_rejects_a_tag_without_a_version(tmp_path: Path) -> None:
    proc = jepsen(["image", "build", "--tag", "ukehi-node"], tmp_path, timeout=60)
    assert proc.returncode == 254 and "REPOSITORY:TAG" in proc.stderr


def test_rebuilding_with_the_same_wheel_reuses_the_image(docker_client: Any, node_image: Any) -> None:
    from harness.image import (KEY_LABEL, SOURCE_LABEL, VERSION_LABEL, build_node_image, project_version,
                               source_hash_of_wheel)

    first, wheel = node_image
    image = docker_client.images.get(first.tag)
    assert image.labels[KEY_LABEL] == first.key
    assert image.labels[SOURCE_LABEL] == source_hash_of_wheel(wheel)
    assert image.labels[VERSION_LABEL] == project_version()
    lines: list[str] = []
    again = build_node_image(offline=True, wheel=wheel, tag=first.tag, tag_latest=False, client=docker_client,
                             say=lines.append)
    assert again.cached and again.image_id == first.image_id and again.key == first.key
    assert any("up to date" in line for line in lines)
    # the same content under another tag is found by its key label, not rebuilt
    other = f"ukehi-node:reuse-{secrets.token_hex(3)}"
    try:
        third = build_node_image(offline=True, wheel=wheel, tag=other, tag_latest=False, client=docker_client,
                                 say=lines.append)
        assert third.cached and third.image_id == first.image_id
        assert docker_client.images.get(other).id == image.id
    finally:
        docker_client.images.remove(other)


def test_the_image_has_the_tools_the_nemeses_use(docker_client: Any, node_image: Any) -> None:
    script = ("set -e; for c in python3 ip iptables iptables-restore tc ps pkill tini sshd timeout "
              "ukehi ukehi-start; do command -v $c >/dev/null || { echo missing $c; exit 1; }; done; "
              "ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null; "
              "python3 -c 'import ukehi.node, harness.backends.delayer, msgpack'; id -u ukehi >/dev/null; echo ok")
    name = f"ukj-test-tools-{secrets.token_hex(3)}"
    try:
        out = docker_client.containers.run(node_image[0].tag, ["sh", "-c", script], name=name, remove=False)
        assert out.decode().strip().endswith("ok")
    finally:
        try:
            docker_client.containers.get(name).remove(force=True, v=True)
        except Exception:  # noqa: BLE001 - never created
            pass


def _compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _free_port_base() -> str:
    """A 4-digit BASE whose ports BASE1..BASE3 are free on 127.0.0.1 (the compose file appends 1-3)."""
    for base in range(4700, 6500, 7):
        ok = True
        for k in (1, 2, 3):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", int(f"{base}{k}")))
                except OSError:
                    ok = False
        if ok:
            return str(base)
    raise AssertionError("no free port base")


def test_compose_file_runs_a_cluster_for_kv(docker_client: Any, node_image: Any) -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    project = f"ukjc{secrets.token_hex(3)}"
    subnet = free_subnets(docker_client, project)[0]
    prefix = str(subnet.network_address).rsplit(".", 1)[0]
    env = {**os.environ, "UKEHI_NET_PREFIX": prefix, "UKEHI_PORT_BASE": _free_port_base(),
           "UKEHI_IMAGE": node_image[0].tag}
    base = [*compose, "-p", project, "-f", str(REPO / "docker" / "compose.yaml")]
    try:
        up = subprocess.run([*base, "up", "-d"], env=env, capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        addresses = ",".join(f"{prefix}.{i}:7000" for i in (11, 12, 13))
        deadline = time.monotonic() + 60
        put = kv(["put", "--cluster", addresses, "k", "v1"])
        while put.returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
            put = kv(["put", "--cluster", addresses, "k", "v1"])
        assert put.returncode == 0, put.stdout + put.stderr
        published = ",".join(f"127.0.0.1:{env['UKEHI_PORT_BASE']}{k}" for k in (1, 2, 3))
        got = kv(["get", "--cluster", published, "k"])
        assert got.returncode == 0 and got.stdout.strip() == "v1", got.stdout + got.stderr
        containers = docker_client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        assert len(containers) == 3 and all(c.attrs["Config"]["User"] == "ukehi" for c in containers)
        # the image's health check asks each node for its status
        deadline = time.monotonic() + 90
        health: list[str] = []
        while time.monotonic() < deadline:
            health = [docker_client.api.inspect_container(c.id)["State"].get("Health", {}).get("Status", "")
                      for c in containers]
            if all(h == "healthy" for h in health):
                break
            time.sleep(2)
        assert health == ["healthy"] * 3, health
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], env=env, capture_output=True, timeout=180)
        flt = {"label": f"com.docker.compose.project={project}"}
        leftovers = (docker_client.containers.list(all=True, filters=flt) + docker_client.networks.list(filters=flt)
                     + docker_client.volumes.list(filters=flt))
        assert leftovers == [], leftovers


def test_a_missing_base_without_a_registry_falls_back_to_the_offline_base(docker_client: Any) -> None:
    from harness.image import OFFLINE_BASE, REGISTRY_BASE, ImageError, choose_base, image_id, registry_reachable

    if image_id(docker_client, REGISTRY_BASE) is not None or registry_reachable(docker_client, REGISTRY_BASE)[0]:
        pytest.skip(f"{REGISTRY_BASE} is here or a registry answers: there is nothing to fall back from")
    lines: list[str] = []
    assert choose_base(docker_client, None, offline=False, say=lines.append) == OFFLINE_BASE
    assert any("no registry answers" in line and OFFLINE_BASE in line for line in lines), lines
    with pytest.raises(ImageError, match="docker load|--offline"):
        choose_base(docker_client, "ukj-no-such-base:1", offline=False, say=lines.append)
    with pytest.raises(ImageError, match="drop --base"):
        choose_base(docker_client, "ukj-no-such-base:1", offline=True, say=lines.append)


def test_cluster_up_with_a_missing_image_says_how_to_build_it_and_leaves_nothing(
        docker_client: Any, tmp_path: Path, no_leftovers: None) -> None:
    name = f"ukjt{secrets.token_hex(3)}"
    proc = jepsen(["cluster", "up", "--nodes", "1", "--name", name, "--image", "ukehi-node:no-such-tag-ukj",
                   "--results-dir", str(tmp_path)], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ukehi-jepsen image build --offline" in proc.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={name}"}) == []


def test_cluster_up_refuses_another_backend(tmp_path: Path) -> None:
    proc = jepsen(["cluster", "up", "--backend", "local"], tmp_path, timeout=60)
    assert proc.returncode == 254 and "--backend docker" in proc.stderr
