"""rlkube doctor without a cluster: the local set-up, the pure checks, the image check against an in-process registry
(tests/oci_registry.py; no cloud registry can run here) and the bucket check against moto's S3 server.

The checks against a real API server are in tests/k8s/test_doctor.py.
"""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from rlkube import __version__
from rlkube.launch import doctor
from rlkube.launch.clusters import ClusterProfile
from rlkube.launch.oci import VERSION_LABEL, ImageReference, parse_reference
from rlkube.launch.targets.kubernetes.doctor import (
    ACCESS,
    PROBE,
    check_access,
    check_parameters,
    check_version,
    probe_objects,
)
from rlkube.storage.filesystems import open_filesystem
from tests import oci_registry
from tests.conftest import run_rlkube
from tests.storage_servers import StorageServer, gcs_server, s3_server

SETUP = Path(__file__).resolve().parents[1] / "manifests" / "setup"
DIGEST = "sha256:" + "a" * 64


def test_the_access_it_checks_is_exactly_what_the_submitter_role_grants() -> None:
    (role,) = (doc for doc in yaml.safe_load_all((SETUP / "rbac.yaml").read_text()) if doc["kind"] == "Role")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert {(group, resource, verb) for group, resource, verbs in ACCESS for verb in verbs} == granted


@pytest.mark.parametrize(("version", "state"), [("v1.29.9", doctor.FAIL), ("v1.30.0", doctor.OK),
                                                ("v1.37.2-gke.1200", doctor.OK), ("v1.28.3+k3s1", doctor.FAIL)])
def test_the_api_server_must_be_1_30_or_newer(version: str, state: str) -> None:
    check = check_version(version, "https://example", "alice")
    assert check.state == state
    if state == doctor.FAIL:
        assert "backoffLimitPerIndex" in check.line
        assert "upgrade" in check.fix


def test_missing_access_is_listed_verb_by_verb() -> None:
    check = check_access("rlkube", {"create jobs": True, "delete pods": False, "get pods/log": False})
    assert check.state == doctor.FAIL
    assert check.line == "you may not delete pods, get pods/log in rlkube"
    assert "rlkube-submitter" in check.fix


PARAMETERS = {"registries": "ghcr.io/rlkube\n", "secrets": "s3-keys\n",
              "serviceAccountAnnotations": "iam.gke.io/gcp-service-account=runner@p.iam.gserviceaccount.com\n"}


@pytest.mark.parametrize(("settings", "image", "lacks"), [
    ({}, "ghcr.io/rlkube/rlkube-cpu:1", None),
    ({}, "ghcr.io/rlkube-other/rlkube-cpu:1", "registries lacks the image's registry (ghcr.io/rlkube-other)"),
    ({"env_from_secrets": ["s3-keys", "tracker"]}, "ghcr.io/rlkube/rlkube-cpu:1", "secrets lacks tracker"),
    ({"service_account_annotations": {"iam.gke.io/gcp-service-account": "admin@p.iam.gserviceaccount.com"}},
     "ghcr.io/rlkube/rlkube-cpu:1", "serviceAccountAnnotations lacks iam.gke.io/gcp-service-account=admin@"),
])
def test_the_admission_parameters_must_admit_the_profiles_image_secrets_and_identity(
        settings: dict, image: str, lacks: str | None) -> None:
    profile = ClusterProfile(name="p", target="kubernetes", namespace="rlkube", output="s3://b/r", **settings)
    check = check_parameters(profile, image, PARAMETERS)
    assert (check.state, lacks is None or lacks in check.line) == (doctor.OK if lacks is None else doctor.FAIL, True)
    assert check_parameters(profile, image, None).fix == "edit and apply manifests/setup/parameters.yaml"


def test_each_check_is_one_line_and_the_summary_counts_them() -> None:
    checks = [doctor.passed("python", "Python 3.11"), doctor.warned("disk", "only 5 GiB", "free space"),
              doctor.failed("extras", "needs ale-py", "pip install 'rlkube[atari]'")]
    assert [doctor.format_check(check) for check in checks] == [
        "ok    python          Python 3.11",
        "warn  disk            only 5 GiB; fix: free space",
        "FAIL  extras          needs ale-py; fix: pip install 'rlkube[atari]'",
    ]
    assert doctor.summary(checks, "train") == "1 ok, 1 warnings, 1 failed: fix the failures before you train"
    assert (doctor.exit_code(checks), doctor.exit_code(checks[:2])) == (1, 0)


def test_unmet_requirements_are_named_with_what_is_installed() -> None:
    installed = {"numpy": "1.20.0", "click": "8.1.7"}.get
    requirements = [Requirement("numpy>=1.26"), Requirement("click>=8.1"), Requirement("ale-py>=0.10")]
    assert doctor.unmet(requirements, installed) == ["numpy>=1.26 (have 1.20.0)", "ale-py>=0.10"]


@pytest.mark.parametrize(("hparams_set", "extras"), [("dqn_cartpole", []), ("ppo_pong", ["envpool"]),
                                                     ("sac_halfcheetah", ["mujoco"])])
def test_a_sets_extras_follow_from_its_env(hparams_set: str, extras: list[str]) -> None:
    assert doctor.extras_for(hparams_set) == extras


@pytest.mark.parametrize(("free_gib", "state"), [(0.5, doctor.FAIL), (5, doctor.WARN), (50, doctor.OK)])
def test_disk_in_the_runs_directory(free_gib: float, state: str) -> None:
    assert doctor.check_disk(Path("runs"), int(free_gib * 2**30)).state == state


def test_the_local_checks_are_one_line_each_and_a_summary(tmp_path: Path) -> None:
    result = run_rlkube("doctor", "--hparams", "dqn_cartpole", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ["python", "packages", "extras", "disk"], result.stdout
    assert lines[-1] == "4 ok, 0 warnings, 0 failed: ready to train"
    assert result.returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--cluster", "kub"], "unknown cluster 'kub'; did you mean kube or minikube?"),
    (["--pods"], "--pods and --image check a cluster profile; pass --cluster"),
    (["--hparams", "dqn_cartpol"], "unknown hparams set 'dqn_cartpol'"),
    (["--cluster", "kube", "--hparams", "dqn_cartpole"], "--hparams checks this machine's extras"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_rlkube("doctor", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


@pytest.mark.parametrize(("image", "reference"), [
    ("ghcr.io/rlkube/rlkube-cpu:0.1.0", ImageReference("ghcr.io", "rlkube/rlkube-cpu", "0.1.0")),
    (f"127.0.0.1:5000/rlkube-cpu@{DIGEST}", ImageReference("127.0.0.1:5000", "rlkube-cpu", DIGEST)),
    ("python:3.11", ImageReference("registry-1.docker.io", "library/python", "3.11")),
    ("localhost/x/y", ImageReference("localhost", "x/y", "latest")),
])
def test_image_references_are_read_as_container_engines_read_them(image: str, reference: ImageReference) -> None:
    assert parse_reference(image) == reference


@pytest.fixture(params=[False, True], ids=["anonymous", "token"])
def registry(request: pytest.FixtureRequest) -> Iterator[oci_registry.FakeRegistry]:
    with oci_registry.serve(token_required=request.param) as running:
        yield running


@pytest.mark.parametrize(("label", "states"), [(__version__, [doctor.OK, doctor.OK]),
                                               ("0.0.1", [doctor.OK, doctor.FAIL]),
                                               (None, [doctor.OK, doctor.WARN])])
def test_the_image_resolves_to_a_digest_and_carries_the_clis_version(
        registry: oci_registry.FakeRegistry, label: str | None, states: list[str]) -> None:
    digest = registry.push("rlkube/rlkube-cpu", "v1", {VERSION_LABEL: label} if label else {})
    checks = doctor.check_image(f"{registry.address}/rlkube/rlkube-cpu:v1")
    assert [check.state for check in checks] == states, checks
    assert digest[:19] in checks[0].line
    if label == "0.0.1":
        assert checks[1].line == f"the image is rlkube 0.0.1, this CLI is {__version__}"
        assert checks[1].fix.startswith("pip install rlkube==0.0.1, or rebuild the image: rlkube build --target cpu")


def test_an_image_missing_from_its_registry_fails_with_the_push_to_make(registry: oci_registry.FakeRegistry) -> None:
    (check,) = doctor.check_image(f"{registry.address}/team/rlkube-gpu:nope")
    assert check.state == doctor.FAIL
    assert "is not in its registry" in check.line
    assert check.fix == f"push it: rlkube build --target gpu --push --registry {registry.address}/team"


def test_a_shipped_profiles_placeholder_image_fails_before_any_request() -> None:
    (check,) = doctor.check_image("us-docker.pkg.dev/PROJECT/rlkube/rlkube-gpu:0.1.0")
    assert check.state == doctor.FAIL
    assert check.line.endswith("still has the placeholder PROJECT of a shipped profile")


def test_a_registry_out_of_reach_is_a_warning() -> None:
    with oci_registry.serve() as gone:
        address = gone.address
    (check,) = doctor.check_image(f"{address}/rlkube-cpu:1")
    assert check.state == doctor.WARN
    assert "cannot reach" in check.line


@pytest.fixture(scope="module", params=["s3", "gs"])
def bucket_server(request: pytest.FixtureRequest) -> Iterator[StorageServer]:
    with (s3_server if request.param == "s3" else gcs_server)() as server:
        yield server


def test_the_bucket_check_lists_writes_and_deletes_a_marker(bucket_server: StorageServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = bucket_server.fresh_bucket(monkeypatch)
    check = doctor.check_bucket(bucket_server.url(bucket, "runs"))
    assert check.state == doctor.OK, check
    assert [r for r in bucket_server.requests() if "rlkube-doctor" in r], "no marker was written"
    fs, path = open_filesystem(bucket_server.url(bucket))
    assert fs.find(path) == [], "the marker was left behind"
    missing = doctor.check_bucket(bucket_server.url(f"{bucket}-missing", "runs"))
    assert missing.state == doctor.FAIL
    assert "does not exist" in missing.line


def test_the_pods_probe_writes_lists_and_deletes_a_marker_in_a_new_directory(bucket_server: StorageServer) -> None:
    """What the probe pod runs, here: a pod's directory of a fresh experiment does not exist yet in the bucket."""
    bucket = f"rlkube-{uuid.uuid4().hex[:12]}"
    bucket_server.create_bucket(bucket)
    environment = {**{k: v for k, v in os.environ.items() if k not in bucket_server.unset}, **bucket_server.env}
    result = subprocess.run([sys.executable, "-c", PROBE, bucket_server.url(bucket, "runs/rlkube-doctor-1")],
                            env=environment, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r for r in bucket_server.requests() if "rlkube-doctor" in r], "no marker was written"


def test_the_pods_probe_is_the_profiles_render_running_the_marker_round_trip() -> None:
    profile = ClusterProfile(name="p", target="kubernetes", namespace="rlkube", output="s3://b/runs",
                             env_from_secrets=["s3-keys"], resources={"cpu": "250m", "memory": "1Gi"})
    objects = probe_objects(profile, "ghcr.io/rlkube/rlkube-cpu:1", "rlkube-doctor-1234abcd")
    assert [obj["kind"] for obj in objects] == ["ServiceAccount", "ConfigMap", "Job"]
    (job,) = objects[2:]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-c", PROBE]
    assert container["args"] == ["s3://b/runs/rlkube-doctor-1234abcd"]
    assert pod["serviceAccountName"] == "rlkube-doctor-1234abcd"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]
    assert job["spec"]["completions"] == 1
