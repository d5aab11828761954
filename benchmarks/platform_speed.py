"""The platform's latencies against the loopback test control plane (tests/k8s/cluster.py).

- `rlkube --help`: wall time, and that TensorFlow stays unimported;
- `rlkube submit --copies 5` to the cluster: wall time of the command;
- `rlkube logs` for those 5 copies: time until the first line of every copy has arrived.

    python benchmarks/platform_speed.py
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "k8s"))

from cluster import TestCluster  # noqa: E402

RLKUBE = [sys.executable, "-m", "rlkube"]
REPEATS = 5


def timed(args: list[str], env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run([*RLKUBE, *args], env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def first_line_of_every_copy(name: str, copies: int, env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    process = subprocess.Popen([*RLKUBE, "logs", name], env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    seen: set[str] = set()
    for line in process.stdout:
        seen.add(line.split(" | ")[0])
        if len(seen) == copies:
            break
    elapsed = time.perf_counter() - started
    process.kill()
    process.wait()
    return elapsed


def main() -> None:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir, TestCluster() as cluster:
        cluster.create_namespace("bench")
        cluster.write_pod_log("step 100/1000  900 SPS  return    21.00")
        profile = {"target": "kubernetes", "provider": "gke", "context": cluster.context, "namespace": "bench",
                   "image": "rlkube:bench", "output": "gs://bucket/runs", "labels": {"rlkube.io/test-hold": "true"},
                   "accelerator": {"type": "tpu", "name": "v5litepod-8"}}
        Path(workdir, "rlkube.yaml").write_text(yaml.safe_dump({"bench": profile}))
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "RLKUBE_DATA_DIR": f"{workdir}/data"}
        results["help_s"] = statistics.median(timed(["--help"], env, workdir) for _ in range(REPEATS))
        submits, logs = [], []
        for attempt in range(REPEATS):
            name = f"bench-{attempt}"
            submits.append(timed(["submit", "--cluster", "bench", "--hparams", "dqn_cartpole", "--copies", "5",
                                  "--name", name], env, workdir))
            deadline = time.monotonic() + 30
            while json.loads(subprocess.run([*RLKUBE, "status", name, "-o", "json"], env=env, cwd=workdir,
                                            capture_output=True, text=True, check=True).stdout)["phase"] != "Running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            logs.append(first_line_of_every_copy(name, 5, env, workdir))
            timed(["cancel", name], env, workdir)
        results["submit_5_copies_s"] = statistics.median(submits)
        results["logs_first_line_of_5_copies_s"] = statistics.median(logs)
    imports = subprocess.run([*RLKUBE[:1], "-X", "importtime", *RLKUBE[1:], "--help"], capture_output=True,
                             text=True, check=True).stderr
    results["help_imports_tensorflow"] = "tensorflow" in imports
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
