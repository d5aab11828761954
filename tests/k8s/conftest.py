"""Fixtures for tests against a real Kubernetes control plane on loopback (see cluster.py).

Every test under tests/k8s is marked `k8s` (deselect with `-m "not k8s"`). The first test that needs the `cluster`
fixture builds the binaries with tools/testcluster/build.sh (cached outside the repo; ~12 min on 2 cores the very
first time) and starts one cluster for the whole session. Each test module marks itself `xdist_group("k8s")`, so
that `pytest -n N --dist loadgroup` runs them all on one worker, with one cluster and one real node (a machine has
room for one).
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from cluster import TestCluster, build_binaries
from kubernetes import client
from node import RealNode, build_node_binaries, missing_prerequisites

from tests.storage_servers import StorageServer, s3_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUCKET = "rlkube-e2e"
CREDENTIALS_SECRET = "rlkube-bucket-credentials"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


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


# The end-to-end fixtures: pods on the real node that pull a pushed image and write to a real S3 bucket.

@pytest.fixture(scope="module")
def bucket_server(real_node: RealNode) -> Iterator[StorageServer]:
    """moto's S3 server on the node's address: the pods and this host reach it at the same URL."""
    with s3_server(host=real_node.ip) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def pushed_image(real_node: RealNode) -> str:
    """The cpu image, built by `rlkube build` with the real engine and pushed to the node's registry (by digest)."""
    result = subprocess.run([sys.executable, "-m", "rlkube", "build", "--target", "cpu", "--push", "--registry",
                             real_node.registry], capture_output=True, text=True, timeout=3600, check=False, cwd=REPO,
                            env={**os.environ, "DOCKER_HOST": real_node.docker_host})
    assert result.returncode == 0, result.stderr[-4000:]
    image = result.stdout.strip().splitlines()[-1]
    assert image.startswith(f"{real_node.registry}/rlkube-cpu@sha256:"), image
    return image


@pytest.fixture
def e2e(cluster: TestCluster, real_node: RealNode, bucket_server: StorageServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A restricted namespace with the bucket's credentials in a Secret, and a profile `real` that targets the node."""
    namespace = f"rlkube-e2e-{time.monotonic_ns() % 10**8}"
    cluster.create_namespace(namespace, labels=RESTRICTED)
    api = cluster.api_client()
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=CREDENTIALS_SECRET), string_data={k: bucket_server.env[k] for k in keys}))
    profile = {
        "target": "kubernetes", "context": cluster.context, "namespace": namespace,
        "image": f"{real_node.registry}/rlkube-cpu:{{version}}", "output": f"s3://{BUCKET}/{namespace}",
        "resources": {"cpu": "250m", "memory": "2Gi"},
        "node_selector": real_node.node_selector, "tolerations": [real_node.toleration],
        "env": {k: bucket_server.env[k] for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                                                   "AWS_EC2_METADATA_DISABLED")},
        "env_from_secrets": [CREDENTIALS_SECRET],
        "retries_per_copy": 1, "termination_grace_seconds": 60,
    }
    (tmp_path / "rlkube.yaml").write_text(yaml.safe_dump({"real": profile}))
    monkeypatch.chdir(tmp_path)
    for key, value in {**bucket_server.env, "KUBECONFIG": str(cluster.kubeconfig),
                       "DOCKER_HOST": real_node.docker_host, "RLKUBE_DATA_DIR": str(tmp_path / "data"),
                       "RLKUBE_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    yield {"namespace": namespace, "api": api, "output": profile["output"], "dir": tmp_path}
    client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")
