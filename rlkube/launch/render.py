"""Render an experiment for Kubernetes: pure functions from spec and profile to API objects.

Rendering goes through the Helm chart's values: `helm_values` turns a spec and profile into the
values of helm/rlkube, and `render_values` builds the objects from those values exactly as the
chart's templates do. A test holds the two renderers to the same output.
"""

import dataclasses
import json
import shlex
from typing import Any

import yaml

from rlkube import __version__
from rlkube.errors import SUPERSEDED_EXIT_CODE, USER_ERROR_EXIT_CODE
from rlkube.launch.clusters import EPHEMERAL_HEADROOM, ClusterProfile, RayWorkers, format_bytes, quantity_bytes
from rlkube.launch.spec import ExperimentSpec, experiment_output_dir
from rlkube.run.options import (
    CLUSTER_ENV,
    EXPERIMENT_ID_ENV,
    GIT_COMMIT_ENV,
    IMAGE_ENV,
    TRACKER_URI_ENV,
    copies_json,
)
from rlkube.rundir.layout import COPIES_FILE, HPARAMS_FILE

Object = dict[str, Any]

CONFIG_MOUNT = "/etc/rlkube"
RUN_AS_USER = 1000
# A RayJob's submitter runs `ray job submit` and `ray job logs --follow`: one Python process that waits.
SUBMITTER_RESOURCES = ("100m", "512Mi")


def helm_values(spec: ExperimentSpec, profile: ClusterProfile) -> dict[str, Any]:
    """The helm/rlkube values that render this experiment on this cluster."""
    accelerator: dict[str, Any] | None = None
    if (tpu_slice := profile.tpu_slice) is not None:
        accelerator = {"type": "tpu", "gkeAccelerator": tpu_slice.accelerator, "topology": tpu_slice.topology,
                       "chipsPerHost": tpu_slice.chips_per_host, "hosts": tpu_slice.hosts}
    elif profile.accelerator is not None:
        accelerator = {"type": "gpu", "name": profile.accelerator.name, "count": profile.accelerator.count}
    provenance = spec.provenance
    return {
        "experiment": spec.name,
        "namespace": spec.namespace,
        "copies": len(spec.copies),
        "image": spec.image,
        "version": __version__,
        # A pod knows only its Job index: its copy's seed and overrides it reads from the table in the ConfigMap.
        "args": [*dataclasses.replace(spec.train, track_uri="").args(), "--copies-file",
                 f"{CONFIG_MOUNT}/{COPIES_FILE}"],
        "output": profile.output.rstrip("/"),
        "pvc": None if spec.output_dir.startswith(("gs://", "s3://")) else profile.pvc,
        "resources": {k: str(v) for k, v in profile.resources.items()},
        "provider": profile.provider,
        "accelerator": accelerator,
        "spot": profile.spot,
        "capacitySelector": profile.capacity_selector,
        "serviceAccountAnnotations": dict(profile.service_account_annotations),
        "labels": {k: str(v) for k, v in profile.labels.items()},
        "sweep": spec.sweep,
        "nodeSelector": {k: str(v) for k, v in profile.node_selector.items()},
        "tolerations": list(profile.tolerations),
        "retriesPerCopy": profile.retries_per_copy,
        "terminationGracePeriodSeconds": profile.termination_grace_seconds,
        "queue": profile.queue,
        "priorityClass": profile.priority_class,
        "tmpSizeLimit": profile.tmp_size_limit,
        "shmSizeLimit": profile.shm_size_limit,
        "ephemeralStorage": profile.ephemeral_storage_size,
        "activeDeadlineSeconds": profile.active_deadline_seconds,
        "ttlSecondsAfterFinished": profile.ttl_seconds_after_finished,
        "env": [{"name": name, "value": str(value)} for name, value in _trainer_env(spec, profile).items()],
        "envFromSecrets": list(profile.env_from_secrets),
        "ray": None if profile.ray is None else _ray_values(profile.ray, profile.shm_size_limit),
        "provenance": {"gitCommit": provenance.git_commit or "unknown", "gitDirty": provenance.git_dirty,
                       "submitCommand": provenance.submit_command, "created": provenance.created},
        # The spec, with its hparams and its copies in files of their own (and its id in the trainer's env).
        "config": {
            COPIES_FILE: copies_json(spec.copies),
            HPARAMS_FILE: yaml.safe_dump(spec.hparams, sort_keys=False),
            "spec.json": json.dumps({k: v for k, v in spec.to_dict().items()
                                     if k not in ("hparams", "copies", "experiment_id")},
                                    indent=2, sort_keys=True) + "\n",
        },
    }


def _ray_values(ray: RayWorkers, shm_size_limit: str) -> dict[str, Any]:
    # Ray's object store is shared memory: half of /dev/shm, leaving the rest to the actors' vector envs (Ray puts
    # a store larger than /dev/shm on disk instead, slowly).
    object_store = quantity_bytes(shm_size_limit) // 2
    return {"workers": ray.workers, "cpu": str(ray.cpu), "numCpus": str(ray.ray_cpus), "memory": ray.memory,
            "objectStoreMemory": str(object_store)}


def _trainer_env(spec: ExperimentSpec, profile: ClusterProfile) -> dict[str, str]:
    """The trainer's provenance (what --track records), the profile's env, and --track-uri as the tracker's own
    variable, which replaces the profile's default for it. Credentials never come this way: they come from the
    profile's Secrets (envFrom), and the spec refuses a --track-uri that holds any."""
    env = {CLUSTER_ENV: spec.cluster, IMAGE_ENV: spec.image}
    if spec.experiment_id:  # the owner of the copies' run directories (rlkube.storage.ownership)
        env[EXPERIMENT_ID_ENV] = spec.experiment_id
    if spec.provenance.git_commit:
        env[GIT_COMMIT_ENV] = spec.provenance.git_commit
    env.update({name: str(value) for name, value in profile.env.items()})
    if spec.train.track and spec.train.track_uri:
        env[TRACKER_URI_ENV[spec.train.track]] = spec.train.track_uri
    return env


def labels(values: dict[str, Any]) -> dict[str, str]:
    """The profile's extra labels, then rlkube's own (which an extra label cannot replace); a sweep's trials also
    carry their sweep, so `-l rlkube.io/sweep=<name>` selects them all."""
    return {
        **values["labels"],
        "app.kubernetes.io/name": "rlkube",
        "app.kubernetes.io/instance": values["experiment"],
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": "rlkube",
        "app.kubernetes.io/version": values["version"],
        "rlkube.io/experiment": values["experiment"],
        **({"rlkube.io/sweep": values["sweep"]} if values["sweep"] else {}),
    }


def annotations(values: dict[str, Any]) -> dict[str, str]:
    provenance = values["provenance"]
    return {
        "rlkube.io/git-commit": provenance["gitCommit"],
        "rlkube.io/git-dirty": str(provenance["gitDirty"]).lower(),
        "rlkube.io/image": values["image"],
        "rlkube.io/version": values["version"],
        "rlkube.io/submit-command": provenance["submitCommand"],
        "rlkube.io/created": provenance["created"],
    }


def _metadata(values: dict[str, Any], name: str, extra_labels: dict[str, str] | None = None) -> Object:
    return {"name": name, "namespace": values["namespace"], "labels": {**labels(values), **(extra_labels or {})},
            "annotations": annotations(values)}


def _scheduling(values: dict[str, Any]) -> tuple[dict[str, str], list[Object], dict[str, str]]:
    """Node selector, tolerations and accelerator limits for the profile's hardware."""
    selector: dict[str, str] = {}
    tolerations: list[Object] = []
    limits: dict[str, str] = {}
    accelerator = values["accelerator"]
    provider = values["provider"]
    if accelerator and accelerator["type"] == "tpu":
        selector["cloud.google.com/gke-tpu-accelerator"] = accelerator["gkeAccelerator"]
        selector["cloud.google.com/gke-tpu-topology"] = accelerator["topology"]
        tolerations.append({"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"})
        limits["google.com/tpu"] = str(accelerator["chipsPerHost"])
    elif accelerator and accelerator["type"] == "gpu":
        if provider == "gke":
            selector["cloud.google.com/gke-accelerator"] = accelerator["name"]
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
        limits["nvidia.com/gpu"] = str(accelerator["count"])
    if provider == "gke" and values["spot"]:
        selector["cloud.google.com/gke-spot"] = "true"
        tolerations.append({"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                            "effect": "NoSchedule"})
    if provider == "eks":
        if values["capacitySelector"] == "karpenter":
            selector["karpenter.sh/capacity-type"] = "spot" if values["spot"] else "on-demand"
        else:
            selector["eks.amazonaws.com/capacityType"] = "SPOT" if values["spot"] else "ON_DEMAND"
    selector.update(values["nodeSelector"])
    tolerations.extend(values["tolerations"])
    return selector, tolerations, limits


def _writable_env() -> list[Object]:
    """The root file system is read-only: home and caches (TensorFlow's, matplotlib's, pip's, rlkube's mirror of a
    run in a bucket, and W&B's run files before they are uploaded) go to the /tmp emptyDir."""
    return [{"name": "HOME", "value": "/tmp"}, {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"}, {"name": "WANDB_DIR", "value": "/tmp"}]


def _container_security() -> Object:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def output_dir(values: dict[str, Any]) -> str:
    """The experiment's run directory, its --output-dir: <output>/<experiment>, as build_spec names it."""
    return experiment_output_dir(values["output"], values["experiment"])


def _scratch(values: dict[str, Any]) -> tuple[list[Object], list[Object]]:
    """The mounts and volumes of /tmp, and of /dev/shm in memory: a container runtime's default is 64 MB, less than
    --num-workers actors' observation slots and async vector envs share, and Ray's object store (it counts against
    the memory limit)."""
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
    volumes: list[Object] = [{"name": "tmp", "emptyDir": {"sizeLimit": values["tmpSizeLimit"]}},
                             {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": values["shmSizeLimit"]}}]
    return mounts, volumes


def _pod(values: dict[str, Any], container: Object, volumes: list[Object], selector: dict[str, str],
         tolerations: list[Object]) -> Object:
    """A pod of the experiment: as its own ServiceAccount, without an API token, as a non-root user."""
    spec: Object = {
        "restartPolicy": "Never",
        "serviceAccountName": values["experiment"],
        # Training needs no Kubernetes API access, so the pod gets no token.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": values["terminationGracePeriodSeconds"],
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                            "fsGroup": RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    if values["priorityClass"]:
        spec["priorityClassName"] = values["priorityClass"]
    return spec


def _ray_head_env(values: dict[str, Any], args: list[str] | None) -> list[Object]:
    """On a Ray head (args None): a stopped Ray job (the RayJob deleted by `rlkube cancel`) gets SIGTERM, and
    Ray's SIGKILL follows after RAY_JOB_STOP_WAIT_TIME_S (3 s by default); the pod's grace period lets the learner
    checkpoint, as a trainer pod's does."""
    if args is not None:
        return []
    return [{"name": "RAY_JOB_STOP_WAIT_TIME_S", "value": str(values["terminationGracePeriodSeconds"])}]


def _pod_spec(values: dict[str, Any], args: list[str] | None, subdomain: str | None) -> Object:
    """The trainer's pod, which runs `rlkube train args`; with args None, a Ray head's (KubeRay starts Ray in it,
    and the copy runs as the RayJob's entrypoint)."""
    selector, tolerations, accelerator_limits = _scheduling(values)
    resources = values["resources"]
    # Node disk is requested and capped, so a copy that fills /tmp is evicted alone rather than its neighbours.
    disk = {"ephemeral-storage": values["ephemeralStorage"]}
    requests = {**resources, **disk}
    limits = {**({"memory": resources["memory"]} if "memory" in resources else {}), **disk, **accelerator_limits}
    scratch_mounts, scratch_volumes = _scratch(values)
    mounts = [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}, *scratch_mounts]
    volumes: list[Object] = [{"name": "config", "configMap": {"name": values["experiment"]}}, *scratch_volumes]
    if values["pvc"]:
        # Only the experiment's own directory of the volume, at its --output-dir: no other experiment's runs are
        # there to read or overwrite. (The kubelet creates it, owned by root, with the mode and group of the
        # volume's root: see manifests/setup/pvc.yaml.)
        mounts.append({"name": "runs", "mountPath": output_dir(values), "subPath": values["experiment"]})
        volumes.append({"name": "runs", "persistentVolumeClaim": {"claimName": values["pvc"]}})
    # Credentials (e.g. an S3-compatible server's keys) come from Secrets, so they never appear in the Job.
    env_from = [{"secretRef": {"name": name}} for name in values["envFromSecrets"]]
    container = {
        "name": "trainer",
        "image": values["image"],
        **({"command": ["rlkube", "train"], "args": args} if args is not None else {}),
        "env": [{"name": "RLKUBE_EXPERIMENT", "value": values["experiment"]}, *_writable_env(),
                *_ray_head_env(values, args), *values["env"]],
        **({"envFrom": env_from} if env_from else {}),
        "resources": {"requests": requests, "limits": limits},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    spec = _pod(values, container, volumes, selector, tolerations)
    if subdomain:
        spec["subdomain"] = subdomain
    return spec


def _lifetime(values: dict[str, Any]) -> Object:
    """A hung copy gives its accelerator back at the deadline; a finished Job is cleaned up after the TTL."""
    lifetime = {"activeDeadlineSeconds": values["activeDeadlineSeconds"],
                "ttlSecondsAfterFinished": values["ttlSecondsAfterFinished"]}
    return {key: value for key, value in lifetime.items() if value is not None}


def _job(values: dict[str, Any], name: str, indices: int, args: list[str], extra_labels: dict[str, str],
         subdomain: str | None) -> Object:
    metadata = _metadata(values, name, extra_labels)
    if values["queue"]:
        metadata["labels"]["kueue.x-k8s.io/queue-name"] = values["queue"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": indices,
            "parallelism": indices,
            # One failing index (a seed, or a slice's host) does not stop the others.
            "backoffLimitPerIndex": values["retriesPerCopy"],
            # A preempted or evicted pod is retried without counting as a failure; a user error (`rlkube train`'s
            # exit code 2) fails its copy at once, as every retry would fail the same way; a writer superseded by
            # its copy's replacement pod (exit code 3, rlkube.storage.ownership) is no failure of the copy.
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailIndex", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                        "values": [USER_ERROR_EXIT_CODE]}},
                {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                     "values": [SUPERSEDED_EXIT_CODE]}},
            ]},
            **_lifetime(values),
            "template": {"metadata": {"labels": {**labels(values), **extra_labels}},
                         "spec": _pod_spec(values, args, subdomain)},
        },
    }


def _ray_side_pod_spec(values: dict[str, Any], name: str, cpu: str, memory: str) -> Object:
    """A RayJob's pod beside its learner: a Ray worker's (`actor`: holds actors) or the job's submitter's
    (`submitter`: submits the entrypoint and streams the driver's output). CPU and memory only, no accelerator,
    nothing of the runs (the learner writes them) nor the profile's Secrets (neither needs credentials). The
    profile's own node selector and tolerations place it."""
    mounts, volumes = _scratch(values)
    disk = {"ephemeral-storage": values["ephemeralStorage"]}
    container = {
        "name": name,
        "image": values["image"],
        "env": [{"name": "RLKUBE_EXPERIMENT", "value": values["experiment"]}, *_writable_env(), *values["env"]],
        "resources": {"requests": {"cpu": cpu, "memory": memory, **disk},
                      "limits": {"memory": memory, **disk}},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    return _pod(values, container, volumes, dict(values["nodeSelector"]), list(values["tolerations"]))


def _ray_job(values: dict[str, Any], copy: int, args: list[str]) -> Object:
    """A copy as a RayJob (KubeRay): its learner is the job's driver on the Ray head, with the trainer's pod (its
    accelerator, volumes and env), and its --num-workers actors are Ray actors on the worker pods."""
    ray = values["ray"]
    copy_label = {"rlkube.io/copy": str(copy)}
    metadata = _metadata(values, f"{values['experiment']}-copy-{copy}", copy_label)
    if values["queue"]:
        metadata["labels"]["kueue.x-k8s.io/queue-name"] = values["queue"]
    pod_labels = {**labels(values), **copy_label}
    object_store = {"object-store-memory": ray["objectStoreMemory"]}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata,
        "spec": {
            # Ray gives the driver RAY_ADDRESS, so the copy's actors join this cluster.
            "entrypoint": shlex.join(["rlkube", "train", *args]),
            # A submitter pod (a Job of KubeRay's, from the template below) submits the entrypoint to the head's
            # dashboard and follows the driver's output: its log is the copy's log. (In HTTPMode the driver's output
            # stays in a file on the head.) The template is rlkube's, so it runs under Pod Security `restricted`.
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": {"metadata": {"labels": dict(pod_labels)},
                                     "spec": _ray_side_pod_spec(values, "submitter", *SUBMITTER_RESOURCES)},
            "shutdownAfterJobFinishes": True,
            # A failed copy is retried on a new Ray cluster of its own; the other copies run on.
            "backoffLimit": values["retriesPerCopy"],
            **({"activeDeadlineSeconds": values["activeDeadlineSeconds"]}
               if values["activeDeadlineSeconds"] is not None else {}),
            "rayClusterSpec": {
                # No CPUs for Ray on the head: every actor is placed on a worker, the learner keeps the head.
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0", **object_store},
                                  "template": {"metadata": {"labels": dict(pod_labels)},
                                               "spec": _pod_spec(values, None, None)}},
                "workerGroupSpecs": [{
                    "groupName": "actors",
                    "replicas": ray["workers"],
                    "minReplicas": ray["workers"],
                    "maxReplicas": ray["workers"],
                    "rayStartParams": {"num-cpus": ray["numCpus"], **object_store},
                    "template": {"metadata": {"labels": dict(pod_labels)},
                                 "spec": _ray_side_pod_spec(values, "actor", ray["cpu"], ray["memory"])},
                }],
            },
        },
    }


def render_values(values: dict[str, Any]) -> list[Object]:
    """The experiment's objects, in the order they are created."""
    name = values["experiment"]
    args = [*values["args"], "--output-dir", output_dir(values)]
    objects: list[Object] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**_metadata(values, name),
                      "annotations": {**annotations(values), **values["serviceAccountAnnotations"]}},
         "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(values, name), "data": values["config"]},
    ]
    if values["ray"]:
        # A RayJob per copy: a Ray job has one driver (the copy's learner), and a copy's retry starts a Ray cluster
        # of its own without stopping the other copies.
        objects.extend(_ray_job(values, copy, [*args, "--copy-index", str(copy)]) for copy in range(values["copies"]))
        return objects
    accelerator = values["accelerator"]
    hosts = accelerator["hosts"] if accelerator and accelerator["type"] == "tpu" else 1
    if hosts == 1:
        # One Indexed Job: index i is copy i, read by `rlkube train` from JOB_COMPLETION_INDEX.
        objects.append(_job(values, name, values["copies"], args, {}, None))
        return objects
    # A multi-host slice per copy: an Indexed Job of `hosts` pods each, with stable hostnames
    # <job>-<host>.<experiment> from a headless Service; the index is the host, the copy is fixed.
    objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _metadata(values, name),
                    "spec": {"clusterIP": "None", "selector": {"rlkube.io/experiment": name}}})
    objects.extend(_job(values, f"{name}-copy-{copy}", hosts, [*args, "--copy-index", str(copy)],
                        {"rlkube.io/copy": str(copy)}, name) for copy in range(values["copies"]))
    return objects


def render(spec: ExperimentSpec, profile: ClusterProfile) -> list[Object]:
    return render_values(helm_values(spec, profile))


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated dicts out in full: manifests are read by people, not only by parsers."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002  (yaml.SafeDumper's signature)
        return True


# YAML 1.1 words that Helm's parser reads as booleans where PyYAML writes them as plain strings.
_YAML11_BOOLEANS = {"y", "n", "yes", "no", "on", "off", "true", "false"}


def _quote_ambiguous(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if text.lower() in _YAML11_BOOLEANS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_PlainDumper.add_representer(str, _quote_ambiguous)


def to_yaml(objects: list[Object]) -> str:
    return yaml.dump_all(objects, Dumper=_PlainDumper, sort_keys=False)


def values_to_yaml(values: dict[str, Any]) -> str:
    return yaml.dump(values, Dumper=_PlainDumper, sort_keys=False)


TENSORBOARD_NAME = "rlkube-tensorboard"
TENSORBOARD_PORT = 6006
TENSORBOARD_TMP = "1Gi"  # TensorBoard writes only its .tensorboard-info files


def tensorboard_objects(namespace: str, image: str, pvc: str | None, mount_path: str,
                        node_selector: dict[str, str] | None = None,
                        tolerations: list[Object] | None = None) -> list[Object]:
    """An in-cluster TensorBoard over every experiment's run directory, shared by the namespace.

    It is scheduled as the profile's own scheduling settings say (not its accelerator's: TensorBoard needs none),
    so it lands where the profile's pods may run and can mount their volume.
    """
    meta_labels = {"app.kubernetes.io/name": "rlkube", "app.kubernetes.io/component": "tensorboard",
                   "app.kubernetes.io/managed-by": "rlkube"}
    selector = {"app.kubernetes.io/name": "rlkube", "app.kubernetes.io/component": "tensorboard"}
    metadata = {"name": TENSORBOARD_NAME, "namespace": namespace, "labels": meta_labels}
    disk = {"ephemeral-storage": format_bytes(quantity_bytes(TENSORBOARD_TMP) + EPHEMERAL_HEADROOM)}
    container: Object = {
        "name": "tensorboard",
        "image": image,
        "command": ["tensorboard"],
        "args": ["--logdir", mount_path, "--host", "0.0.0.0", "--port", str(TENSORBOARD_PORT), "--reload_multifile",
                 "true"],
        "ports": [{"name": "http", "containerPort": TENSORBOARD_PORT}],
        "env": _writable_env(),
        "resources": {"requests": {"cpu": "250m", "memory": "1Gi", **disk}, "limits": {"memory": "2Gi", **disk}},
        # Ready once it serves; restarted only if it stops accepting connections (a first load of many event
        # files keeps it busy, not dead).
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 30, "periodSeconds": 30,
                          "failureThreshold": 4},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes: list[Object] = [{"name": "tmp", "emptyDir": {"sizeLimit": TENSORBOARD_TMP}}]
    if pvc:
        container["volumeMounts"].append({"name": "runs", "mountPath": mount_path, "readOnly": True})
        volumes.append({"name": "runs", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}})
    # No connection in: `rlkube tensorboard` port-forwards through the kubelet, which NetworkPolicy does not filter,
    # and nothing else needs to connect (TensorBoard has no authentication). None out either when the runs are on a
    # PVC, which the node mounts; a logdir in a bucket needs DNS and the bucket.
    policy_types = ["Ingress", "Egress"] if pvc else ["Ingress"]
    return [
        # First, so the pod is never reachable.
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": dict(metadata),
         "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": policy_types}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(metadata),
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": meta_labels},
                               "spec": {"automountServiceAccountToken": False,
                                        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER,
                                                            "seccompProfile": {"type": "RuntimeDefault"}},
                                        **({"nodeSelector": dict(node_selector)} if node_selector else {}),
                                        **({"tolerations": list(tolerations)} if tolerations else {}),
                                        "containers": [container], "volumes": volumes}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": dict(metadata),
         "spec": {"selector": selector, "ports": [{"name": "http", "port": TENSORBOARD_PORT,
                                                   "targetPort": TENSORBOARD_PORT}]}},
    ]
