"""Fixtures for the Docker tests: an engine (or a skip that says why), the node image
built offline once per session, and a check that a test left no container, network
or volume of its own behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from docker_leftovers import labelled


def _engine() -> tuple[Any, str]:
    try:
        from harness.backends.docker import DockerUnavailable, connect
    except ImportError as err:
        return None, f"the docker SDK is not importable ({err})"
    try:
        return connect(timeout=60), ""
    except DockerUnavailable as err:
        return None, str(err)


@pytest.fixture(scope="session", autouse=True)
def docker_session_label() -> Iterator[str]:
    """Label every Docker object of this session (subprocesses inherit it), so the tests check and
    clean only their own objects on an engine other sessions may be using at the same time."""
    from harness.backends.docker import SESSION_ENV

    previous = os.environ.get(SESSION_ENV)
    session = f"pytest-{secrets.token_hex(4)}"
    os.environ[SESSION_ENV] = session
    try:
        yield session
    finally:
        if previous is None:
            os.environ.pop(SESSION_ENV, None)
        else:
            os.environ[SESSION_ENV] = previous


@pytest.fixture(scope="session")
def docker_client() -> Any:
    client, why = _engine()
    if client is None:
        pytest.skip(f"no Docker engine: the docker tests are skipped ({why})")
    return client


@pytest.fixture(scope="session")
def node_image(docker_client: Any, docker_session_label: str) -> Any:
    """The node image, built offline from this tree's wheel (reused when nothing changed).

    Tagged for this session only (``ukehi-node:<session>``, not ``:latest``), and made the
    default image of every run of the session (UKEHI_JEPSEN_IMAGE), so a concurrent session
    that builds other sources can neither move it nor be moved by it. The tag goes at the end
    (the image itself stays when other tags, e.g. CI's ``ukehi-node:<version>``, hold it).
    Yields the BuildResult and the wheel it was built from (for the cache test).
    """
    from harness.backends.docker import IMAGE_ENV
    from harness.image import build_node_image, build_wheel

    tmp = Path(tempfile.mkdtemp(prefix="ukj-test-wheel-"))
    tag = f"ukehi-node:{docker_session_label}"
    previous = os.environ.get(IMAGE_ENV)
    try:
        wheel = build_wheel(tmp / "dist", say=lambda _: None)
        result = build_node_image(offline=True, wheel=wheel, tag=tag, tag_latest=False, client=docker_client,
                                  say=print)
        os.environ[IMAGE_ENV] = tag
        yield result, wheel
    finally:
        if previous is None:
            os.environ.pop(IMAGE_ENV, None)
        else:
            os.environ[IMAGE_ENV] = previous
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            docker_client.images.remove(tag)
        except Exception:  # noqa: BLE001 - never built, or in use by a container someone still runs
            pass


@pytest.fixture
def no_leftovers(docker_client: Any) -> Iterator[None]:
    """Fails the test if it leaves a labelled container, network or volume that was not there before."""
    before = labelled(docker_client)
    yield
    after = labelled(docker_client)
    new = {kind: after[kind] - before[kind] for kind in after}
    # Remove them whatever the verdict, so one failing test does not leak into the next.
    for cid in new["containers"]:
        _quietly(lambda: docker_client.containers.get(cid).remove(force=True, v=True))
    for nid in new["networks"]:
        _quietly(lambda: docker_client.networks.get(nid).remove())
    for vid in new["volumes"]:
        _quietly(lambda: docker_client.volumes.get(vid).remove(force=True))
    assert not any(new.values()), f"left behind: {new}"


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - already gone
        pass
