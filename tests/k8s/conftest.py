"""Fixtures for tests against a real Kubernetes control plane on loopback (see cluster.py).

Every test under tests/k8s is marked `k8s` (deselect with `-m "not k8s"`). The first test that needs the `cluster`
fixture builds the binaries with tools/testcluster/build.sh (cached outside the repo; ~12 min on 2 cores the very
first time) and starts one cluster for the whole session. Each test module marks itself `xdist_group("k8s")`, so
that `pytest -n N --dist loadgroup` runs them all on one worker, with one cluster and one real node (a machine has
room for one).
"""

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from cluster import TestCluster, build_binaries
from kubernetes import client
from node import RealNode, build_node_binaries, missing_prerequisites

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: runs against a real loopback Kubernetes control plane (tests/k8s)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestCluster]:
    with TestCluster(build_binaries()) as test_cluster:
        yield test_cluster


@pytest.fixture(scope="session")
def api(cluster: TestCluster) -> client.ApiClient:
    """An admin `kubernetes` ApiClient for the session's cluster."""
    return cluster.api_client()


@pytest.fixture
def namespace(cluster: TestCluster, api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount) per test, deleted afterwards."""
    name = f"rlkube-test-{uuid4().hex[:8]}"
    cluster.create_namespace(name)
    yield name
    client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def real_node(cluster: TestCluster) -> Iterator[RealNode]:
    """A real kubelet node (containerd, runc, CNI) joined to the session's cluster; see node.py."""
    if reason := missing_prerequisites():
        pytest.skip(reason)
    with RealNode(cluster, build_node_binaries()) as node:
        yield node
