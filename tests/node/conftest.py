"""Fixtures for the real-process node tests: every cluster is killed at the end, even on failure."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from cluster import LocalCluster


@pytest.fixture
def make_cluster(tmp_path, request) -> Iterator[Callable[..., LocalCluster]]:
    clusters: list[LocalCluster] = []

    def make(size: int, **kwargs) -> LocalCluster:
        base = os.path.join(str(tmp_path), f"cluster{len(clusters)}")
        os.makedirs(base, exist_ok=True)
        cluster = LocalCluster(base, size, **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in clusters:
        cluster.kill_all()
        if failed is not None and failed.failed:
            print(cluster.tails(60))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
