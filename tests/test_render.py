"""Rendering is a pure function of spec and profile, checked field by field and against golden files."""

import copy as copy_module
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import yaml

from rlkube.errors import SUPERSEDED_EXIT_CODE, USER_ERROR_EXIT_CODE, UserError
from rlkube.launch.clusters import ClusterProfile, get_profile, quantity_bytes, with_accelerator
from rlkube.launch.render import render, tensorboard_objects
from rlkube.launch.spec import ExperimentSpec, build_spec, check_name
from rlkube.launch.tpu import resolve
from rlkube.run.options import CopyPlan, TrainOptions, read_copies
from tests.rendered_examples import (
    EXAMPLES_DIR,
    TENSORBOARD_FILE,
    example_profiles,
    example_spec,
    rendered_examples,
    rendered_tensorboard,
)


def test_golden_examples_are_current() -> None:
    expected = rendered_examples()
    assert sorted(p.name for p in EXAMPLES_DIR.glob("*.yaml")) == sorted(expected)
    for name, text in expected.items():
        assert (EXAMPLES_DIR / name).read_text() == text, f"{name} is stale: python -m tests.rendered_examples"
    assert TENSORBOARD_FILE.read_text() == rendered_tensorboard(), "stale: python -m tests.rendered_examples"


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("profile_name", sorted(example_profiles()))
def test_every_profile_renders_an_indexed_job_that_survives_preemption(profile_name: str) -> None:
    profile = example_profiles()[profile_name]
    objects = render(example_spec(profile), profile)
    kinds = [o["kind"] for o in objects]
    assert kinds[:2] == ["ServiceAccount", "ConfigMap"]
    for job in (o for o in objects if o["kind"] == "Job"):
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == spec["parallelism"]
        assert spec["backoffLimitPerIndex"] == profile.retries_per_copy
        assert spec["podFailurePolicy"]["rules"] == [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailIndex", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                    "values": [USER_ERROR_EXIT_CODE]}},
            {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                 "values": [SUPERSEDED_EXIT_CODE]}}]
        assert spec["activeDeadlineSeconds"] == profile.active_deadline_seconds == 3 * 24 * 3600
        assert spec["ttlSecondsAfterFinished"] == profile.ttl_seconds_after_finished == 7 * 24 * 3600
        pod = pod_spec(job)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["terminationGracePeriodSeconds"] >= 60
        assert pod["automountServiceAccountToken"] is False
        assert job["metadata"]["labels"]["rlkube.io/experiment"] == f"example-{profile_name}"
        assert {"rlkube.io/git-commit", "rlkube.io/git-dirty", "rlkube.io/image", "rlkube.io/version",
                "rlkube.io/submit-command"} <= set(job["metadata"]["annotations"])


@pytest.mark.parametrize("profile_name", sorted(example_profiles()))
def test_pods_write_only_to_size_limited_volumes_and_request_the_disk_they_may_use(profile_name: str) -> None:
    profile = example_profiles()[profile_name]
    spec = example_spec(profile)
    for job in (o for o in render(spec, profile) if o["kind"] == "Job"):
        pod = pod_spec(job)
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert writable == {"/tmp", "/dev/shm"} | ({spec.output_dir} if profile.pvc else set())
        env = {e["name"]: e["value"] for e in container["env"]}
        assert all(env[name].startswith("/tmp") for name in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME"))
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tmp"]["emptyDir"] == {"sizeLimit": profile.tmp_size_limit}
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": profile.shm_size_limit}
        resources = container["resources"]
        disk = resources["requests"]["ephemeral-storage"]
        assert disk == resources["limits"]["ephemeral-storage"] == profile.ephemeral_storage_size
        assert quantity_bytes(disk) == quantity_bytes(profile.tmp_size_limit) + 2**30


@pytest.mark.parametrize("profile", [get_profile("kube"), dataclasses.replace(
    with_accelerator(get_profile("gke-tpu"), "v5litepod-16"), output="/mnt/runs/", pvc="team-runs")],
    ids=["kube", "multihost-slices-on-a-pvc"])
def test_pods_on_a_pvc_mount_only_their_own_experiments_directory_as_their_output_dir(profile: ClusterProfile) -> None:
    spec = example_spec(profile)
    jobs = [o for o in render(spec, profile) if o["kind"] == "Job"]
    assert jobs
    for job in jobs:
        (container,) = pod_spec(job)["containers"]
        (runs,) = [m for m in container["volumeMounts"] if m["name"] == "runs"]
        assert runs == {"name": "runs", "mountPath": spec.output_dir, "subPath": spec.name}
        args = container["args"]
        assert args[args.index("--output-dir") + 1] == spec.output_dir == f"{profile.output.rstrip('/')}/{spec.name}"


def test_profile_env_follows_rlkubes_own_and_secrets_arrive_through_env_from() -> None:
    profile = example_profiles()["kube-minio"]
    (container,) = pod_spec(render(example_spec(profile), profile)[-1])["containers"]
    assert [e["name"] for e in container["env"]] == [
        "RLKUBE_EXPERIMENT", "HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "WANDB_DIR", "RLKUBE_CLUSTER", "RLKUBE_IMAGE",
        "RLKUBE_GIT_COMMIT", "AWS_ENDPOINT_URL", "AWS_REGION"]
    assert container["envFrom"] == [{"secretRef": {"name": "minio-credentials"}}]
    kube = get_profile("kube")
    assert "envFrom" not in pod_spec(render(example_spec(kube), kube)[-1])["containers"][0]


def test_a_profile_can_lift_the_deadline_and_keep_finished_jobs() -> None:
    profile = dataclasses.replace(example_profiles()["gke-tpu-multihost"], active_deadline_seconds=None,
                                  ttl_seconds_after_finished=None)
    jobs = [o for o in render(example_spec(profile), profile) if o["kind"] == "Job"]
    assert len(jobs) == 2
    assert all({"activeDeadlineSeconds", "ttlSecondsAfterFinished"}.isdisjoint(job["spec"]) for job in jobs)
    immediate = dataclasses.replace(profile, ttl_seconds_after_finished=0)
    assert render(example_spec(immediate), immediate)[-1]["spec"]["ttlSecondsAfterFinished"] == 0


@pytest.mark.parametrize("pvc", ["rlkube-runs", None])
def test_in_cluster_tensorboard_admits_no_connection_and_writes_only_to_tmp(pvc: str | None) -> None:
    policy, deployment, service = tensorboard_objects("rlkube", "image", pvc, "/runs" if pvc else "gs://b/runs")
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
    assert "ingress" not in policy["spec"]
    assert "egress" not in policy["spec"]
    # Its runs on a PVC, mounted by the node, it needs no network at all; a bucket needs egress.
    assert policy["spec"]["policyTypes"] == (["Ingress", "Egress"] if pvc else ["Ingress"])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")} == {"/tmp"}
    claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ([{"claimName": pvc, "readOnly": True}] if pvc else [])
    assert container["resources"]["limits"]["ephemeral-storage"] == "2Gi"
    assert container["readinessProbe"] != container["livenessProbe"]


def test_in_cluster_tensorboard_is_scheduled_where_the_profiles_pods_may_run() -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "rl", "effect": "NoSchedule"}
    _, deployment, _ = tensorboard_objects("rlkube", "image", "runs", "/runs", {"pool": "rl"}, [toleration])
    spec = deployment["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"pool": "rl"}
    assert spec["tolerations"] == [toleration]
    _, anywhere, _ = tensorboard_objects("rlkube", "image", "runs", "/runs")
    assert "nodeSelector" not in anywhere["spec"]["template"]["spec"]
    assert "tolerations" not in anywhere["spec"]["template"]["spec"]


@pytest.mark.parametrize("profile_name", sorted(example_profiles()))
def test_no_credentials_in_configmaps_args_or_env(profile_name: str) -> None:
    profile = example_profiles()[profile_name]
    text = str(render(example_spec(profile), profile)).lower()
    for secret_word in ("password", "secret_access_key", "private_key", "token:"):
        assert secret_word not in text


TRACKER_URI_ENV = {"mlflow": "MLFLOW_TRACKING_URI", "wandb": "WANDB_BASE_URL"}


@pytest.mark.parametrize("tracker", sorted(TRACKER_URI_ENV))
def test_a_tracked_pod_learns_its_provenance_and_tracker_uri_from_its_env(tracker: str) -> None:
    profile = example_profiles()["kube-minio"]
    train = TrainOptions(hparams="dqn_cartpole", track=tracker, track_uri="http://tracking.ml:5000",
                         track_project="pong")
    spec = example_spec(profile, train)
    (container,) = pod_spec(render(spec, profile)[-1])["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[TRACKER_URI_ENV[tracker]] == "http://tracking.ml:5000"
    assert (env["RLKUBE_CLUSTER"], env["RLKUBE_IMAGE"], env["RLKUBE_GIT_COMMIT"]) == (
        profile.name, spec.image, spec.provenance.git_commit)
    assert env["WANDB_DIR"] == "/tmp"  # the root file system is read-only
    args = container["args"]
    assert args[args.index("--track") + 1] == tracker
    assert args[args.index("--track-project") + 1] == "pong"
    assert "--track-uri" not in args
    assert "http://tracking.ml:5000" not in args


def test_track_uri_replaces_the_profiles_default_tracker_uri() -> None:
    profile = dataclasses.replace(example_profiles()["kube"], env={"MLFLOW_TRACKING_URI": "http://default:5000"})
    train = TrainOptions(hparams="dqn_cartpole", track="mlflow", track_uri="http://mine:5000")
    (container,) = pod_spec(render(example_spec(profile, train), profile)[-1])["containers"]
    assert [e["value"] for e in container["env"] if e["name"] == "MLFLOW_TRACKING_URI"] == ["http://mine:5000"]


CREDENTIALS = {"WANDB_API_KEY": "wandb-key-0123456789", "MLFLOW_TRACKING_PASSWORD": "mlflow-password-4567",
               "MLFLOW_TRACKING_TOKEN": "mlflow-token-89ab", "AWS_SECRET_ACCESS_KEY": "aws-secret-cdef"}


@pytest.mark.parametrize("tracker", sorted(TRACKER_URI_ENV))
def test_no_credential_in_the_submitters_environment_reaches_any_object(tracker: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The submitter's shell holds the trackers' and the bucket's credentials; the pods get them only from the
    Secret the profile names, so no value may appear in the Job, the ConfigMap or the ServiceAccount."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    profile = example_profiles()["kube-minio"]
    train = TrainOptions(hparams="dqn_cartpole", track=tracker, track_uri="http://tracking.ml:5000")
    objects = render(build_spec(profile, train, 2, name="tracked"), profile)
    text = json.dumps(objects)
    assert not [name for name, value in CREDENTIALS.items() if value in text]
    (container,) = pod_spec(objects[-1])["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "minio-credentials"}}]


@pytest.mark.parametrize("uri", ["https://alice:s3cret-pw@mlflow.example:5000", "https://s3cret-pw@mlflow.example",
                                 "https://mlflow.example/?access_token=s3cret-pw"])
def test_a_track_uri_carrying_credentials_is_refused_without_echoing_them(uri: str) -> None:
    profile = example_profiles()["kube"]
    with pytest.raises(UserError, match="carries credentials") as refused:
        build_spec(profile, TrainOptions(hparams="dqn_cartpole", track="mlflow", track_uri=uri), 1, name="leaky")
    assert "s3cret-pw" not in str(refused.value)
    assert "mlflow.example" in str(refused.value)


@pytest.mark.parametrize(("tpu", "topology", "chips"), [
    pytest.param(None, "1x1", "1", id="the-profile's-single-chip-default"),
    pytest.param("v5litepod-8", "2x4", "8", id="by-tpu"),
])
def test_single_host_tpu_selects_the_slice_and_requests_its_chips(tpu: str | None, topology: str, chips: str) -> None:
    profile = get_profile("gke-tpu")
    profile = with_accelerator(profile, tpu) if tpu else profile
    job = render(example_spec(profile), profile)[-1]
    pod = pod_spec(job)
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                   "cloud.google.com/gke-tpu-topology": topology}
    assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == chips
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert job["spec"]["completions"] == 5


def test_multi_host_tpu_becomes_one_slice_per_copy_with_stable_hostnames() -> None:
    profile = example_profiles()["gke-tpu-multihost"]
    objects = render(example_spec(profile), profile)
    service = next(o for o in objects if o["kind"] == "Service")
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert service["spec"]["clusterIP"] == "None"
    assert [j["metadata"]["name"] for j in jobs] == ["example-gke-tpu-multihost-copy-0",
                                                     "example-gke-tpu-multihost-copy-1"]
    for copy, job in enumerate(jobs):
        assert job["spec"]["completions"] == 4  # v5litepod-16: 16 chips, 4 per host
        pod = pod_spec(job)
        assert pod["subdomain"] == service["metadata"]["name"]
        assert pod["containers"][0]["args"][-2:] == ["--copy-index", str(copy)]
        assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == "4"
        assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "4x4"
        assert pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true"


def test_eks_selects_capacity_type_for_karpenter_and_managed_node_groups() -> None:
    profiles = example_profiles()
    karpenter = pod_spec(render(example_spec(profiles["eks"]), profiles["eks"])[-1])
    managed = render(example_spec(profiles["eks-managed-ondemand"]), profiles["eks-managed-ondemand"])
    assert karpenter["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert pod_spec(managed[-1])["nodeSelector"] == {"eks.amazonaws.com/capacityType": "ON_DEMAND"}
    assert managed[-1]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert pod_spec(managed[-1])["priorityClassName"] == "rl-batch"
    service_account = render(example_spec(profiles["eks"]), profiles["eks"])[0]
    assert service_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_gke_gpu_selects_the_accelerator_label_and_gpu_limits() -> None:
    profile = get_profile("gke-gpu")
    pod = pod_spec(render(example_spec(profile), profile)[-1])
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize(("name", "accelerator", "topology", "chips", "hosts"), [
    ("v5litepod-8", "tpu-v5-lite-podslice", "2x4", 8, 1),
    ("v5litepod-16", "tpu-v5-lite-podslice", "4x4", 16, 4),
    ("v4-8", "tpu-v4-podslice", "2x2x1", 4, 1),
    ("v4-32", "tpu-v4-podslice", "2x2x4", 16, 4),
    ("v5p-128", "tpu-v5p-slice", "4x4x4", 64, 16),
    ("v6e-256", "tpu-v6e-slice", "16x16", 256, 64),
])
def test_familiar_tpu_names_map_to_gke_labels(name: str, accelerator: str, topology: str, chips: int,
                                              hosts: int) -> None:
    tpu = resolve(name)
    assert (tpu.accelerator, tpu.topology, tpu.chips, tpu.hosts) == (accelerator, topology, chips, hosts)


@pytest.mark.parametrize("name", ["v3-8", "v5litepod-12", "v4-6", "tpu-v5-lite-podslice", "v6e"])
def test_unknown_tpu_names_get_a_clear_error(name: str) -> None:
    with pytest.raises(UserError, match=f"unknown TPU type '{name}'"):
        resolve(name)


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "x" * 41, "a.b"])
def test_bad_experiment_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="bad experiment name"):
        check_name(name)


def test_spec_checks_hparams_before_rendering() -> None:
    with pytest.raises(UserError, match="unknown hparams set"):
        build_spec(get_profile("kube"), TrainOptions("dqn_pongg"), 1)
    with pytest.raises(UserError, match="unknown TPU type"):
        with_accelerator(get_profile("gke-tpu"), "v9-8").tpu_slice  # noqa: B018


def test_output_goes_to_the_profiles_storage() -> None:
    pvc = render(example_spec(get_profile("kube")), get_profile("kube"))[-1]
    volumes = {v["name"]: v for v in pod_spec(pvc)["volumes"]}
    assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == "rlkube-runs"
    assert "/runs/example-kube" in pod_spec(pvc)["containers"][0]["args"]
    gcs = get_profile("gke-tpu")
    args = pod_spec(render(example_spec(gcs), gcs)[-1])["containers"][0]["args"]
    assert args[args.index("--output-dir") + 1] == "gs://BUCKET/rlkube/example-gke-tpu"
    assert dataclasses.replace(gcs).pvc is None


def test_profile_labels_reach_every_object_but_cannot_replace_rlkubes() -> None:
    profile = dataclasses.replace(get_profile("kube"), labels={"team": "rl", "rlkube.io/experiment": "other"})
    for obj in render(example_spec(profile), profile):
        assert obj["metadata"]["labels"]["team"] == "rl"
        assert obj["metadata"]["labels"]["rlkube.io/experiment"] == "example-kube"
    job = render(example_spec(profile), profile)[-1]
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "rl"


def test_a_sweeps_trial_labels_its_job_pods_and_config_map_with_the_sweep() -> None:
    profile = get_profile("kube")
    trial = build_spec(profile, TrainOptions("ppo_cartpole"), 2, name="tune-t3", sweep="tune")
    service_account, config_map, job = render(trial, profile)
    for labelled in (service_account["metadata"], config_map["metadata"], job["metadata"],
                     job["spec"]["template"]["metadata"]):
        assert labelled["labels"]["rlkube.io/sweep"] == "tune"
    alone = build_spec(profile, TrainOptions("ppo_cartpole"), 2, name="alone")
    assert all("rlkube.io/sweep" not in obj["metadata"]["labels"] for obj in render(alone, profile))


PLANNED = [CopyPlan(0, 11, "gamma=0.9"), CopyPlan(1, 5), CopyPlan(2, 40, "lr=0.002,batch_size=32")]


def test_a_spec_carries_each_copys_seed_and_overrides_to_its_pods(tmp_path: Path) -> None:
    profile = get_profile("kube")
    spec = build_spec(profile, TrainOptions("dqn_cartpole", overrides="lr=0.001", seed=3), PLANNED, name="planned")
    config_map, job = render(spec, profile)[1:]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    args = pod_spec(job)["containers"][0]["args"]
    assert args[args.index("--copies-file") + 1] == "/etc/rlkube/copies.json"
    (tmp_path / "copies.json").write_text(config_map["data"]["copies.json"])
    assert read_copies(tmp_path / "copies.json") == PLANNED
    # The experiment's own hparams and spec stay as they were; the copies' live in their own file.
    assert yaml.safe_load(config_map["data"]["hparams.yaml"])["lr"] == 0.001
    assert "copies" not in json.loads(config_map["data"]["spec.json"])


def test_by_default_copy_i_gets_seed_plus_i() -> None:
    spec = build_spec(get_profile("kube"), TrainOptions("dqn_cartpole", seed=7), 3)
    assert spec.copies == [CopyPlan(0, 7), CopyPlan(1, 8), CopyPlan(2, 9)]


def test_a_spec_round_trips_through_its_dict_and_json() -> None:
    train = TrainOptions("dqn_cartpole", overrides="lr=0.001", env="CartPole-v1", train_steps=500, eval_episodes=2,
                         test_episodes=0, seed=3, record_video=True, num_workers=2)
    spec = build_spec(get_profile("kube"), train, PLANNED, name="round-trip")
    assert ExperimentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_record_from_before_trials_named_their_sweep_still_reads() -> None:
    spec = build_spec(get_profile("kube"), TrainOptions("dqn_cartpole"), 1, name="older")
    older = {key: value for key, value in spec.to_dict().items() if key != "sweep"}
    assert ExperimentSpec.from_dict(older) == spec
    assert spec.sweep is None


def test_a_record_from_before_copies_had_their_own_seeds_still_reads() -> None:
    spec = build_spec(get_profile("kube"), TrainOptions("dqn_cartpole", seed=4), 2, name="older")
    older = {**spec.to_dict(), "copies": 2}  # how the store recorded copies then: a count, copy i at seed+i
    assert ExperimentSpec.from_dict(older) == spec


@pytest.mark.parametrize(("copies", "message"), [
    ([CopyPlan(1, 0), CopyPlan(0, 1)], r"numbered 0, 1, 2, … in order, and these are \[1, 0\]"),
    ([], "needs at least one copy"),
    ([CopyPlan(0, 0), CopyPlan(1, 1, "lrr=1")], "copy 1: unknown hparam 'lrr'; did you mean lr?"),
    ([CopyPlan(0, 0, "env=CartPole-v9")], "copy 0: unknown env 'CartPole-v9'"),
])
def test_a_spec_refuses_copies_it_cannot_run(copies: list[CopyPlan], message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_spec(get_profile("kube"), TrainOptions("dqn_cartpole"), copies)


def test_a_ray_profile_renders_a_ray_job_per_copy_with_the_learner_on_the_head() -> None:
    profile = example_profiles()["gke-gpu-ray"]
    assert profile.ray is not None
    spec = example_spec(profile)
    objects = render(spec, profile)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ConfigMap", "RayJob", "RayJob"]
    # Without Ray, the same experiment's Job: the head's pod is its pod, but for the command Ray starts.
    (job,) = [o for o in render(spec, dataclasses.replace(profile, ray=None)) if o["kind"] == "Job"]
    job_pod = pod_spec(job)
    job_args = job_pod["containers"][0].pop("args")
    del job_pod["containers"][0]["command"]
    for copy, ray_job in enumerate(o for o in objects if o["kind"] == "RayJob"):
        assert ray_job["apiVersion"] == "ray.io/v1"
        assert ray_job["metadata"]["name"] == f"{spec.name}-copy-{copy}"
        assert ray_job["metadata"]["labels"] == {**job["metadata"]["labels"], "rlkube.io/copy": str(copy)}
        assert ray_job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
        ray_spec = ray_job["spec"]
        assert shlex.split(ray_spec["entrypoint"]) == ["rlkube", "train", *job_args, "--copy-index", str(copy)]
        assert {"--num-workers", "--actors"} <= set(job_args)
        assert ray_spec["submissionMode"] == "K8sJobMode"  # a submitter pod of rlkube's template (below)
        assert ray_spec["shutdownAfterJobFinishes"] is True
        assert ray_spec["backoffLimit"] == profile.retries_per_copy
        assert ray_spec["activeDeadlineSeconds"] == profile.active_deadline_seconds
        head = ray_spec["rayClusterSpec"]["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"  # actors go to the workers
        head_pod = copy_module.deepcopy(head["template"]["spec"])
        head_env = head_pod["containers"][0]["env"]
        # A stopped Ray job's driver has the pod's grace period to checkpoint before Ray kills it.
        stop_wait = {"name": "RAY_JOB_STOP_WAIT_TIME_S", "value": str(profile.termination_grace_seconds)}
        head_env.remove(stop_wait)
        assert head_pod == job_pod
        pod_labels = {**job["spec"]["template"]["metadata"]["labels"], "rlkube.io/copy": str(copy)}
        assert head["template"]["metadata"]["labels"] == pod_labels
        (workers,) = ray_spec["rayClusterSpec"]["workerGroupSpecs"]
        assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == profile.ray.workers
        assert workers["rayStartParams"]["num-cpus"] == str(profile.ray.ray_cpus)
        assert workers["template"]["metadata"]["labels"] == pod_labels
        worker_pod = workers["template"]["spec"]
        (actor,) = worker_pod["containers"]
        assert actor["resources"]["requests"]["cpu"] == str(profile.ray.cpu)
        assert actor["resources"]["limits"] == {"memory": profile.ray.memory,
                                                "ephemeral-storage": profile.ephemeral_storage_size}
        for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "restartPolicy"):
            assert worker_pod[key] == job_pod[key], key
        assert actor["securityContext"] == job_pod["containers"][0]["securityContext"]
        assert {m["mountPath"] for m in actor["volumeMounts"]} == {"/tmp", "/dev/shm"}
        assert "nodeSelector" not in worker_pod  # no GPU node
        submitter_pod = ray_spec["submitterPodTemplate"]["spec"]
        assert ray_spec["submitterPodTemplate"]["metadata"]["labels"] == pod_labels
        (submitter,) = submitter_pod["containers"]
        assert (submitter["name"], submitter["image"]) == ("submitter", actor["image"])
        assert "command" not in submitter  # KubeRay's: `ray job submit` unless submitted, then `ray job logs --follow`
        assert "envFrom" not in submitter  # neither Secrets nor the runs: the learner writes them
        assert {v["name"] for v in submitter_pod["volumes"]} == {"tmp", "shm"}
        for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "restartPolicy"):
            assert submitter_pod[key] == job_pod[key], key
        assert submitter["securityContext"] == job_pod["containers"][0]["securityContext"]
        # Ray's object store fits in /dev/shm, on the head and the workers alike.
        for start in (head["rayStartParams"], workers["rayStartParams"]):
            assert int(start["object-store-memory"]) < quantity_bytes(profile.shm_size_limit)


def test_a_ray_profile_needs_ray_actors_to_place_on_its_workers() -> None:
    profile = example_profiles()["gke-gpu-ray"]
    for train in (TrainOptions("dqn_cartpole"), TrainOptions("dqn_cartpole", num_workers=4)):
        with pytest.raises(UserError, match=r"runs actors on 2 Ray worker pods per copy: add --num-workers N "
                                            r"--actors ray"):
            example_spec(profile, train)
