"""Shared fixtures: real store clusters of processes on loopback."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from kvstore.localcluster import LocalCluster

# No test may pick up the developer's own ~/.skiff/config (written by `skiff up`): every client,
# in this process and in the processes tests start, reads no file unless a test says otherwise.
os.environ["SKIFF_CONFIG"] = "none"


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator:
    """Make LocalClusters that are always stopped (by PID) at the end of the test."""
    made: list[LocalCluster] = []

    def make(size: int = 3, extra_args: tuple[str, ...] = (), start: bool = True) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster-{len(made)}", size=size, extra_args=extra_args)
        made.append(cluster)
        if start:
            cluster.start(timeout=60)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 3-replica cluster for a whole module of tests that do not break it."""
    cluster = LocalCluster(tmp_path_factory.mktemp("shared"), size=3)
    cluster.start(timeout=60)
    yield cluster
    cluster.stop()


def require_etcdctl() -> str:
    path = shutil.which("etcdctl")
    if path is None:
        pytest.skip("etcdctl not installed (make test installs Debian's etcd-client when run as root)")
    return path
