"""Cluster profiles: shipped as data, overridden per user and per project, validated with clear errors."""

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rlkube.cli.main import cli
from rlkube.errors import UserError
from rlkube.launch.clusters import Accelerator, RayWorkers, get_profile, load_profiles, quantity_bytes
from rlkube.launch.nodes import (
    INSTANCE_TYPE_LABEL,
    MACHINES,
    Machine,
    cpu_cores,
    node_fit_problem,
    selected_machines,
)
from rlkube.launch.targets.base import target_for
from tests.conftest import REPO, run_rlkube
from tests.fake_target import fake_profile


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
    ({"target": "kubernetes", "provider": "gke", "output": "gs://b", "accelerator": {"type": "tpu", "name": "v5e-1"},
      "price_per_hour": -1}, "price_per_hour must be a number > 0, the price of one TPU chip or GPU per hour"),
    ({"target": "kubernetes", "output": "gs://b", "price_per_hour": 1.2},
     "price_per_hour prices a TPU chip or GPU, and the profile has no accelerator"),
    ({"target": "kubernetes", "output": "gs://b", "env_from_secrets": ["Creds_1"]},
     "env_from_secrets must be a list of Secret names"),
    ({"target": "kubernetes", "output": "gs://b", "env_from_secrets": ["creds", "creds"]},
     "env_from_secrets names a Secret twice"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"cpu": 2}},
     "ray needs workers (pods per copy) and optionally cpu, memory and num_cpus per pod"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"workers": 2, "gpu": 1}}, "ray needs workers"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"workers": 0}}, "ray workers must be a whole number >= 1"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"workers": 2, "cpu": "4 cores"}},
     "ray cpu must be a positive Kubernetes CPU quantity such as 4, 0.5 or 500m, got '4 cores'"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"workers": 2, "cpu": "0m"}},
     "ray cpu must be a positive Kubernetes CPU quantity"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"workers": 2, "cpu": "250m", "num_cpus": 0.5}},
     "ray num_cpus (Ray's logical CPUs per worker pod) must be a whole number >= 1, got 0.5"),
    ({"target": "kubernetes", "output": "gs://b", "ray": {"workers": 2, "memory": "8GB"}},
     "ray memory must be a positive Kubernetes quantity of bytes"),
    ({"target": "local", "ray": {"workers": 2}}, "ray places actors on worker pods of a Kubernetes cluster"),
    ({"target": "kubernetes", "provider": "gke", "output": "gs://b", "ray": {"workers": 2},
      "accelerator": {"type": "tpu", "name": "v5litepod-16"}}, "a multi-host TPU slice (v5litepod-16) needs a pod"),
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


def test_gke_tpu_gives_each_copy_the_single_chip_its_learner_uses() -> None:
    profile = get_profile("gke-tpu")
    assert profile.accelerator.name == "v5litepod-1"
    assert (profile.tpu_slice.chips, profile.tpu_slice.topology) == (1, "1x1")


@pytest.mark.parametrize(("cluster", "sized_for"), [("gke-tpu", "ct5lp-hightpu-1t"), ("gke-gpu", "g2-standard-8"),
                                                     ("eks", "g5.2xlarge")])
def test_the_shipped_accelerator_profiles_fit_the_node_they_are_sized_for(cluster: str, sized_for: str) -> None:
    profile = get_profile(cluster)
    machine = MACHINES[sized_for]
    assert machine in selected_machines(profile)
    assert cpu_cores(profile.resources["cpu"]) <= machine.allocatable_cpus
    assert quantity_bytes(profile.resources["memory"]) <= machine.allocatable_memory
    assert node_fit_problem(profile) is None


@pytest.mark.parametrize(("cores", "reserved"), [(1, 0.06), (2, 0.07), (4, 0.08), (24, 0.13)])
def test_allocatable_cpus_follow_the_documented_reservation_tiers(cores: int, reserved: float) -> None:
    machine = Machine("m", "gke", cores, 16, "nvidia-l4", 1)
    assert machine.allocatable_cpus == pytest.approx(cores - reserved)


@pytest.mark.parametrize(("provider", "memory_gib", "reserved_mib"), [
    ("gke", 4, 1024 + 100),  # 25% of the first 4 GiB, and the eviction threshold
    ("gke", 48, 1024 + 819.2 + 819.2 + 0.06 * 32 * 1024 + 100),  # ct5lp-hightpu-1t
    ("eks", 32, 255 + 11 * 58 + 100),  # 58 pods on a g5.2xlarge
])
def test_allocatable_memory_is_capacity_less_the_providers_reservation(provider: str, memory_gib: int,
                                                                       reserved_mib: float) -> None:
    machine = Machine("m", provider, 8, memory_gib, "nvidia-l4", 1, max_pods=58)
    assert machine.allocatable_memory == pytest.approx(memory_gib * 2**30 - reserved_mib * 2**20, abs=1)


@pytest.mark.parametrize(("settings", "message"), [
    pytest.param({"resources": {"cpu": "24", "memory": "96Gi"}},
                 "cluster 'gke-tpu': a pod requests cpu 24 and memory 96Gi, more than ct5lp-hightpu-1t holds "
                 "(23.87 CPUs, 43.4Gi allocatable); lower the profile's resources to fit", id="tpu-host"),
    pytest.param({"accelerator": {"type": "gpu", "name": "nvidia-l4"}, "resources": {"cpu": "8", "memory": "8Gi"},
                  "node_selector": {"node.kubernetes.io/instance-type": "g2-standard-8"}},
                 "more than g2-standard-8 holds (7.91 CPUs", id="pinned-machine-type"),
    pytest.param({"accelerator": {"type": "gpu", "name": "nvidia-l4"}, "resources": {"cpu": "100"}},
                 "more than any node with nvidia-l4, up to g2-standard-96, holds", id="any-machine-with-the-gpu"),
    pytest.param({"accelerator": {"type": "gpu", "name": "nvidia-l4", "count": 16}},
                 "a copy asks for 16 nvidia-l4 GPUs, and no gke machine has more than 8", id="gpu-count"),
])
@pytest.mark.parametrize("command", ["render", "submit"])
def test_requests_that_fit_no_node_the_profile_selects_are_refused_in_one_line(
        project: Path, command: str, settings: dict, message: str) -> None:
    (project / "rlkube.yaml").write_text(yaml.safe_dump({"gke-tpu": settings}))
    result = run_rlkube(command, "--cluster", "gke-tpu", "--hparams", "dqn_cartpole", cwd=project,
                        env={"XDG_CONFIG_HOME": str(project / "config")})
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not result.stdout


@pytest.mark.parametrize(("settings", "copies", "line"), [
    pytest.param({}, 5, "at most 5 chips (5 copies of v5litepod-1, 1 chip each) for 72 h: 360 chip-hours\n",
                 id="default-deadline"),
    pytest.param({"accelerator": {"type": "tpu", "name": "v5litepod-4"}, "active_deadline_seconds": 5400,
                  "price_per_hour": 1.2}, 3,
                 "at most 12 chips (3 copies of v5litepod-4, 4 chips each) for 1.5 h: 18 chip-hours, cost ceiling "
                 "$21.60 at $1.20 per chip-hour\n", id="priced"),
    pytest.param({"active_deadline_seconds": None}, 1,
                 "holds 1 chip (1 copy of v5litepod-1, 1 chip each) with no deadline (active_deadline_seconds: "
                 "null): no ceiling on chip-hours\n", id="no-deadline"),
    pytest.param({"accelerator": {"type": "gpu", "name": "nvidia-l4", "count": 2}, "resources": {"cpu": "20"},
                  "price_per_hour": 0.7}, 2,
                 "at most 4 GPUs (2 copies of nvidia-l4, 2 GPUs each) for 72 h: 288 GPU-hours, cost ceiling $201.60 "
                 "at $0.70 per GPU-hour\n", id="gpus"),
])
def test_render_prints_what_the_experiment_may_hold_at_most_on_stderr(project: Path, settings: dict, copies: int,
                                                                        line: str) -> None:
    (project / "rlkube.yaml").write_text(yaml.safe_dump({"gke-tpu": settings}))
    result = run_rlkube("render", "--cluster", "gke-tpu", "--hparams", "dqn_cartpole", "--copies", str(copies),
                        cwd=project, env={"XDG_CONFIG_HOME": str(project / "config")})
    assert result.returncode == 0, result.stderr
    assert line.rstrip("\n") in result.stderr.splitlines()
    assert [o["kind"] for o in yaml.safe_load_all(result.stdout)][-1] == "Job"  # stdout stays the objects


def test_submit_and_its_dry_run_print_the_ceiling_too(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(project / "data"))
    fake_profile(project)
    profiles = yaml.safe_load((project / "rlkube.yaml").read_text())
    profiles["fake"].update(provider="gke", accelerator={"type": "tpu", "name": "v5litepod-1"},
                            active_deadline_seconds=3600, price_per_hour=1.25)
    (project / "rlkube.yaml").write_text(yaml.safe_dump(profiles))
    line = "at most 2 chips (2 copies of v5litepod-1, 1 chip each) for 1 h: 2 chip-hours, cost ceiling $2.50"
    submit = ["submit", "--cluster", "fake", "--hparams", "dqn_cartpole", "--train-steps", "100", "--copies", "2"]
    runner = CliRunner()
    dry_run = runner.invoke(cli, [*submit, "--dry-run"])
    assert dry_run.exit_code == 0, dry_run.output
    assert line in dry_run.stderr
    submitted = runner.invoke(cli, submit)
    assert submitted.exit_code == 0, submitted.output
    assert line in submitted.stdout


@pytest.mark.parametrize("change", [
    pytest.param({"node_selector": {INSTANCE_TYPE_LABEL: "g9-standard-500"}}, id="machine-type"),
    pytest.param({"accelerator": Accelerator("gpu", "nvidia-b900")}, id="gpu-model"),
])
def test_a_machine_or_gpu_not_in_the_table_is_not_checked(change: dict) -> None:
    profile = dataclasses.replace(get_profile("gke-gpu"), resources={"cpu": "500", "memory": "9Ti"}, **change)
    assert selected_machines(profile) == []
    assert node_fit_problem(profile) is None


@pytest.mark.parametrize(("ray", "ray_cpus"), [
    (RayWorkers(workers=1, cpu=4), 4),
    (RayWorkers(workers=1, cpu="1500m"), 2),  # Ray counts whole CPUs: rounded up
    (RayWorkers(workers=1, cpu=0.25), 1),
    (RayWorkers(workers=1, cpu="250m", num_cpus=4), 4),  # 16 waiting actors on a quarter of a core
])
def test_ray_workers_logical_cpus_are_the_pods_cpu_rounded_up_unless_given(ray: RayWorkers, ray_cpus: int) -> None:
    assert ray.ray_cpus == ray_cpus
