"""A real Kubernetes node in the loopback test cluster: containerd + runc + CNI + kubelet, with dockerd and a registry.

`RealNode` joins a running `TestCluster` beside its kwok nodes. Its pods really run: images are built by a real Docker
engine, pushed to a real registry on 127.0.0.1 and pulled by containerd by digest. Everything comes from Debian's
packages and from tools/testnode/build.sh (kubelet at the control plane's version, the registry, the pause binary and
a Debian root filesystem), cached outside the repository.

What a real node needs on this kind of VM (2 cores, cgroup v1, no CAP_SYS_RESOURCE, no container registry reachable)
is kept below where it binds, each with its reason. The node is tainted so that only pods which ask for it land on it:
the kwok tests' pods name images that do not exist.

The host is left as it was found: `HostState` records the sysctls the kubelet, dockerd and the bridge plugin write,
the iptables rules, the network links, mounts and cgroups, and `stop()` restores them after every daemon it started
has been stopped by its pid. The record and the daemons' pids are also journaled to disk, so that a run killed before
`stop()` (a session that timed out, a machine restart) is stopped and restored by the next run's `start()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster import TestCluster

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "testnode" / "build.sh"
CACHE = Path(os.environ.get("RLKUBE_TESTBIN", Path.home() / ".cache" / "rlkube" / "testbin")).parent
# What a running node changed and started; present only while a node runs or after one was killed (see `start`).
JOURNAL = CACHE / "real-node-journal.json"

NODE_NAME = "rlkube-real-0"
# The kubelet refuses a loopback node IP (127.0.0.0/8). An address from TEST-NET-2 on a link of its own is reachable
# from this host, so from the API server and from pods through the bridge, and from nowhere else. The link is an
# empty bridge because this VM's kernel has no dummy links; the host's own address is in TEST-NET-1.
NODE_IP = "198.51.100.10"
NODE_LINK = "rlkube-node0"
POD_BRIDGE = "rlkube-cni0"
POD_SUBNET = "10.244.0.0/24"
# Pods must ask for the real node (toleration + node selector), so that the kwok tests' pods never land here.
NODE_TAINT = {"key": "rlkube.io/real-node", "value": "true", "effect": "NoSchedule"}
NODE_LABEL = ("rlkube.io/test-node-kind", "real")
# The stand-in for python:3.11-slim-bookworm (see `_build_base_images`).
BASE_TAG = "python:3.11-slim-bookworm"
DEBIAN_TAG = "rlkube-test/debian-minbase:bookworm"
PAUSE_NAME = "pause:3.10"
CLUSTER_DOMAIN = "cluster.local"

# The sysctls the kubelet (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, kernel.keys.*), dockerd and the
# bridge plugin (ip forwarding, bridge netfilter) may change; each is put back as it was.
SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
           "net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables",
           "net.bridge.bridge-nf-call-ip6tables", "net.ipv4.conf.all.route_localnet")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
BUILTIN_CHAINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
                  "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
                  "raw": ("PREROUTING", "OUTPUT")}
CGROUP_ROOT = Path("/sys/fs/cgroup")


class RealNodeError(RuntimeError):
    """A daemon of the real node failed to start, or the node did not become Ready."""


def missing_prerequisites() -> str | None:
    """Why a real node cannot run on this machine, or None. The e2e tests skip with this line."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, runc, the kubelet and CNI change mounts, cgroups and iptables)"
    if not CGROUP_ROOT.is_dir():
        return "a real node needs cgroups (/sys/fs/cgroup is missing)"
    if shutil.which("go") is None:
        return "a real node needs Go to build the kubelet and the registry (tools/testnode/build.sh)"
    if shutil.which("apt-get") is None and shutil.which("containerd") is None:
        return "a real node needs containerd, runc and the CNI plugins (Debian's packages; no apt-get here)"
    return None


def build_node_binaries() -> Path:
    """Run tools/testnode/build.sh (a no-op once cached); the directory with kubelet, registry, pause, rootfs."""
    if preset := os.environ.get("RLKUBE_TESTNODE_DIR"):
        return Path(preset)
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RealNodeError(f"{BUILD_SCRIPT} failed with exit code {result.returncode} (its log is above)")
    return Path(result.stdout.strip().splitlines()[-1])


def _run(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RealNodeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _mounts() -> list[str]:
    """Mount points, in the order they were mounted (so reversed order unmounts children first)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(point.encode().decode("unicode_escape"))
    return points


def _links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in _run("ip", "-o", "link", "show").stdout.splitlines()}


def _cgroup_dirs() -> set[Path]:
    """Every top-level directory of every cgroup v1 hierarchy (the kubelet, containerd and dockerd add some)."""
    found: set[Path] = set()
    for hierarchy in CGROUP_ROOT.iterdir():
        if hierarchy.is_dir() and not hierarchy.is_symlink():
            found.update(p for p in hierarchy.iterdir() if p.is_dir())
    return found


def _remove_cgroup_tree(top: Path) -> None:
    """rmdir a cgroup directory bottom-up (a cgroup holding no process can be removed; files inside cannot be)."""
    for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


@dataclass
class HostState:
    """What the node's daemons change on the host, recorded before they start, to be restored after they stop."""

    sysctls: dict[str, str]
    iptables: dict[str, str]  # "iptables" / "ip6tables" -> its iptables-save output
    links: set[str]
    mounts: set[str]
    cgroups: set[Path]
    files: set[Path]  # host paths the kubelet or containerd create if missing

    WATCHED_PATHS = (Path("/var/log/containers"), Path("/var/lib/cni"), Path("/run/netns"), Path("/etc/cni"),
                     Path("/opt/cni"), Path("/var/lib/kubelet"), Path("/var/log/pods"))

    @classmethod
    def capture(cls) -> HostState:
        sysctls = {}
        for name in SYSCTLS:
            path = Path("/proc/sys") / name.replace(".", "/")
            if path.exists():
                sysctls[name] = path.read_text().strip()
        saved = {tool: _run(f"{tool}-save", check=False).stdout for tool in ("iptables", "ip6tables")}
        return cls(sysctls, saved, _links(), set(_mounts()), _cgroup_dirs(),
                   {p for p in cls.WATCHED_PATHS if p.exists()})

    def to_json(self) -> dict[str, Any]:
        return {"sysctls": self.sysctls, "iptables": self.iptables, "links": sorted(self.links),
                "mounts": sorted(self.mounts), "cgroups": sorted(map(str, self.cgroups)),
                "files": sorted(map(str, self.files))}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> HostState:
        return cls(saved["sysctls"], saved["iptables"], set(saved["links"]), set(saved["mounts"]),
                   {Path(p) for p in saved["cgroups"]}, {Path(p) for p in saved["files"]})

    def restore(self, owned_dirs: list[Path]) -> list[str]:
        """Put everything back; returns what could not be (for the test log), empty when all went well."""
        problems: list[str] = []
        owned = [str(d) for d in owned_dirs]
        stray = [point for point in reversed(_mounts()) if point not in self.mounts and (
            any(point == d or point.startswith(d + "/") for d in owned)
            or point.startswith(("/run/netns/", "/var/lib/kubelet/")))]
        problems += [f"could not unmount {point}" for point in stray
                     if _run("umount", "--lazy", point, check=False).returncode != 0]
        for link in sorted(_links() - self.links):
            if _run("ip", "link", "delete", link, check=False).returncode != 0 and link in _links():
                problems.append(f"could not delete link {link}")
        for tool, saved in self.iptables.items():
            problems += _restore_iptables(tool, saved)
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name.replace(".", "/")
            try:
                if path.read_text().strip() != value:
                    path.write_text(value)
            except OSError as error:
                problems.append(f"could not restore sysctl {name}={value}: {error}")
        for top in sorted(_cgroup_dirs() - self.cgroups):
            _remove_cgroup_tree(top)
            if top.exists():
                problems.append(f"cgroup {top} still holds processes")
        for path in self.WATCHED_PATHS:
            if path.exists() and path not in self.files:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return problems


def _restore_iptables(tool: str, saved: str) -> list[str]:
    """Flush every table the daemons touched, delete their chains, reset the built-in policies, reload the saved."""
    if shutil.which(tool) is None:
        return []
    problems = []
    for table in IPTABLES_TABLES:
        if _run(tool, "-t", table, "-S", check=False).returncode != 0:
            continue  # the table does not exist (nor did it before)
        _run(tool, "-t", table, "-F", check=False)
        _run(tool, "-t", table, "-X", check=False)
        for chain in BUILTIN_CHAINS[table]:
            _run(tool, "-t", table, "-P", chain, "ACCEPT", check=False)
    if saved.strip():
        result = subprocess.run([f"{tool}-restore"], input=saved, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            problems.append(f"{tool}-restore failed: {result.stderr.strip()}")
    # With the nf_tables backend a table appears when first used; remove the ones that did not exist before.
    if "nf_tables" in _run(tool, "--version", check=False).stdout and shutil.which("nft"):
        family = "ip6" if tool == "ip6tables" else "ip"
        for table in IPTABLES_TABLES:
            if f"*{table}\n" not in saved:
                _run("nft", "delete", "table", family, table, check=False)
    return problems


class _Daemon:
    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path, log_file: IO[bytes]) -> None:
        self.name, self.process, self.log_path, self.log_file = name, process, log_path, log_file


class RealNode:
    """A kubelet node backed by containerd, joined to `cluster`; dockerd and a registry to build and serve images.

    Attributes once started:
      name, ip           the Node's name and InternalIP
      registry           host:port of the image registry (plain HTTP on 127.0.0.1; docker and containerd trust it)
      docker_host        DOCKER_HOST for the Docker engine (what `rlkube build` talks to)
      toleration, node_selector   what a pod needs to land here
    """

    __test__ = False

    def __init__(self, cluster: TestCluster, bin_dir: Path) -> None:
        self.cluster = cluster
        self.bin_dir = bin_dir
        self.name = NODE_NAME
        self.ip = NODE_IP
        self.registry = ""
        self.docker_host = ""
        self.toleration = {"key": NODE_TAINT["key"], "operator": "Equal", "value": NODE_TAINT["value"],
                           "effect": NODE_TAINT["effect"]}
        self.node_selector = {"kubernetes.io/hostname": NODE_NAME}
        self.workdir = Path()
        self.docker_root = CACHE / "docker-data"  # image layers and build cache survive between runs
        self.registry_root = CACHE / "registry-data"  # pushed blobs too: a warm push sends only the code layer
        self._daemons: list[_Daemon] = []
        self._host: HostState | None = None
        self._containerd_socket = Path()

    # ------------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> RealNode:
        _recover_from_a_killed_run()
        self._host = HostState.capture()
        # Short: containerd's and dockerd's unix sockets live here (108 bytes at most).
        self.workdir = Path(tempfile.mkdtemp(prefix="rlkube-node-", dir="/tmp"))
        try:
            self._write_journal()
            _run("ip", "link", "add", NODE_LINK, "type", "bridge")
            _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
            _run("ip", "link", "set", NODE_LINK, "up")
            self._start_registry()
            self._start_dockerd()
            # dockerd sets the FORWARD chain's policy to DROP, and with bridge netfilter on (the bridge plugin turns it
            # on) that chain sees traffic between two pods on the bridge too: let it through, as a CNI that
            # expects pods to reach each other (a Ray worker its head) does.
            _run("iptables", "-I", "FORWARD", "-i", POD_BRIDGE, "-o", POD_BRIDGE, "-j", "ACCEPT")
            self._build_base_images()
            self._start_containerd()
            self._start_kubelet()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Drain the node, stop every daemon by its pid (children first), then restore the host."""
        if self._host is None:
            return
        with contextlib.suppress(Exception):
            self._drain()
        for daemon in reversed(self._daemons):
            self._stop_daemon(daemon)
        self._kill_shims()
        self._daemons.clear()
        problems = self._host.restore([self.workdir, self.docker_root])
        self._host = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        JOURNAL.unlink(missing_ok=True)
        if problems:
            raise RealNodeError("the host was not fully restored: " + "; ".join(problems))

    # ------------------------------------------------------------------------------------------------ helpers

    def docker(self) -> Any:
        import docker  # noqa: PLC0415 - the Docker SDK, a dependency of rlkube build

        return docker.DockerClient(base_url=self.docker_host, timeout=3600)

    def image(self, name: str) -> str:
        """A name in the node's registry: `127.0.0.1:PORT/<name>`."""
        return f"{self.registry}/{name}"

    def log_tail(self, daemon: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / f"{daemon}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def host_path_volume(self, namespace: str, claim: str) -> Path:
        """A PersistentVolume on this node's disk, bound to a new claim `claim` in `namespace`; returns its path."""
        path = self.workdir / "volumes" / f"{namespace}-{claim}"
        path.mkdir(parents=True)
        # rlkube's pods run as uid and gid 1000, and fsGroup does not apply to hostPath. The kubelet creates each
        # experiment's directory (its subPath) as root, with this root's mode and, by setgid, its group: group 1000
        # and mode 2775, as fsGroup leaves a volume that supports it, let the pods write there.
        os.chown(path, 1000, 1000)
        path.chmod(0o2775)
        pv_name = f"{namespace}-{claim}"
        self.cluster.api_call("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     "hostPath": {"path": str(path), "type": "Directory"},
                     "claimRef": {"namespace": namespace, "name": claim},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}}})
        self.cluster.api_call("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                     "resources": {"requests": {"storage": "1Gi"}}}})
        return path

    def fill_shared_memory_in(self, pod: Any, namespace: str) -> str:
        """Fill a running container's in-memory /dev/shm until its pod is over its memory limit; returns what the
        filling process printed. Pages of a memory emptyDir are charged to the pod's memory cgroup but belong to no
        process, so the OOM killer then ends the container's largest process: the trainer."""
        from kubernetes import client as k8s  # noqa: PLC0415
        from kubernetes.stream import stream  # noqa: PLC0415

        fill = ("chunk = b'x' * (16 << 20)\n"
                "with open('/dev/shm/filler', 'wb') as f:\n"
                "    while True:\n"
                "        f.write(chunk)\n"
                "        f.flush()\n")
        core = k8s.CoreV1Api(self.cluster.api_client())
        try:
            return stream(core.connect_get_namespaced_pod_exec, pod.metadata.name, namespace, container="trainer",
                          command=["python", "-c", fill], stderr=True, stdin=False, stdout=True, tty=False,
                          _request_timeout=300)
        except Exception as error:  # the stream ends with the container, in one of several ways
            return f"{type(error).__name__}: {error}"

    def running_tasks(self) -> list[str]:
        """The containerd tasks running for the kubelet (`ctr -n k8s.io tasks list`)."""
        out = _run("ctr", "--address", str(self._containerd_socket), "-n", "k8s.io", "tasks", "list", "-q",
                   check=False).stdout
        return out.split()

    # ------------------------------------------------------------------------------------------------ daemons

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> _Daemon:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        log_file = log_path.open("ab")  # a restarted daemon's log follows its first run's
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, cwd=self.workdir, start_new_session=True)
        daemon = _Daemon(name, process, log_path, log_file)
        self._daemons.append(daemon)
        self._write_journal()
        return daemon

    def _write_journal(self) -> None:
        assert self._host is not None
        daemons = [{"pid": d.process.pid, "start_time": _start_time(d.process.pid)} for d in self._daemons]
        JOURNAL.parent.mkdir(parents=True, exist_ok=True)
        temporary = JOURNAL.with_suffix(".tmp")
        temporary.write_text(json.dumps({"owner": {"pid": os.getpid(), "start_time": _start_time(os.getpid())},
                                         "workdir": str(self.workdir), "docker_root": str(self.docker_root),
                                         "daemons": daemons, "host": self._host.to_json()}))
        temporary.replace(JOURNAL)

    def _stop_daemon(self, daemon: _Daemon, timeout: float = 30) -> None:
        if daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGTERM)
            try:
                daemon.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()
        daemon.log_file.close()

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float, daemon: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for d in self._daemons:
                if d.process.poll() is not None:
                    raise RealNodeError(f"{d.name} exited with code {d.process.returncode} while waiting for {what}; "
                                        f"last log lines:\n{self.log_tail(d.name)}")
            with contextlib.suppress(Exception):  # not answering yet, in whichever way its client says so
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RealNodeError(f"timed out after {timeout:.0f} s waiting for {what}; last log lines of {daemon}:"
                                    f"\n{self.log_tail(daemon)}")
            time.sleep(0.2)

    def _start_registry(self) -> None:
        port = _free_port()
        self.registry = f"127.0.0.1:{port}"
        self.registry_root.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "registry.yaml"
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.registry_root)}, "delete": {"enabled": True}},
            "http": {"addr": self.registry},
        }))
        self._start("registry", [str(self.bin_dir / "registry"), "serve", str(config)],
                    env={"OTEL_TRACES_EXPORTER": "none"})

        def answers() -> bool:
            with urllib.request.urlopen(f"http://{self.registry}/v2/", timeout=2) as response:
                return response.status == 200

        self._wait("the registry", answers, 30, "registry")

    def _start_dockerd(self) -> None:
        self.docker_root.mkdir(parents=True, exist_ok=True)
        socket_path = self.workdir / "docker.sock"
        self.docker_host = f"unix://{socket_path}"
        self._start("dockerd", [
            "dockerd", f"--host={self.docker_host}", f"--data-root={self.docker_root}",
            f"--exec-root={self.workdir / 'docker-exec'}", f"--pidfile={self.workdir / 'docker.pid'}",
        ])
        self._wait("dockerd", lambda: self.docker().ping(), 60, "dockerd")

    def _build_base_images(self) -> None:
        """The sandbox (pause) image and the stand-in for python:3.11-slim-bookworm, pushed to the registry.

        The Dockerfiles keep `FROM python:3.11-slim-bookworm` for users. No container registry can be reached here,
        so the tests build a stand-in under that tag: Debian bookworm from Debian's own archive (debootstrap), with
        Debian's python3 (3.11) and venv, and the host's CA certificates, since pip inside an image build must trust
        what this host trusts to reach the package index. The classic builder uses a local tag and does not pull.
        """
        client = self.docker()
        rootfs = self.bin_dir / "bookworm-rootfs.tar"
        stamp = f"{rootfs.resolve()}:{rootfs.stat().st_size}:{int(rootfs.stat().st_mtime)}"
        try:
            current = client.images.get(DEBIAN_TAG).labels.get("rlkube.test/rootfs")
        except Exception:  # docker.errors.ImageNotFound
            current = None
        if current != stamp:
            repository, tag = DEBIAN_TAG.split(":")
            client.api.import_image_from_file(str(rootfs), repository=repository, tag=tag,
                                              changes=[f'LABEL rlkube.test/rootfs="{stamp}"', 'CMD ["bash"]'])
        with tempfile.TemporaryDirectory(prefix="rlkube-standin-") as context:
            for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                shutil.copy(crt, Path(context) / crt.name)
            (Path(context) / "Dockerfile").write_text(STANDIN_DOCKERFILE.format(base=DEBIAN_TAG))
            _build(client, context, BASE_TAG)
        with tempfile.TemporaryDirectory(prefix="rlkube-pause-") as context:
            shutil.copy(self.bin_dir / "pause", Path(context) / "pause")
            (Path(context) / "Dockerfile").write_text(PAUSE_DOCKERFILE)
            _build(client, context, self.image(PAUSE_NAME))
        for line in client.images.push(self.image(PAUSE_NAME), stream=True, decode=True):
            if "error" in line:
                raise RealNodeError(f"pushing the pause image failed: {line['error']}")

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        self._containerd_socket = root / "containerd.sock"
        certs = root / "certs.d" / self.registry
        certs.mkdir(parents=True)
        (certs / "hosts.toml").write_text(
            f'server = "http://{self.registry}"\n[host."http://{self.registry}"]\n'
            f'  capabilities = ["pull", "resolve"]\n')
        cni_conf = root / "cni"
        cni_conf.mkdir()
        (cni_conf / "10-rlkube.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "rlkube-test",
            "plugins": [{"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(root / "ipam")}}],
        }))
        config = root / "config.toml"
        config.write_text(CONTAINERD_CONFIG.format(
            root=root / "root", state=root / "state", socket=self._containerd_socket,
            sandbox_image=self.image(PAUSE_NAME), cni_conf=cni_conf, certs=root / "certs.d"))
        self._start("containerd", ["containerd", "--config", str(config)])
        self._wait("containerd", lambda: _run("ctr", "--address", str(self._containerd_socket), "version").returncode
                   == 0, 60, "containerd")

    def serve_cluster_dns(self, coredns_dir: Path) -> None:
        """Cluster DNS for this node's pods from now on: CoreDNS (tools/testcluster/coredns.sh) on the node's IP,
        port 53, answering `<service>.<namespace>.svc.cluster.local` from the API server and every other name from
        this host's resolvers; the kubelet restarts to hand it to new pods (dnsPolicy ClusterFirst). Pods made
        before keep the host's resolv.conf. It serves until the node stops; a second call does nothing."""
        if any(d.name == "coredns" for d in self._daemons):
            return
        ready_port = _free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(COREFILE.format(ip=NODE_IP, ready=f"127.0.0.1:{ready_port}", domain=CLUSTER_DOMAIN,
                                            kubeconfig=self.cluster.kubeconfig, context=self.cluster.context))
        self._start("coredns", [str(coredns_dir / "coredns"), "-conf", str(corefile)])

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ready_port}/ready", timeout=2) as response:
                return response.status == 200

        self._wait("CoreDNS", ready, 60, "coredns")
        (kubelet,) = [d for d in self._daemons if d.name == "kubelet"]
        self._stop_daemon(kubelet)
        self._daemons.remove(kubelet)
        self._start_kubelet(cluster_dns=NODE_IP)

    def _start_kubelet(self, cluster_dns: str | None = None) -> None:
        root = self.workdir / "kubelet"
        root.mkdir(exist_ok=True)  # a restarted kubelet finds its pods where it left them
        kubeconfig = self.cluster.user_kubeconfig(f"system:node:{NODE_NAME}", ["system:nodes"])
        config = root / "config.yaml"
        port = _free_port(NODE_IP)
        # Its own cgroup parent, so that everything the kubelet creates in the cgroup hierarchies can be removed.
        for hierarchy in ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd",
                          "hugetlb"):
            if (CGROUP_ROOT / hierarchy).is_dir() and not (CGROUP_ROOT / hierarchy).is_symlink():
                (CGROUP_ROOT / hierarchy / "rlkube-node").mkdir(exist_ok=True)
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # cgroups are v1 on this VM, which the kubelet refuses unless told otherwise; no systemd manages them.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": "/rlkube-node",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self._containerd_socket}",
            "address": NODE_IP, "port": port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": _free_port(),
            # Only holders of a certificate from the cluster's CA (the API server's kubelet client) get in.
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.cluster.ca_file)}},
            "authorization": {"mode": "AlwaysAllow"},
            # A small or busy test disk must not evict the test pods.
            "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "podLogsDir": str(root / "pod-logs"),
            "registerWithTaints": [NODE_TAINT],
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            **({"clusterDNS": [cluster_dns], "clusterDomain": CLUSTER_DOMAIN} if cluster_dns else {}),
            "syncFrequency": "5s", "nodeStatusUpdateFrequency": "5s",
        }))
        self._start("kubelet", [
            str(self.bin_dir / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={root / 'root'}", f"--cert-dir={root / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--node-labels={'='.join(NODE_LABEL)}", "--v=2",
        ])
        self._wait("the node to be Ready", lambda: self._ready(port), 120, "kubelet")

    def _ready(self, kubelet_port: int) -> bool:
        """Ready, as reported by the kubelet listening on `kubelet_port` (not by one that stopped before it)."""
        node = self.cluster.api_call("GET", f"/api/v1/nodes/{NODE_NAME}")
        reported = node["status"].get("daemonEndpoints", {}).get("kubeletEndpoint", {}).get("Port")
        return reported == kubelet_port and any(c["type"] == "Ready" and c["status"] == "True"
                                                for c in node["status"].get("conditions", []))

    def _drain(self) -> None:
        """Delete every pod bound to the node and wait until containerd runs none, so the CNI tears down their
        network namespaces and the kubelet unmounts their volumes."""
        pods = self.cluster.api_call("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")["items"]
        for pod in pods:
            meta = pod["metadata"]
            with contextlib.suppress(Exception):
                self.cluster.api_call("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                  {"gracePeriodSeconds": 0})
        deadline = time.monotonic() + 60
        while self.running_tasks() and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(Exception):
            self.cluster.api_call("DELETE", f"/api/v1/nodes/{NODE_NAME}")

    def _kill_shims(self) -> None:
        _kill_shims_of(self.workdir)


def _kill_shims_of(workdir: Path) -> None:
    """containerd's shims outlive containerd by design; end the ones that served a node (found by the socket path in
    their command line, unique to its run), with their containers."""
    marker = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (with the pid, it names one process: pids are reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _same_process_alive(recorded: dict[str, Any]) -> bool:
    return recorded["start_time"] is not None and _start_time(recorded["pid"]) == recorded["start_time"]


def _recover_from_a_killed_run() -> None:
    """If an earlier run was killed before its `stop()`, stop its daemons by their recorded pids and restore the host
    it recorded, so that this run starts from (and will leave) the state found before that one."""
    if not JOURNAL.exists():
        return
    journal = json.loads(JOURNAL.read_text())
    if _same_process_alive(journal["owner"]):
        raise RealNodeError(f"another test session (pid {journal['owner']['pid']}) runs the real node; "
                            "run one session against the test cluster at a time")
    for daemon in reversed(journal["daemons"]):
        if _same_process_alive(daemon):
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_same_process_alive(d) for d in journal["daemons"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    workdir = Path(journal["workdir"])
    _kill_shims_of(workdir)
    problems = HostState.from_json(journal["host"]).restore([workdir, Path(journal["docker_root"])])
    if problems:
        raise RealNodeError("the host left by a killed earlier run could not be restored: " + "; ".join(problems))
    shutil.rmtree(workdir, ignore_errors=True)
    JOURNAL.unlink()


def _build(client: Any, context: str, tag: str) -> None:
    try:
        for chunk in client.api.build(path=context, tag=tag, rm=True, forcerm=True, decode=True):
            if "error" in chunk:
                raise RealNodeError(f"building {tag} failed: {chunk['error']}")
    except RealNodeError:
        raise
    except Exception as error:
        raise RealNodeError(f"building {tag} failed: {error}") from None


STANDIN_DOCKERFILE = """\
# A stand-in for python:3.11-slim-bookworm, built here because no container registry can be reached from the
# test machine: Debian bookworm with Debian's python3 (3.11), venv and the host's CA certificates.
FROM {base}
COPY *.crt /usr/local/share/ca-certificates/
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \\
      python-is-python3 ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && update-ca-certificates
ENV LANG=C.UTF-8
CMD ["python3"]
"""

PAUSE_DOCKERFILE = """\
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
"""

# Cluster DNS for the node's pods (`serve_cluster_dns`): the cluster's Services by name, every other name from this
# host's resolvers, as the pods had before. `bind` keeps it off the host's other addresses.
COREFILE = """\
.:53 {{
    bind {ip}
    ready {ready}
    errors
    cache 5
    kubernetes {domain} {{
        kubeconfig {kubeconfig} {context}
    }}
    forward . /etc/resolv.conf
}}
"""

CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Required on this VM: without CAP_SYS_RESOURCE in the capability bounding set, runc's nsexec cannot raise
  # /proc/self/oom_score_adj, and every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroups are v1 and managed by the kubelet directly (cgroupDriver: cgroupfs), not by systemd.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"""

