"""Cluster profiles: shipped as data, overridden per user and per project, validated with clear errors."""

import subprocess
from pathlib import Path

import pytest
import yaml

from rlkube.errors import UserError
from rlkube.launch.clusters import get_profile, load_profiles, quantity_bytes
from rlkube.launch.targets.base import target_for
from tests.conftest import REPO, run_rlkube


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def test_every_target_of_the_issue_ships_as_a_profile() -> None:
    profiles = load_profiles()
    assert {"local", "kube", "kind", "minikube", "gke-tpu", "gke-gpu", "eks"} <= set(profiles)
    assert profiles["local"].target == "local"
    assert profiles["gke-tpu"].tpu_slice is not None


def test_user_then_project_files_override_key_by_key(project: Path) -> None:
    (project / "config" / "rlkube").mkdir(parents=True)
    (project / "config" / "rlkube" / "clusters.yaml").write_text(yaml.safe_dump({
        "gke-tpu": {"namespace": "research", "spot": True},
        "my-kind": {"target": "kubernetes", "context": "kind-dev", "pvc": "runs", "output": "/runs"},
    }))
    (project / "rlkube.yaml").write_text(yaml.safe_dump({"gke-tpu": {"accelerator": {"type": "tpu",
                                                                                     "name": "v5litepod-16"}}}))
    tpu = get_profile("gke-tpu")
    assert (tpu.namespace, tpu.spot, tpu.tpu_slice.hosts) == ("research", True, 4)
    assert tpu.service_account_annotations  # untouched keys keep the shipped values
    assert get_profile("my-kind").context == "kind-dev"
    listed = run_rlkube("clusters", cwd=project, env={"XDG_CONFIG_HOME": str(project / "config")})
    assert listed.returncode == 0
    assert any(line.startswith("my-kind ") for line in listed.stdout.splitlines())
    assert "tpu v5litepod-16" in listed.stdout


@pytest.mark.parametrize(("profile", "message"), [
    ({"target": ["local"]}, "target must name a target, e.g. local or kubernetes, got ['local']"),
    ({"target": "kubernetes", "nodeselector": {}}, "'nodeselector'; did you mean node_selector"),
    ({"target": "kubernetes", "output": "/runs"}, "output /runs is a path in the pod, so name the pvc"),
    ({"target": "kubernetes", "output": "gs://b", "accelerator": {"type": "tpu", "name": "v5litepod-8"}},
     "TPUs need provider gke"),
    ({"target": "kubernetes", "provider": "gke", "output": "gs://b", "accelerator": {"type": "tpu", "name": "v9-8"}},
     "unknown TPU type 'v9-8'"),
    ({"target": "kubernetes", "output": "gs://b", "accelerator": {"type": "gpu"}},
     "accelerator needs type (tpu or gpu), name"),
    ({"target": "kubernetes", "output": "gs://b", "retries_per_copy": -1}, "retries_per_copy must be a whole number"),
    ({"target": "kubernetes", "output": "gs://b", "tmp_size_limit": "8GB"},
     "tmp_size_limit must be a positive Kubernetes quantity of bytes such as 8Gi or 500M"),
    ({"target": "kubernetes", "output": "gs://b", "shm_size_limit": "0"}, "shm_size_limit must be a positive"),
    ({"target": "kubernetes", "output": "gs://b", "ephemeral_storage": 10}, "ephemeral_storage must be null for"),
    ({"target": "kubernetes", "output": "gs://b", "ephemeral_storage": "4Gi"},
     "ephemeral_storage 4Gi is less than tmp_size_limit 8Gi"),
    ({"target": "kubernetes", "output": "gs://b", "resources": {"ephemeral-storage": "1Gi"}},
     "resources cannot set ephemeral-storage; set the ephemeral_storage field"),
    ({"target": "kubernetes", "output": "gs://b", "active_deadline_seconds": 0},
     "active_deadline_seconds must be a whole number of seconds > 0 (e.g. 259200, 3 days), or null"),
    ({"target": "kubernetes", "output": "gs://b", "ttl_seconds_after_finished": "1d"},
     "ttl_seconds_after_finished must be a whole number of seconds >= 0"),
    ({"target": "kubernetes", "output": "gs://b", "env": ["A=b"]}, "env must map variable names to values"),
    ({"target": "kubernetes", "output": "gs://b", "env": {"HOME": "/home"}}, "env cannot set HOME: rlkube sets"),
    ({"target": "kubernetes", "output": "gs://b", "env": {"AWS_SECRET_ACCESS_KEY": "x"}},
     "env AWS_SECRET_ACCESS_KEY looks like a credential: put it in a Secret and name the Secret in env_from_secrets"),
    ({"target": "kubernetes", "output": "gs://b", "env": {"WANDB_API_KEY": "x"}},
     "env WANDB_API_KEY looks like a credential: put it in a Secret and name the Secret in env_from_secrets"),
    ({"target": "kubernetes", "output": "gs://b", "env": {"RLKUBE_IMAGE": "x"}}, "env cannot set RLKUBE_IMAGE"),
    ({"target": "kubernetes", "output": "gs://b", "env": {"1X": "y"}}, "env name '1X' must be letters, digits"),
    ({"target": "kubernetes", "output": "gs://b", "env": {"DEBUG": True}}, "env DEBUG must be a string or a whole"),
    ({"target": "kubernetes", "output": "gs://b", "env_from_secrets": "creds"},
     "env_from_secrets must be a list of Secret names"),
    ({"target": "kubernetes", "output": "gs://b", "env_from_secrets": ["Creds_1"]},
     "env_from_secrets must be a list of Secret names"),
    ({"target": "kubernetes", "output": "gs://b", "env_from_secrets": ["creds", "creds"]},
     "env_from_secrets names a Secret twice"),
])
def test_bad_profiles_name_the_file_profile_and_field(project: Path, profile: dict, message: str) -> None:
    (project / "rlkube.yaml").write_text(yaml.safe_dump({"broken": profile}))
    with pytest.raises(UserError, match=r"rlkube\.yaml") as caught:
        load_profiles()
    assert message in str(caught.value)
    assert "'broken'" in str(caught.value)


# The rlkube command knows the shipped targets; this process may know the tests' fake one too (tests/fake_target.py
# registers it when imported), so here only the line's start is compared.
@pytest.mark.parametrize(("target", "message"), [
    ("cloud", "cluster 'broken': unknown target 'cloud'; known: kubernetes, local"),
    ("kubernets", "cluster 'broken': unknown target 'kubernets'; did you mean kubernetes?"),
])
def test_a_profile_naming_an_unknown_target_is_refused_where_it_is_used(project: Path, target: str,
                                                                        message: str) -> None:
    (project / "rlkube.yaml").write_text(yaml.safe_dump({"broken": {"target": target}}))
    with pytest.raises(UserError) as caught:
        target_for(get_profile("broken"))
    assert str(caught.value).startswith(message.partition("; known: ")[0])
    listed = run_rlkube("clusters", cwd=project, env={"XDG_CONFIG_HOME": str(project / "config")})
    assert (listed.returncode, listed.stderr.strip()) == (2, f"error: {message}")


def test_storage_lifetime_and_env_fields_have_safe_defaults_and_can_be_changed(project: Path) -> None:
    kube = get_profile("kube")
    assert (kube.tmp_size_limit, kube.shm_size_limit, kube.ephemeral_storage_size) == ("8Gi", "2Gi", "9Gi")
    assert (kube.active_deadline_seconds, kube.ttl_seconds_after_finished) == (3 * 24 * 3600, 7 * 24 * 3600)
    (project / "rlkube.yaml").write_text(yaml.safe_dump({
        "minio": {"target": "kubernetes", "output": "s3://runs", "tmp_size_limit": "500M",
                  "active_deadline_seconds": None, "ttl_seconds_after_finished": 0,
                  "env": {"AWS_ENDPOINT_URL": "http://minio:9000", "RETRIES": 3},
                  "env_from_secrets": ["minio-credentials"]},
        "big-disk": {"target": "kubernetes", "output": "s3://runs", "tmp_size_limit": "0.5Ti",
                     "ephemeral_storage": "600Gi"},
    }))
    minio = get_profile("minio")
    assert minio.ephemeral_storage_size == str(500 * 10**6 + 2**30)  # no binary unit divides it
    assert (minio.active_deadline_seconds, minio.ttl_seconds_after_finished) == (None, 0)
    assert minio.env == {"AWS_ENDPOINT_URL": "http://minio:9000", "RETRIES": 3}
    assert get_profile("big-disk").ephemeral_storage_size == "600Gi"


@pytest.mark.parametrize(("text", "size"), [("8Gi", 8 * 2**30), ("500M", 500 * 10**6), ("1.5Ki", 1536),
                                            ("0.1", 1), ("3k", 3000), ("2E", 2 * 10**18)])
def test_kubernetes_byte_quantities_are_read_as_kubernetes_reads_them(text: str, size: int) -> None:
    assert quantity_bytes(text) == size


def test_a_profile_file_that_is_not_yaml_gets_one_line(project: Path) -> None:
    (project / "rlkube.yaml").write_text("gke-tpu: [unclosed\n")
    result = run_rlkube("clusters", cwd=project)
    assert result.returncode == 2
    assert "rlkube.yaml is not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_rendered_helm_values_template_to_the_rendered_manifests(project: Path, tmp_path: Path, helm: str) -> None:
    """`rlkube render --format helm-values` piped through the chart gives `rlkube render`'s objects."""
    flags = ["--cluster", "gke-tpu", "--tpu", "v5litepod-8", "--hparams", "dqn_cartpole", "--copies", "2",
             "--name", "parity", "--hparam-override", "lr=1e-3"]
    values = run_rlkube("render", *flags, "--format", "helm-values", cwd=project)
    manifests = run_rlkube("render", *flags, cwd=project)
    assert values.returncode == 0, values.stderr
    (tmp_path / "values.yaml").write_text(values.stdout)
    templated = subprocess.run([helm, "template", "parity", str(REPO / "helm" / "rlkube"), "-f",
                                str(tmp_path / "values.yaml")], capture_output=True, text=True, check=True).stdout

    def comparable(text: str) -> list[dict]:
        objects = [o for o in yaml.safe_load_all(text) if o]
        for obj in objects:  # two invocations: their submit time and command differ, nothing else may
            obj["metadata"]["annotations"].pop("rlkube.io/created")
            obj["metadata"]["annotations"].pop("rlkube.io/submit-command")
            obj.get("data", {}).pop("spec.json", None)
        return sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"]))

    assert comparable(templated) == comparable(manifests.stdout)
    assert [o["kind"] for o in comparable(manifests.stdout)].count("Job") == 1
