"""The Helm chart helm/rlkube renders exactly the objects of rlkube/launch/render.py, and rejects bad values.

Each test writes helm_values(...) to a values file, runs the real `helm template` (or `helm lint`), and compares
the parsed objects with render_values(...) of the same values, whole object for whole object.
"""

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlkube.launch.clusters import Accelerator, ClusterProfile, RayWorkers, with_accelerator
from rlkube.launch.render import helm_values, render_values, values_to_yaml
from rlkube.launch.spec import ExperimentSpec, Provenance, build_spec
from rlkube.run.options import CopyPlan, TrainOptions
from tests.rendered_examples import PROVENANCE, example_profiles, example_spec

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "rlkube"
RELEASE = "rlkube-test"
SCHEMA_ERROR = "values don't meet the specifications of the schema"

Values = dict[str, Any]
Object = dict[str, Any]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def write_values(path: Path, values: Values) -> Path:
    # As `rlkube render --format helm-values` writes them, so strings Helm would misread (y, no) are covered.
    path.write_text(values_to_yaml(values))
    return path


def helm_template(helm: str, values_file: Path) -> list[Object]:
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(values_file))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def by_kind_and_name(objects: list[Object]) -> dict[tuple[str, str], Object]:
    keyed = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), f"duplicate objects: {sorted(keyed)}"
    return keyed


def assert_chart_renders_like_python(helm: str, values: Values, tmp_path: Path) -> None:
    rendered = helm_template(helm, write_values(tmp_path / "values.yaml", values))
    expected = render_values(values)
    assert by_kind_and_name(rendered) == by_kind_and_name(expected)


@pytest.mark.parametrize("profile_name", sorted(example_profiles()))
def test_chart_renders_the_same_objects_as_render_py_for_every_example(helm: str, profile_name: str,
                                                                       tmp_path: Path) -> None:
    profile = example_profiles()[profile_name]
    assert_chart_renders_like_python(helm, helm_values(example_spec(profile), profile), tmp_path)


def _spec(profile: ClusterProfile, copies: int | list[CopyPlan] = 3, name: str | None = None,
          provenance: Provenance = PROVENANCE, train: TrainOptions | None = None) -> ExperimentSpec:
    return build_spec(profile, train or TrainOptions("dqn_cartpole", seed=7), copies,
                      name=name or f"variant-{profile.name}", image=f"registry.example/rlkube:{profile.name}",
                      provenance=provenance)


def _variants() -> dict[str, Callable[[], tuple[ExperimentSpec, ClusterProfile]]]:
    """Profiles and specs beyond the examples: every branch of render.py, and strings that YAML reads as others."""
    profiles = example_profiles()
    kube, gke_gpu, gke_tpu, eks = profiles["kube"], profiles["gke-gpu"], profiles["gke-tpu"], profiles["eks"]

    def kube_extras() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(
            kube, name="kube-extras", resources={"cpu": "500m"}, node_selector={"pool": "y", "disk": "1:20"},
            tolerations=[{"key": "dedicated", "operator": "Equal", "value": "no", "effect": "NoExecute",
                          "tolerationSeconds": 300}, {"operator": "Exists"}],
            retries_per_copy=0, termination_grace_seconds=1_000_000, queue="team-a", priority_class="low",
            labels={"team": "rl", "cost-center": "on", "rlkube.io/experiment": "cannot-override"})
        return _spec(profile), profile

    def no_resources_one_copy() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(kube, name="bare", resources={})
        return _spec(profile, copies=1, name="no"), profile

    def dirty_tree_and_odd_strings() -> tuple[ExperimentSpec, ClusterProfile]:
        provenance = Provenance(git_commit=None, git_dirty=True, rlkube_version="x",
                                submit_command="rlkube submit --hparam-override 'lr=1e-3,gamma=0.9' # é ✓ \"q\" <&>",
                                created="2026-02-03T04:05:06+00:00")
        train = TrainOptions("dqn_cartpole", overrides="lr=1e-3,gamma=0.9", train_steps=1000, eval_episodes=0,
                           record_video=True)
        return _spec(kube, name="123", provenance=provenance, train=train), kube

    def gke_gpu_spot() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(gke_gpu, name="gke-gpu-spot", spot=True,
                                      accelerator=Accelerator("gpu", "nvidia-h100-80gb", 8))
        return _spec(profile), profile

    def generic_gpu() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(kube, name="generic-gpu", accelerator=Accelerator("gpu", "any", 2))
        return _spec(profile), profile

    def gke_tpu_3d_multihost_spot_label_overridden() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(with_accelerator(gke_tpu, "v4-16"), name="tpu-v4-16", spot=True,
                                      node_selector={"cloud.google.com/gke-spot": ""}, queue="tpu")
        return _spec(profile, copies=3), profile

    def eks_managed_spot() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(eks, name="eks-managed-spot", capacity_selector="managed", spot=True)
        return _spec(profile), profile

    def eks_karpenter_on_demand_cpu() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(eks, name="eks-cpu", accelerator=None, spot=False)
        return _spec(profile), profile

    def s3_compatible_no_deadline_ttl_zero() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(
            kube, name="minio", output="s3://runs", pvc=None, tmp_size_limit="500M", shm_size_limit="0.5Gi",
            ephemeral_storage="20G", active_deadline_seconds=None, ttl_seconds_after_finished=0,
            env={"AWS_ENDPOINT_URL": "http://minio:9000", "NO": "no", "PORT": 9000, "EMPTY": ""},
            env_from_secrets=["minio-credentials", "more.settings"])
        return _spec(profile), profile

    def copies_with_their_own_seeds_and_overrides() -> tuple[ExperimentSpec, ClusterProfile]:
        copies = [CopyPlan(0, 11, "gamma=0.9"), CopyPlan(1, 5), CopyPlan(2, 40, "lr=0.002,hidden_sizes=64;64")]
        return _spec(kube, copies=copies, name="planned"), kube

    def multihost_copies_with_their_own_seeds() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(with_accelerator(gke_tpu, "v5litepod-16"), name="planned-slices")
        return _spec(profile, copies=[CopyPlan(0, 100, "lr=0.01"), CopyPlan(1, 7)]), profile

    def multihost_slice_on_a_pvc() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(with_accelerator(gke_tpu, "v5litepod-16"), name="slices-on-a-pvc",
                                      output="/mnt/runs/", pvc="team-runs")
        return _spec(profile, copies=2), profile

    def keep_finished_jobs() -> tuple[ExperimentSpec, ClusterProfile]:
        profile = dataclasses.replace(with_accelerator(gke_tpu, "v5litepod-16"), name="keep",
                                      active_deadline_seconds=1, ttl_seconds_after_finished=None)
        return _spec(profile, copies=2), profile

    def ray_actors_with_odd_words_in_the_entrypoint() -> tuple[ExperimentSpec, ClusterProfile]:
        # A tracking group with a space, a quote and a dollar: the entrypoint is a shell command line.
        profile = dataclasses.replace(
            kube, name="ray-extras", ray=RayWorkers(workers=3, cpu="500m", memory="1.5Gi", num_cpus=4), queue="team-a",
            priority_class="low", node_selector={"pool": "cpu"}, tolerations=[{"operator": "Exists"}],
            env={"NO": "no", "PORT": 9000}, env_from_secrets=["minio-credentials"], active_deadline_seconds=None,
            shm_size_limit="500M")
        train = TrainOptions("dqn_cartpole", seed=7, num_workers=12, actors="ray", track="mlflow",
                             track_group="it's $HOME \"q\"", overrides="lr=1e-3,gamma=0.9")
        return _spec(profile, copies=[CopyPlan(0, 3, "gamma=0.5"), CopyPlan(1, 4)], train=train), profile

    def trial_of_a_sweep() -> tuple[ExperimentSpec, ClusterProfile]:
        spec = dataclasses.replace(_spec(kube, copies=2, name="tune-t3"), sweep="tune")
        return spec, kube

    return {f.__name__: f for f in (kube_extras, no_resources_one_copy, dirty_tree_and_odd_strings, gke_gpu_spot,
                                    generic_gpu, gke_tpu_3d_multihost_spot_label_overridden, eks_managed_spot,
                                    eks_karpenter_on_demand_cpu, s3_compatible_no_deadline_ttl_zero,
                                    copies_with_their_own_seeds_and_overrides, multihost_copies_with_their_own_seeds,
                                    multihost_slice_on_a_pvc, keep_finished_jobs, trial_of_a_sweep,
                                    ray_actors_with_odd_words_in_the_entrypoint)}


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_chart_renders_the_same_objects_as_render_py_for_every_branch(helm: str, variant: str,
                                                                      tmp_path: Path) -> None:
    spec, profile = _variants()[variant]()
    assert_chart_renders_like_python(helm, helm_values(spec, profile), tmp_path)


def chart_defaults() -> Values:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_chart_defaults_render_a_cpu_experiment_on_a_pvc_like_render_py(helm: str, tmp_path: Path) -> None:
    values = {**chart_defaults(), "experiment": "demo"}
    assert_chart_renders_like_python(helm, values, tmp_path)
    job = next(o for o in helm_template(helm, write_values(tmp_path / "values.yaml", values)) if o["kind"] == "Job")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "rlkube-runs"}} in volumes
    # Each release's experiment writes to a directory of its own, and its pods mount only that one.
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--output-dir", "/runs/demo"]
    assert {"name": "runs", "mountPath": "/runs/demo", "subPath": "demo"} in container["volumeMounts"]


def test_chart_values_yaml_has_every_key_of_helm_values() -> None:
    profile = example_profiles()["kube"]
    assert set(chart_defaults()) == set(helm_values(example_spec(profile), profile))


@pytest.mark.parametrize("profile_name", sorted(example_profiles()))
def test_helm_lint_strict_passes_for_every_example(helm: str, profile_name: str, tmp_path: Path) -> None:
    profile = example_profiles()[profile_name]
    values_file = write_values(tmp_path / "values.yaml", helm_values(example_spec(profile), profile))
    result = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert result.returncode == 0, result.stdout + result.stderr


def example_values() -> Values:
    profile = example_profiles()["kube"]
    return helm_values(example_spec(profile), profile)


@pytest.mark.parametrize("experiment", [None, ""])
def test_chart_without_an_experiment_name_fails_asking_for_one(helm: str, experiment: str | None,
                                                               tmp_path: Path) -> None:
    values = example_values()
    if experiment is None:
        del values["experiment"]  # the chart's default, ""
    else:
        values["experiment"] = experiment
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(write_values(tmp_path / "values.yaml", values)))
    assert result.returncode != 0
    assert "experiment is required" in result.stderr


@pytest.mark.parametrize(("change", "message"), [
    ({"pvc": None}, "output /runs is a path in the pod, so name the pvc that holds it"),
    ({"output": "gs://bucket/runs"}, "output gs://bucket/runs is not on the pvc"),
])
def test_chart_refuses_an_output_that_does_not_suit_the_pvc(helm: str, change: Values, message: str,
                                                           tmp_path: Path) -> None:
    values = {**example_values(), **change}
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(write_values(tmp_path / "values.yaml", values)))
    assert result.returncode != 0
    assert message in result.stderr


def _tpu_on_eks(values: Values) -> None:
    values["provider"] = "eks"
    values["accelerator"] = {"type": "tpu", "gkeAccelerator": "tpu-v5-lite-podslice", "topology": "2x4",
                             "chipsPerHost": 8, "hosts": 1}


BAD_VALUES: dict[str, tuple[Callable[[Values], Any], str]] = {
    "unknown provider": (lambda v: v.update(provider="azure"), "/provider"),
    "no copies": (lambda v: v.update(copies=0), "/copies"),
    "fractional copies": (lambda v: v.update(copies=1.5), "/copies"),
    "copies as a string": (lambda v: v.update(copies="5"), "/copies"),
    "experiment null": (lambda v: v.update(experiment=None), "experiment"),
    "experiment not a DNS label": (lambda v: v.update(experiment="DQN_pong"), "/experiment"),
    "experiment over 40 characters": (lambda v: v.update(experiment="a" * 41), "/experiment"),
    "unknown capacity selector": (lambda v: v.update(capacitySelector="fargate"), "/capacitySelector"),
    "unknown accelerator type": (lambda v: v.update(accelerator={"type": "fpga", "name": "x", "count": 1}),
                                 "/accelerator"),
    "gpu without a count": (lambda v: v.update(accelerator={"type": "gpu", "name": "nvidia-l4"}), "/accelerator"),
    "tpu on eks": (_tpu_on_eks, "/provider"),
    "resource quantity as a number": (lambda v: v["resources"].update(cpu=2), "/resources/cpu"),
    "negative retries": (lambda v: v.update(retriesPerCopy=-1), "/retriesPerCopy"),
    "bad toleration operator": (lambda v: v.update(tolerations=[{"key": "a", "operator": "In"}]), "/tolerations/0"),
    "args with --output-dir": (lambda v: v["args"].extend(["--output-dir", "/runs/shared"]), "/args"),
    "args with --output-dir=": (lambda v: v["args"].append("--output-dir=/runs/shared"), "/args"),
    "output with a trailing slash": (lambda v: v.update(output="/runs/"), "/output"),
    "output a relative path": (lambda v: v.update(output="runs"), "/output"),
    "misspelt key": (lambda v: v.update(copy=3), "copy"),
    "git dirty as a string": (lambda v: v["provenance"].update(gitDirty="false"), "/provenance/gitDirty"),
    "size not a quantity": (lambda v: v.update(tmpSizeLimit="8GB"), "/tmpSizeLimit"),
    "size as a number": (lambda v: v.update(shmSizeLimit=2), "/shmSizeLimit"),
    "ephemeral storage among the resources": (lambda v: v["resources"].update({"ephemeral-storage": "1Gi"}),
                                              "/resources"),
    "zero deadline": (lambda v: v.update(activeDeadlineSeconds=0), "/activeDeadlineSeconds"),
    "negative ttl": (lambda v: v.update(ttlSecondsAfterFinished=-1), "/ttlSecondsAfterFinished"),
    "env setting HOME": (lambda v: v.update(env=[{"name": "HOME", "value": "/root"}]), "/env/0/name"),
    "env value as a number": (lambda v: v.update(env=[{"name": "PORT", "value": 9000}]), "/env/0/value"),
    "env as a map": (lambda v: v.update(env={"A": "b"}), "/env"),
    "secret named twice": (lambda v: v.update(envFromSecrets=["a", "a"]), "/envFromSecrets"),
    "secret name not a DNS name": (lambda v: v.update(envFromSecrets=["A_b"]), "/envFromSecrets/0"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values_naming_the_key(helm: str, case: str, tmp_path: Path) -> None:
    change, where = BAD_VALUES[case]
    values = example_values()
    change(values)
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(write_values(tmp_path / "values.yaml", values)))
    assert result.returncode != 0
    assert SCHEMA_ERROR in result.stderr
    assert where in result.stderr
