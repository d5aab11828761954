"""Cluster profiles: shipped as data, overridden per user and per project, validated with clear errors."""

import subprocess
from pathlib import Path

import pytest
import yaml

from rlkube.core.errors import UserError
from rlkube.launch.clusters import get_profile, load_profiles
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
    ({"target": "cloud"}, "target must be one of local, kubernetes, got 'cloud'"),
    ({"target": "kubernetes", "nodeselector": {}}, "'nodeselector'; did you mean node_selector"),
    ({"target": "kubernetes", "output": "/runs"}, "output /runs is a path in the pod, so name the pvc"),
    ({"target": "kubernetes", "output": "gs://b", "accelerator": {"type": "tpu", "name": "v5litepod-8"}},
     "TPUs need provider gke"),
    ({"target": "kubernetes", "provider": "gke", "output": "gs://b", "accelerator": {"type": "tpu", "name": "v9-8"}},
     "unknown TPU type 'v9-8'"),
    ({"target": "kubernetes", "output": "gs://b", "accelerator": {"type": "gpu"}},
     "accelerator needs type (tpu or gpu), name"),
    ({"target": "kubernetes", "output": "gs://b", "retries_per_copy": -1}, "retries_per_copy must be a whole number"),
])
def test_bad_profiles_name_the_file_profile_and_field(project: Path, profile: dict, message: str) -> None:
    (project / "rlkube.yaml").write_text(yaml.safe_dump({"broken": profile}))
    with pytest.raises(UserError, match=r"rlkube\.yaml") as caught:
        load_profiles()
    assert message in str(caught.value)
    assert "'broken'" in str(caught.value)


def test_a_profile_file_that_is_not_yaml_gets_one_line(project: Path) -> None:
    (project / "rlkube.yaml").write_text("gke-tpu: [unclosed\n")
    result = run_rlkube("clusters", cwd=project)
    assert result.returncode == 2
    assert "rlkube.yaml is not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_rendered_helm_values_template_to_the_rendered_manifests(project: Path, tmp_path: Path, helm: str) -> None:
    """`rlkube render --format helm-values` piped through the chart gives `rlkube render`'s objects."""
    flags = ["--cluster", "gke-tpu", "--tpu", "v5litepod-16", "--hparams", "dqn_cartpole", "--copies", "2",
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
    assert [o["kind"] for o in comparable(manifests.stdout)].count("Job") == 2
