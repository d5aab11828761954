"""rlkube doctor's checks of a profile's cluster, as the caller: what a submitter cannot read is probed or warned of.

A submitter's Role (manifests/setup/rbac.yaml) reads no namespaces, Roles, cluster-wide admission policies, claims or
nodes. Where the caller may read them, they are read; otherwise a server-side dry-run answers (the namespace exists
if a dry-run create in it is not refused as "not found"; the admission policy is in effect if it refuses a ConfigMap
without rlkube's labels), or the line says what an admin should check.
"""

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from rlkube import __version__
from rlkube.errors import UserError
from rlkube.launch import doctor
from rlkube.launch.clusters import ClusterProfile
from rlkube.launch.doctor import Check, failed, passed, warned
from rlkube.launch.render import Object, render
from rlkube.launch.spec import Provenance, build_spec
from rlkube.launch.targets.kubernetes import api as kube
from rlkube.launch.targets.kubernetes.submit import create_all, delete_experiment
from rlkube.run.options import TrainOptions

# Indexed Jobs' backoffLimitPerIndex (beta and on by default from 1.29) and admissionregistration.k8s.io/v1
# ValidatingAdmissionPolicy (GA in 1.30): render.py and manifests/setup use both.
MIN_VERSION = (1, 30)
# What rlkube does in its namespace: manifests/setup/rbac.yaml's Role, rule by rule (tests/test_doctor_local.py
# holds the two equal). (API group, resource[/subresource], verbs)
ACCESS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("create", "get", "list", "watch", "delete")),
    ("", "configmaps", ("create", "get", "list", "delete")),
    ("", "serviceaccounts", ("create", "get", "list", "delete")),
    ("", "services", ("create", "get", "list", "delete")),
    ("", "pods", ("get", "list", "watch", "delete")),
    ("", "pods/log", ("get",)),
    ("", "pods/portforward", ("create", "get")),
    ("apps", "deployments", ("create", "get", "list")),
    ("apps", "replicasets", ("get",)),
    ("networking.k8s.io", "networkpolicies", ("create", "get", "delete")),
    ("ray.io", "rayjobs", ("create", "get", "list", "watch", "delete")),
)
REQUIRED_LABELS = {"app.kubernetes.io/name": "rlkube", "pod-security.kubernetes.io/enforce": "restricted"}
ADMISSION_POLICIES = ("rlkube-submitters", "rlkube-allowed", "rlkube-experiment-owners")
PARAMETERS = "rlkube-admission"
TRAINERS_POLICY = "rlkube-trainers"
KUEUE = ("kueue.x-k8s.io", "localqueues")
SETUP = "manifests/setup"
POD_CHECK_TIMEOUT_S = 300.0


def _status(error: ApiException) -> int:
    return int(error.status or 0)


def check_version(git_version: str, host: str, user: str) -> Check:
    numbers = tuple(int(part) for part in git_version.lstrip("v").split("-")[0].split("+")[0].split(".")[:2])
    if numbers < MIN_VERSION:
        return failed("api-server", f"{host} runs Kubernetes {git_version}; rlkube needs 1.30 or newer (Indexed Jobs' "
                      "backoffLimitPerIndex, ValidatingAdmissionPolicy)", "upgrade the cluster to 1.30 or newer")
    return passed("api-server", f"{host}: Kubernetes {git_version}, you are {user}")


def missing_access(allowed: dict[str, bool]) -> list[str]:
    return [what for what, ok in allowed.items() if not ok]


def check_access(namespace: str, allowed: dict[str, bool]) -> Check:
    missing = missing_access(allowed)
    if missing:
        return failed("access", f"you may not {', '.join(missing)} in {namespace}",
                      f"ask an admin to bind you to the Role rlkube-submitter ({SETUP}/rbac.yaml: group "
                      f"rlkube-submitters)")
    return passed("access", f"you may do all {len(allowed)} things rlkube does in {namespace}")


def check_parameters(profile: ClusterProfile, image: str, data: dict[str, str] | None) -> Check:
    """The admission policy's parameters admit the profile's image registry, Secrets and ServiceAccount identity."""
    where = f"the ConfigMap {PARAMETERS} in {profile.namespace}"
    fix_file = f"{SETUP}/parameters.yaml"
    if data is None:
        return failed("parameters", f"no {where}: the admission policy admits nothing of rlkube's",
                      f"edit and apply {fix_file}")

    def entries(key: str) -> list[str]:
        return [line.strip() for line in (data.get(key) or "").splitlines() if line.strip()]

    problems = []
    if not any(image == entry or image.startswith(f"{entry}/") for entry in entries("registries")):
        problems.append(f"registries lacks the image's registry ({image.rsplit('/', 1)[0]})")
    missing_secrets = [name for name in profile.env_from_secrets if name not in entries("secrets")]
    if missing_secrets:
        problems.append(f"secrets lacks {', '.join(missing_secrets)}")
    annotations = [f"{key}={value}" for key, value in profile.service_account_annotations.items()]
    missing_annotations = [a for a in annotations if a not in entries("serviceAccountAnnotations")]
    if missing_annotations:
        problems.append(f"serviceAccountAnnotations lacks {', '.join(missing_annotations)}")
    if problems:
        return failed("parameters", f"{where}: {'; '.join(problems)}", f"add them to {fix_file} and apply it")
    return passed("parameters", f"{where} admits the profile's image, Secrets and identity")


class ClusterDoctor:
    """The checks of one profile's cluster through one client.

    Requests go out as plain JSON rather than through the client's API classes: the client builds each class's
    models when it is first named (about a second of CPU for CoreV1Api alone), and the checks need none of them.
    """

    def __init__(self, profile: ClusterProfile, api: client.ApiClient, image: str) -> None:
        self.profile = profile
        self.api = api
        self.image = image
        self.namespace = profile.namespace

    def request(self, method: str, path: str, body: Object | None = None,
                query: list[tuple[str, str]] | None = None) -> Any:
        """The API server's JSON answer, or an ApiException with its status and body."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        serialized = self.api.param_serialize(method, path, query_params=query or [], header_params=headers,
                                              body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*serialized, _request_timeout=kube.REQUEST_TIMEOUT)
        response.read()
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = response.data.decode(errors="replace")
            raise error
        return json.loads(response.data)

    def user(self) -> str:
        """Who the API server knows the caller as (a SelfSubjectReview, asked once)."""
        if not hasattr(self, "_user"):
            review = self.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            self._user = str(review["status"]["userInfo"]["username"])
        return self._user

    def _in_namespace(self, group_version: str, plural: str, name: str = "") -> str:
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return f"{prefix}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def api_server(self) -> Check:
        version = self.request("GET", "/version")["gitVersion"]
        return check_version(version, self.api.configuration.host, self.user())

    def _probe_configmap(self) -> ApiException | None:
        """A dry-run create of a ConfigMap without rlkube's labels: what the API server refuses it with, if it does."""
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": f"rlkube-doctor-{uuid.uuid4().hex[:8]}",
                             "annotations": {kube.CREATOR_ANNOTATION: self.user()}}}
        try:
            self.request("POST", self._in_namespace("v1", "configmaps"), body, [("dryRun", "All")])
        except ApiException as error:
            return error
        return None

    def namespace_check(self) -> Check:
        fix = f"kubectl apply -f {SETUP}/namespace.yaml (with the namespace's name set to {self.namespace})"
        try:
            labels = self.request("GET", f"/api/v1/namespaces/{self.namespace}")["metadata"].get("labels", {})
        except ApiException as error:
            if _status(error) == 404:
                return failed("namespace", f"{self.namespace} does not exist", fix)
            if _status(error) != 403:
                raise
            refused = self._probe_configmap()
            if refused is not None and _status(refused) == 404 and "namespaces" in (refused.body or ""):
                return failed("namespace", f"{self.namespace} does not exist", fix)
            return warned("namespace", f"{self.namespace} exists; its labels are not readable as you",
                          f"ask an admin to check it carries {_labels(REQUIRED_LABELS)}")
        wrong = {key: value for key, value in REQUIRED_LABELS.items() if labels.get(key) != value}
        if wrong:
            return failed("namespace", f"{self.namespace} lacks {_labels(wrong)} (Pod Security restricted, and the "
                          "admission policy's selector)", f"kubectl label namespace {self.namespace} {_labels(wrong)}")
        return passed("namespace", f"{self.namespace} enforces Pod Security restricted")

    def access(self) -> Check:
        wanted = [(group, resource, verb) for group, resource, verbs in ACCESS for verb in verbs]

        def allowed(item: tuple[str, str, str]) -> bool:
            group, resource, verb = item
            resource, _, subresource = resource.partition("/")
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": {"resourceAttributes": {"namespace": self.namespace, "group": group, "verb": verb,
                                                      "resource": resource, "subresource": subresource}}}
            answer = self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
            return bool(answer["status"].get("allowed"))

        # One review per verb, as `kubectl auth can-i` does: a rules review is incomplete under webhook authorizers
        # (GKE's IAM, EKS's access entries). In parallel: some thirty requests.
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(allowed, wanted))
        return check_access(self.namespace, {f"{verb} {resource}": ok
                                             for (_, resource, verb), ok in zip(wanted, answers, strict=True)})

    def role(self) -> Check:
        name = "rlkube-submitter"
        try:
            self.request("GET", self._in_namespace("rbac.authorization.k8s.io/v1", "roles", name))
        except ApiException as error:
            if _status(error) == 403:
                return passed("role", "not readable as you; the access check above is what it grants")
            if _status(error) == 404:
                return failed("role", f"no Role {name} in {self.namespace}",
                              f"kubectl apply -n {self.namespace} -f {SETUP}/rbac.yaml")
            raise
        return passed("role", f"Role {name} is in {self.namespace}")

    def admission(self) -> Check:
        fix = f"kubectl apply -f {SETUP}/admission-policy.yaml (an admin)"
        group = "/apis/admissionregistration.k8s.io/v1"
        try:
            policies, bindings = ({item["metadata"]["name"] for item in self.request("GET", f"{group}/{kind}")["items"]}
                                  for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"))
        except ApiException as error:
            if _status(error) != 403:
                raise
            refused = self._probe_configmap()
            if refused is not None and "rule managed-by" in (refused.body or ""):
                return passed("admission", "in effect: it refused a dry-run ConfigMap without rlkube's labels")
            if refused is not None:
                return warned("admission", f"cannot tell: a dry-run ConfigMap was refused ({kube.reason(refused)})",
                              "ask an admin to check the ValidatingAdmissionPolicies rlkube-*")
            return failed("admission", "not in effect: a dry-run ConfigMap without rlkube's labels was admitted", fix)
        missing = [name for name in ADMISSION_POLICIES if name not in policies or name not in bindings]
        if missing:
            return failed("admission", f"missing ValidatingAdmissionPolicy or binding {', '.join(missing)}", fix)
        return passed("admission", f"policies and bindings {', '.join(ADMISSION_POLICIES)} installed")

    def parameters(self) -> Check:
        try:
            data = self.request("GET", self._in_namespace("v1", "configmaps", PARAMETERS)).get("data", {})
        except ApiException as error:
            if _status(error) != 404:
                raise
            data = None
        return check_parameters(self.profile, self.image, data)

    def network_policy(self) -> Check:
        try:
            self.request("GET", self._in_namespace("networking.k8s.io/v1", "networkpolicies", TRAINERS_POLICY))
        except ApiException as error:
            if _status(error) != 404:
                raise
            return failed("network-policy", f"no NetworkPolicy {TRAINERS_POLICY} in {self.namespace}",
                          f"kubectl apply -n {self.namespace} -f {SETUP}/networkpolicy.yaml")
        return passed("network-policy", f"NetworkPolicy {TRAINERS_POLICY} admits only trainers' traffic")

    def claim(self) -> Check:
        name = self.profile.pvc
        try:
            claim = self.request("GET", self._in_namespace("v1", "persistentvolumeclaims", name))
        except ApiException as error:
            if _status(error) == 403:
                return warned("runs-volume", f"the claim {name} is not readable as you",
                              f"ask an admin to check it exists ({SETUP}/pvc.yaml)")
            if _status(error) != 404:
                raise
            return failed("runs-volume", f"no PersistentVolumeClaim {name} in {self.namespace}",
                          f"kubectl apply -n {self.namespace} -f {SETUP}/pvc.yaml")
        if claim["metadata"].get("deletionTimestamp"):
            return failed("runs-volume", f"PersistentVolumeClaim {name} is being deleted (its pods keep it until they "
                          "end)", f"kubectl apply -n {self.namespace} -f {SETUP}/pvc.yaml once it is gone")
        return passed("runs-volume", f"PersistentVolumeClaim {name} is {claim.get('status', {}).get('phase')}")

    def queue(self) -> Check:
        group, plural = KUEUE
        try:
            preferred = self.request("GET", f"/apis/{group}")["preferredVersion"]["groupVersion"]
        except ApiException as error:
            if _status(error) != 404:
                raise
            return failed("queue", f"the profile names LocalQueue {self.profile.queue}, and Kueue is not installed",
                          "install Kueue (kueue.sigs.k8s.io), or remove queue from the profile")
        try:
            self.request("GET", self._in_namespace(preferred, plural, self.profile.queue))
        except ApiException as error:
            if _status(error) == 403:
                return warned("queue", f"LocalQueue {self.profile.queue} is not readable as you",
                              "ask an admin to check it exists")
            if _status(error) != 404:
                raise
            return failed("queue", f"no LocalQueue {self.profile.queue} in {self.namespace}",
                          f"create it (kind LocalQueue, {group}), or fix the profile's queue")
        return passed("queue", f"LocalQueue {self.profile.queue} exists")

    def kuberay(self) -> Check:
        group, version, _ = kube.CUSTOM_KINDS["RayJob"]  # the RayJob version rlkube writes: KubeRay 1.0+ serve it
        fix = "install the KubeRay operator, 1.5 or newer (docs/scaling/ray-on-kubernetes.md), or remove ray from " \
              "the profile"
        try:
            served = [v["version"] for v in self.request("GET", f"/apis/{group}")["versions"]]
        except ApiException as error:
            if _status(error) != 404:
                raise
            return failed("kuberay", "the profile runs copies as RayJobs, and KubeRay is not installed (the cluster "
                          f"serves no {group} API)", fix)
        if version not in served:
            return failed("kuberay", f"the cluster serves {group} {', '.join(served)}, not {version}, which rlkube's "
                          "RayJobs are", fix)
        return passed("kuberay", f"KubeRay's RayJob kind ({group}/{version}) is served")

    def accelerators(self, node_selector: dict[str, str]) -> Check:
        wanted = _labels(node_selector)
        may_make = "a node pool's autoscaler (or auto-provisioning) may still make them; a submitter cannot see that"
        selector = ",".join(f"{key}={value}" for key, value in node_selector.items())
        try:
            nodes = self.request("GET", "/api/v1/nodes", query=[("labelSelector", selector)])["items"]
        except ApiException as error:
            if _status(error) != 403:
                raise
            return warned("accelerators", f"nodes are not readable as you, so none seen with {wanted}", may_make)
        if not nodes:
            return warned("accelerators", f"no node carries {wanted}", may_make)
        return passed("accelerators", f"{len(nodes)} nodes carry {wanted}")

    def pods(self, objects: list[Object], name: str) -> Check:
        """Run the probe Job (a render of the profile whose container writes a marker) and delete it again."""
        try:
            create_all(self.api, objects, None)
            deadline = time.monotonic() + POD_CHECK_TIMEOUT_S
            while (state := _job_state(self.api, self.namespace, name)) is None and time.monotonic() < deadline:
                time.sleep(0.5)
            story = "" if state == "Complete" else _what_the_pod_said(self.api, self.namespace, name)
        finally:
            delete_experiment(self.api, name, self.namespace)
        if state == "Complete":
            return passed("pods", f"a pod of the profile listed, wrote and deleted a marker in {self.profile.output}")
        ended = f"timed out after {POD_CHECK_TIMEOUT_S:.0f} s" if state is None else "failed"
        return failed("pods", f"the probe Job {ended}{story}: the pods cannot write to {self.profile.output}",
                      "check the profile's env_from_secrets or service_account_annotations, and that the identity "
                      "they give may write there")


def _job_state(api: client.ApiClient, namespace: str, name: str) -> str | None:
    for job in kube.list_jobs(api, namespace, name):
        for condition in job.status.conditions or []:
            if condition.type in ("Complete", "Failed") and condition.status == "True":
                return condition.type
    return None


def _what_the_pod_said(api: client.ApiClient, namespace: str, name: str) -> str:
    """Why a probe pod is stuck (ImagePullBackOff, ...) or the last line it wrote, as ' (...)'; '' if nothing."""
    for pod in kube.list_pods(api, namespace, name):
        for status in pod.status.container_statuses or []:
            if status.state.waiting is not None:
                return f" ({status.state.waiting.reason})"
        try:
            lines = client.CoreV1Api(api).read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=1,
                                                                  _request_timeout=kube.REQUEST_TIMEOUT)
        except ApiException:
            continue
        if lines.strip():
            return f" ({lines.strip().splitlines()[-1]})"
    return ""


def _labels(labels: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in labels.items())


# What the probe pod runs: the marker round trip of check_bucket, with the pod's identity, in its own directory. The
# listing comes after the write: in a bucket, a directory that holds nothing yet does not exist.
PROBE = ("import sys, uuid\nfrom rlkube.storage.filesystems import filesystem_for\n"
         "fs, path = filesystem_for(sys.argv[1])\nfs.makedirs(path, exist_ok=True)\n"
         "marker = f'{path}/.rlkube-doctor-{uuid.uuid4().hex[:12]}'\nfs.pipe_file(marker, b'rlkube doctor')\n"
         "assert marker.rsplit('/', 1)[1] in [p.rsplit('/', 1)[1] for p in fs.ls(path, detail=False)]\n"
         "fs.rm_file(marker)\n")


def probe_objects(profile: ClusterProfile, image: str, name: str) -> list[Object]:
    """The profile's render of a one-copy experiment without retries, its container running PROBE in the experiment's
    directory. A Ray profile's is its Job: the learner's pod, the Ray head, is exactly that Job's pod (render.py),
    and the only pod with the runs and the profile's Secrets."""
    provenance = Provenance(git_commit=None, git_dirty=False, rlkube_version=__version__,
                            submit_command="rlkube doctor --pods", created=datetime.now(UTC).isoformat())
    job_profile = dataclasses.replace(profile, retries_per_copy=0, ray=None)
    spec = build_spec(job_profile, TrainOptions("dqn_cartpole", seed=0), 1, name=name, image=image,
                      provenance=provenance)
    objects = render(spec, job_profile)
    for obj in objects:
        if obj["kind"] == "Job":
            (container,) = obj["spec"]["template"]["spec"]["containers"]
            container["command"] = ["python", "-c", PROBE]
            container["args"] = [spec.output_dir]
    return objects


def cluster_checks(profile: ClusterProfile, image: str, pods: bool) -> list[Check]:
    """Every check of the profile's cluster; stops at the first line if the API server is out of reach."""
    try:
        api = kube.connect(profile.context)
        cluster = ClusterDoctor(profile, api, image)
        with kube.api_errors("asking the API server its version", api.configuration.host):
            checks = [cluster.api_server()]
    except UserError as error:
        return [failed("api-server", str(error), "fix the kubeconfig or the profile's context")]
    name = f"rlkube-doctor-{uuid.uuid4().hex[:8]}"
    try:
        objects = probe_objects(profile, image, name)
    except UserError as error:  # what a submit would refuse before it sends anything, e.g. requests no node fits
        checks.append(failed("render", str(error), "fix the profile (rlkube clusters lists its files)"))
        objects = []
    steps: list[tuple[str, Callable[[], Check]]] = [
        ("namespace", cluster.namespace_check), ("access", cluster.access), ("role", cluster.role),
        ("admission", cluster.admission), ("parameters", cluster.parameters),
        ("network-policy", cluster.network_policy)]
    if profile.pvc:
        steps.append(("runs-volume", cluster.claim))
    if profile.queue:
        steps.append(("queue", cluster.queue))
    if profile.ray:
        steps.append(("kuberay", cluster.kuberay))
    jobs = [obj for obj in objects if obj["kind"] == "Job"]
    if profile.accelerator is not None and jobs:
        node_selector = jobs[0]["spec"]["template"]["spec"].get("nodeSelector", {})
        steps.append(("accelerators", lambda: cluster.accelerators(node_selector)))
    for check_name, step in steps:
        try:
            with kube.api_errors(f"checking {check_name}", api.configuration.host):
                checks.append(step())
        except UserError as error:
            checks.append(failed(check_name, str(error), "check the cluster and your access"))
    checks.extend(doctor.check_image(image))
    if "://" in profile.output:
        checks.append(doctor.check_bucket(profile.output))
    if pods and objects:
        try:
            with kube.api_errors(f"running the probe Job {name}", api.configuration.host):
                checks.append(cluster.pods(objects, name))
        except UserError as error:
            checks.append(failed("pods", str(error), "fix what the other checks say first"))
    return checks
