"""A real, throwaway Kubernetes control plane on loopback for rlkube's integration tests.

`TestCluster` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as child processes of the
test run, on random free 127.0.0.1 ports, in a private temporary directory. kwok fakes the nodes and drives the pod
lifecycle with the stages in tests/k8s/kwok (see its README.md for the fail/hold conventions). Nothing is mocked: every
request the tests make goes through a real API server with authentication, RBAC + Node authorization and admission
(ResourceQuota included), and `logs` / `port-forward` are proxied by the API server to kwok's kubelet-like server.

Binaries come from tools/testcluster/build.sh (see `build_binaries`). Usage::

    with TestCluster(build_binaries()) as cluster:
        api = kubernetes.client.CoreV1Api(cluster.api_client())
        ...

Only the standard library and the `openssl` command are needed; `api_client()` additionally needs `kubernetes`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "testcluster" / "build.sh"
KWOK_CONFIG_DIR = Path(__file__).resolve().parent / "kwok"

CONTEXT = "rlkube-test"
# kwok only manages nodes carrying this annotation (kwok --manage-nodes-with-annotation-selector).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

# Pod conventions understood by tests/k8s/kwok/pod-stages.yaml.
FAIL_INDEX_LABEL = "rlkube.io/test-fail-index"  # "<n>": the pod of completion index n fails; "all": every pod fails
HOLD_LABEL = "rlkube.io/test-hold"  # "true": the pod stays Running until deleted (or until the label is removed)
DURATION_ANNOTATION = "rlkube.io/test-duration"  # Go duration a pod runs before finishing; default "1s"
EXIT_CODE_ANNOTATION = "rlkube.io/test-exit-code"  # exit code of a failing pod; default "1"

TPU_LABELS = {
    "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
    "cloud.google.com/gke-tpu-topology": "2x4",
    "cloud.google.com/gke-nodepool": "tpu-v5e-2x4",
    "node.kubernetes.io/instance-type": "ct5lp-hightpu-8t",
}
TPU_TAINT = {"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"}
GPU_LABELS = {
    "cloud.google.com/gke-accelerator": "nvidia-l4",
    "karpenter.sh/capacity-type": "spot",
    "eks.amazonaws.com/capacityType": "SPOT",
    "node.kubernetes.io/instance-type": "g2-standard-96",
}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}

_KCM_CONTROLLERS = (
    "job",
    "ttl-after-finished",
    "podgc",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "garbagecollector",
    "resourcequota",
    "root-ca-cert-publisher",
    "deployment",
    "replicaset",
    "persistentvolume-binder",  # the real node's tests bind a hostPath PersistentVolume to a claim
    # They lift the finalizers that the StorageObjectInUseProtection admission plugin (on by default) puts on every
    # claim and volume. Without them a deleted namespace that holds a claim never goes, and the namespace controller
    # lists every kind in each such namespace again and again: 73 of them kept the API server at half a core.
    "pvc-protection",
    "pv-protection",
    # A Service's EndpointSlices: cluster DNS (CoreDNS, tests/k8s/node.py) answers a headless Service's name with
    # them, and the API server's service proxy (the KubeRay operator's way to a Ray head) connects through them.
    "endpointslice",
)
_ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "DefaultTolerationSeconds",
    "Priority",
    "PodSecurity",
    "RuntimeClass",
    "NodeRestriction",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)
# Without kubelets or a node-lifecycle controller nothing would ever lift the not-ready taint this plugin adds to
# new nodes; kwok reports the fake nodes Ready instead.
_DISABLED_ADMISSION_PLUGINS = ("TaintNodesByCondition",)


class TestClusterError(RuntimeError):
    """A control-plane component failed to start or the cluster did not become ready."""


def build_binaries() -> Path:
    """Run tools/testcluster/build.sh (a no-op once cached) and return the directory holding the six binaries."""
    preset = os.environ.get("RLKUBE_TESTBIN_DIR")
    if preset:
        return Path(preset)
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise TestClusterError(f"{BUILD_SCRIPT} failed with exit code {result.returncode} (its log is above)")
    return Path(result.stdout.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the component if the test process dies without calling stop()."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _raise_keyboard_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _Pki:
    """A throwaway CA, serving certificate, client certificates and service-account key pair made with openssl."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_crt = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", self.ca_key, "-out", self.ca_crt, "-days", "3650", "-subj", "/CN=rlkube-test-ca",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        self.sa_key = self.dir / "sa.key"
        self.sa_pub = self.dir / "sa.pub"
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", self.sa_key)
        self._openssl("pkey", "-in", self.sa_key, "-pubout", "-out", self.sa_pub)

    def _openssl(self, *args: str | Path) -> None:
        result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise TestClusterError(f"openssl {args[0]} failed: {result.stderr.strip()}")

    def issue(self, name: str, common_name: str, organizations: Sequence[str] = (), *, server: bool = False,
              sans: Sequence[str] = ()) -> tuple[Path, Path]:
        """Sign a key pair for `common_name` (the user) with `organizations` (its groups); returns (cert, key)."""
        key, csr, crt, ext = (self.dir / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
        subject = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", subject)
        lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca_crt, "-CAkey", self.ca_key,
                      "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "3650", "-extfile", ext, "-out", crt)
        csr.unlink()
        ext.unlink()
        return crt, key


class _Component:
    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path, log_file: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.log_file = log_file


class TestCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1, with fake nodes.

    Attributes once `start()` returned:
      kubeconfig   admin kubeconfig (user `admin`, group `system:masters`, context `rlkube-test`)
      server       API server URL, https://127.0.0.1:<port>
      ca_file      CA of the API server's serving certificate (and of every client certificate)
      workdir      private temp directory (certificates, kubeconfigs, data, component logs); removed by stop()
      bin_dir      directory with the binaries (kube-apiserver, ..., kwok, helm)
      logs_file    the file every fake container's log is read from (append with `write_pod_log`)
      port_forward_target  (host, port) that port-forwarding to any pod port connects to
      cpu_nodes, tpu_nodes, gpu_nodes  names of the fake nodes
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, bin_dir: str | os.PathLike[str] | None = None, *, cpu_nodes: int = 1, tpu_nodes: int = 8,
                 gpu_nodes: int = 2, workdir: str | os.PathLike[str] | None = None, start_timeout: float = 90.0,
                 keep_workdir: bool = False) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else build_binaries()
        self._node_counts = {"cpu": cpu_nodes, "tpu": tpu_nodes, "gpu": gpu_nodes}
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.start_timeout = start_timeout
        self.keep_workdir = keep_workdir
        self.context = CONTEXT
        self.workdir = Path()
        self.kubeconfig = Path()
        self.ca_file = Path()
        self.logs_file = Path()
        self.server = ""
        self.port_forward_target: tuple[str, int] = ("127.0.0.1", 0)
        self.cpu_nodes: list[str] = []
        self.tpu_nodes: list[str] = []
        self.gpu_nodes: list[str] = []
        self._components: list[_Component] = []
        self._pki: _Pki | None = None
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> TestCluster:
        """Start every component, create the fake nodes and wait until the cluster is usable."""
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        self._install_sigterm_handler()
        missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
                   if not os.access(self.bin_dir / b, os.X_OK)]
        if missing:
            raise TestClusterError(f"missing binaries in {self.bin_dir}: {', '.join(missing)} (run {BUILD_SCRIPT})")
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="rlkube-testcluster-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        etcd_port, etcd_peer_port, api_port, kcm_port, sched_port, kwok_port, pf_port = _free_ports(7)
        self.server = f"https://127.0.0.1:{api_port}"
        self.port_forward_target = ("127.0.0.1", pf_port)
        pki = self._pki = _Pki(self.workdir / "pki")
        self.ca_file = pki.ca_crt
        serving_crt, serving_key = pki.issue(
            "serving", "kube-apiserver", server=True,
            sans=["IP:127.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                  "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local", "IP:10.96.0.1"])
        self.kubeconfig = self._write_kubeconfig("admin", "admin", ["system:masters"])
        kubelet_client_crt, kubelet_client_key = pki.issue("kubelet-client", "kube-apiserver-kubelet-client",
                                                           ["system:masters"])
        kcm_kubeconfig = self._write_kubeconfig("kube-controller-manager", "system:kube-controller-manager")
        sched_kubeconfig = self._write_kubeconfig("kube-scheduler", "system:kube-scheduler")
        kwok_kubeconfig = self._write_kubeconfig("kwok", "kwok", ["system:masters"])
        admin_crt, admin_key = pki.dir / "admin.crt", pki.dir / "admin.key"
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_crt))
        self._ssl.load_cert_chain(str(admin_crt), str(admin_key))

        self._start_component("etcd", [
            "--name=rlkube-test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-cluster=rlkube-test=http://127.0.0.1:{etcd_peer_port}",
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait("etcd", deadline, lambda: self._http_ok(f"http://127.0.0.1:{etcd_port}/health", b'"true"'))

        self._start_component("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={self.workdir / 'apiserver'}",
            f"--tls-cert-file={serving_crt}", f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={pki.ca_crt}",
            # Only for the delegated authentication of kube-controller-manager/-scheduler; no one holds this name.
            f"--requestheader-client-ca-file={pki.ca_crt}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join(_ADMISSION_PLUGINS)}",
            f"--disable-admission-plugins={','.join(_DISABLED_ADMISSION_PLUGINS)}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # The built-in `kubernetes` Service endpoint may not be a loopback address.
            "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=InternalIP",
            # How logs, exec and port-forward authenticate to a real node's kubelet (tests/k8s/node.py).
            f"--kubelet-client-certificate={kubelet_client_crt}", f"--kubelet-client-key={kubelet_client_key}",
            "--allow-privileged=true", "--profiling=false",
        ])
        self._wait("kube-apiserver", deadline, lambda: self._http_ok(f"{self.server}/readyz", b"ok"))

        common = ["--leader-elect=false", "--bind-address=127.0.0.1"]
        self._start_component("kube-controller-manager", [
            *common, f"--secure-port={kcm_port}", f"--cert-dir={self.workdir / 'kcm'}",
            f"--kubeconfig={kcm_kubeconfig}", f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            f"--controllers={','.join(_KCM_CONTROLLERS)}", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_crt}",
            "--kube-api-qps=200", "--kube-api-burst=400",
        ])
        self._start_component("kube-scheduler", [
            *common, f"--secure-port={sched_port}", f"--cert-dir={self.workdir / 'scheduler'}",
            f"--kubeconfig={sched_kubeconfig}", f"--authentication-kubeconfig={sched_kubeconfig}",
            f"--authorization-kubeconfig={sched_kubeconfig}",
            "--kube-api-qps=200", "--kube-api-burst=400",
        ])

        self.logs_file = self.workdir / "pod-logs" / "containers.log"
        self.logs_file.parent.mkdir()
        self.logs_file.touch()
        debugging = self.workdir / "kwok-debugging.yaml"
        debugging.write_text(string.Template((KWOK_CONFIG_DIR / "debugging.yaml.tmpl").read_text()).substitute(
            logs_file=json.dumps(str(self.logs_file)), port_forward_host="127.0.0.1", port_forward_port=pf_port))
        kwok_home = self.workdir / "kwok-home"  # keeps a developer's ~/.kwok/kwok.yaml out of the test cluster
        kwok_home.mkdir()
        config = ",".join(str(p) for p in (KWOK_CONFIG_DIR / "node-stages.yaml", KWOK_CONFIG_DIR / "pod-stages.yaml",
                                           debugging))
        self._start_component("kwok", [
            f"--kubeconfig={kwok_kubeconfig}", f"--config={config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={'='.join(KWOK_NODE_ANNOTATION)}",
            "--node-ip=127.0.0.1", f"--node-port={kwok_port}", f"--server-address=127.0.0.1:{kwok_port}",
            f"--tls-cert-file={serving_crt}", f"--tls-private-key-file={serving_key}",
            "--cidr=10.0.0.0/16", "--node-lease-duration-seconds=0",
        ], env={"HOME": str(kwok_home)})

        self._create_nodes()
        self._wait("kube-controller-manager", deadline,
                   lambda: self._http_ok(f"https://127.0.0.1:{kcm_port}/healthz", b"ok", verify=False))
        self._wait("kube-scheduler", deadline,
                   lambda: self._http_ok(f"https://127.0.0.1:{sched_port}/healthz", b"ok", verify=False))
        self._wait("kwok", deadline, lambda: self._http_ok(f"http://127.0.0.1:{kwok_port}/healthz", b"ok"))
        self._wait("kwok", deadline, self._nodes_ready, what="fake nodes to become Ready")
        self._wait("kube-controller-manager", deadline, lambda: self._service_account_exists("default", "default"),
                   what="the default ServiceAccount")

    @staticmethod
    def _install_sigterm_handler() -> None:
        """Turn SIGTERM (e.g. from `timeout`) into KeyboardInterrupt, so pytest tears the cluster down cleanly."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    def stop(self) -> None:
        """Stop every component, clients before servers (SIGTERM, SIGKILL after 10 s), and remove the work directory."""
        servers = {"kube-apiserver": 1, "etcd": 2}
        for tier in (0, 1, 2):
            self._stop_components([c for c in self._components if servers.get(c.name, 0) == tier])
        self._components.clear()
        atexit.unregister(self.stop)
        if not self.keep_workdir and self._workdir_arg is None and self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def kuberay_operator(self, operator: Path) -> Iterator[None]:
        """KubeRay's operator (`tools/testcluster/kuberay-crds.sh operator`) as a component of this cluster while the
        block runs, watching every namespace with the admin kubeconfig. KubeRay's CRDs must be installed first."""
        (probe_port,) = _free_ports(1)
        component = self._start_component("ray-operator", [
            # Through the API server's service proxy to each Ray head's dashboard, as in a cluster whose operator
            # cannot resolve Service names: the operator runs on this host, which has no cluster DNS (only pods do),
            # and the API server reaches pod IPs through the real node's bridge.
            "--use-kubernetes-proxy",
            "--enable-leader-election=false", "--metrics-addr=0",
            f"--health-probe-bind-address=127.0.0.1:{probe_port}", "--log-stdout-encoder=console",
        ], env={"KUBECONFIG": str(self.kubeconfig)}, binary=operator)
        try:
            self._wait("ray-operator", time.monotonic() + self.start_timeout,
                       lambda: self._http_ok(f"http://127.0.0.1:{probe_port}/readyz", b"ok"))
            yield
        finally:
            self._stop_components([component])
            self._components.remove(component)

    # ---------------------------------------------------------------- public helpers

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl-like tools, helm, rlkube) that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def api_client(self, kubeconfig: str | os.PathLike[str] | None = None) -> ApiClient:
        """A `kubernetes.client.ApiClient` for the admin kubeconfig (or another one, e.g. from user_kubeconfig)."""
        from kubernetes import config  # noqa: PLC0415 - optional dependency of this module

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig), context=self.context)

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """Kubeconfig authenticating as `user` in `groups` (a client certificate signed by the cluster CA).

        The user starts with no permissions beyond the built-in discovery roles: bind it to a Role/ClusterRole.
        """
        return self._write_kubeconfig(f"user-{user}", user, list(groups))

    def service_account_kubeconfig(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> Path:
        """Kubeconfig with a bound token (TokenRequest API) for ServiceAccount `namespace/name`, created if absent."""
        if not self._service_account_exists(namespace, name):
            self.api_call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                      {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
        token = self.api_call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                           "spec": {"expirationSeconds": expiration_seconds}})["status"]["token"]
        path = self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.yaml"
        self._write_kubeconfig_file(path, f"system:serviceaccount:{namespace}:{name}", {"token": token})
        return path

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace and wait for its `default` ServiceAccount, without which pods are rejected."""
        self.api_call("POST", "/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})
        self._wait("kube-controller-manager", time.monotonic() + 30,
                   lambda: self._service_account_exists(name, "default"), what=f"ServiceAccount {name}/default")

    def write_pod_log(self, *lines: str, stream: str = "stdout") -> None:
        """Append lines to the log every fake container shows (`kubectl logs`, also while following)."""
        with self.logs_file.open("a") as f:
            for line in lines:
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                f.write(f"{stamp} {stream} F {line}\n")

    def clear_pod_logs(self) -> None:
        """Empty the shared container log (not while a test is following it)."""
        self.logs_file.write_text("")

    def log_tail(self, component: str, lines: int = 40) -> str:
        """The last `lines` lines a component wrote (etcd, kube-apiserver, kube-controller-manager, ...)."""
        path = self.workdir / "logs" / f"{component}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---------------------------------------------------------------- internals

    def _write_kubeconfig(self, name: str, user: str, groups: Sequence[str] = ()) -> Path:
        assert self._pki is not None
        crt, key = self._pki.issue(name, user, groups)
        path = self.workdir / "kubeconfigs" / f"{name}.yaml"
        self._write_kubeconfig_file(path, user, {
            "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        })
        return path

    def _write_kubeconfig_file(self, path: Path, user: str, credentials: dict[str, str]) -> None:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": "default"}}],
            "current-context": CONTEXT,
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        path.chmod(0o600)

    def _start_component(self, name: str, args: list[str], env: dict[str, str] | None = None,
                         binary: Path | None = None) -> _Component:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [str(binary or self.bin_dir / name), *args], stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=self.workdir,
            start_new_session=True,  # Ctrl-C / `timeout` hit pytest only, which then stops the cluster in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - only a prctl
        )
        component = _Component(name, process, log_path, log_file)
        self._components.append(component)
        return component

    @staticmethod
    def _stop_components(components: list[_Component]) -> None:
        """SIGTERM them all, then SIGKILL whichever still runs after 10 s."""
        for component in components:
            if component.process.poll() is None:
                component.process.terminate()
        deadline = time.monotonic() + 10
        for component in components:
            try:
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                component.process.kill()
                component.process.wait()
            component.log_file.close()

    def _wait(self, component: str, deadline: float, ready: Callable[[], bool], what: str = "") -> None:
        """Poll `ready` until it is true; fail fast, with the log tail, if any component exits."""
        while True:
            for c in self._components:
                if c.process.poll() is not None:
                    raise TestClusterError(f"{c.name} exited with code {c.process.returncode} while waiting for "
                                           f"{what or component}; last log lines:\n{self.log_tail(c.name)}")
            try:
                if ready():
                    return
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TestClusterError(f"timed out after {self.start_timeout:.0f} s waiting for {what or component}"
                                       f"; last log lines of {component}:\n{self.log_tail(component)}")
            time.sleep(0.1)

    def _http_ok(self, url: str, expect: bytes, *, verify: bool = True) -> bool:
        context: ssl.SSLContext | None = None
        if url.startswith("https://"):
            context = self._ssl if verify else ssl._create_unverified_context()
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return response.status == 200 and expect in response.read()
        except urllib.error.HTTPError:
            return False

    def api_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.server + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._ssl) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise TestClusterError(f"{method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e

    def _service_account_exists(self, namespace: str, name: str) -> bool:
        try:
            self.api_call("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
        except TestClusterError as e:
            if "HTTP 404" in str(e):
                return False
            raise
        return True

    def _create_nodes(self) -> None:
        base = {"pods": "110", "ephemeral-storage": "200Gi"}
        kinds = {
            "cpu": ({"node.kubernetes.io/instance-type": "e2-standard-32"}, [], {"cpu": "32", "memory": "128Gi"}),
            "tpu": (TPU_LABELS, [TPU_TAINT], {"cpu": "224", "memory": "192Gi", "google.com/tpu": "8"}),
            "gpu": (GPU_LABELS, [GPU_TAINT], {"cpu": "96", "memory": "384Gi", "nvidia.com/gpu": "8"}),
        }
        for kind, (labels, taints, resources) in kinds.items():
            names = getattr(self, f"{kind}_nodes")
            for i in range(self._node_counts[kind]):
                name = f"kwok-{kind}-{i}"
                self.api_call("POST", "/api/v1/nodes", {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                                        "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                   "kubernetes.io/arch": "amd64", "type": "kwok", "rlkube.io/test-node-kind": kind,
                                   **labels},
                    },
                    "spec": {"taints": taints},
                    "status": {"capacity": {**base, **resources}, "allocatable": {**base, **resources}},
                })
                names.append(name)

    def _nodes_ready(self) -> bool:
        nodes = self.api_call("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        ready = [n for n in nodes
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
        return len(ready) == sum(self._node_counts.values())
