"""The machines a profile's pods land on, and whether a copy's requests fit one of them.

A pod whose requests exceed every node it may land on stays Pending for ever (or, with an
autoscaler, for ever with a note); one whose requests a node holds with room to spare pays for the
room. So a profile's requests are checked against the allocatable CPU and memory of the machine it
selects: a TPU type's host, the `node.kubernetes.io/instance-type` in its node_selector, or else any
machine of its provider that carries its GPUs.

Capacities are the clouds' published machine shapes. Allocatable is capacity less what the node
keeps for itself, estimated with the provider's documented reservations (below): a node's own
DaemonSets take a little more, so requests should stay a little under it.
"""

import math
from dataclasses import dataclass

from rlkube.launch.clusters import ClusterProfile, quantity_bytes

MIB = 2**20
GIB = 2**30
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"  # a well-known label: GKE and EKS set it on every node


@dataclass(frozen=True)
class Machine:
    name: str  # the machine type as its cloud names it (and labels its nodes)
    provider: str  # gke or eks: whose reservations apply
    cpus: int  # vCPUs
    memory_gib: float  # memory (Compute Engine's "GB" are GiB)
    accelerator: str  # the GPU model as a profile names it, or the TPU host as GKE labels it
    accelerators: int  # GPUs, or TPU chips, on the machine
    max_pods: int = 110  # EKS reserves memory per pod it may hold (the AMI's eni-max-pods.txt); GKE does not

    @property
    def allocatable_cpus(self) -> float:
        return self.cpus - _reserved_cpus(self.cpus)

    @property
    def allocatable_memory(self) -> int:
        """Bytes pods may request: capacity less the kubelet's reservation and its eviction threshold (100 MiB)."""
        capacity = round(self.memory_gib * GIB)
        # The EKS-optimized AMI's kube-reserved memory is 255 MiB + 11 MiB per pod the node may hold.
        eks = self.provider == "eks"
        reserved = 255 * MIB + 11 * MIB * self.max_pods if eks else _gke_reserved_memory(capacity)
        return capacity - reserved - 100 * MIB


# Reservations, from "Plan GKE Standard node sizes" (cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes,
# "Memory and CPU reservations"); the EKS-optimized AMI reserves CPU in the same tiers
# (awslabs/amazon-eks-ami, bootstrap's kube-reserved) and memory per pod, as Machine.allocatable_memory says.
_CPU_TIERS = ((1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025))  # (cores, share reserved of them)
_GKE_MEMORY_TIERS = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02))  # (GiB, share)


def _tiered(amount: float, tiers: tuple[tuple[float, float], ...]) -> float:
    reserved = 0.0
    for size, share in tiers:
        reserved += min(amount, size) * share
        amount -= min(amount, size)
    return reserved


def _reserved_cpus(cpus: int) -> float:
    return _tiered(cpus, _CPU_TIERS)


def _gke_reserved_memory(capacity: int) -> int:
    return round(_tiered(capacity / GIB, _GKE_MEMORY_TIERS) * GIB)


# TPU hosts: GKE's machine type per TPU generation and chips per host, vCPUs and memory from "Plan TPUs in GKE"
# (cloud.google.com/kubernetes-engine/docs/concepts/plan-tpus) and Cloud TPU's pages per version
# (cloud.google.com/tpu/docs/v5e, v5p, v4, v6e). The accelerator is the GKE label (rlkube.launch.tpu) and chips
# per host, so a multi-host slice's hosts are found too.
TPU_MACHINES = (
    Machine("ct5lp-hightpu-1t", "gke", 24, 48, "tpu-v5-lite-podslice", 1),
    Machine("ct5lp-hightpu-4t", "gke", 112, 192, "tpu-v5-lite-podslice", 4),
    Machine("ct5lp-hightpu-8t", "gke", 224, 384, "tpu-v5-lite-podslice", 8),
    Machine("ct4p-hightpu-4t", "gke", 240, 407, "tpu-v4-podslice", 4),
    Machine("ct5p-hightpu-4t", "gke", 208, 448, "tpu-v5p-slice", 4),
    Machine("ct6e-standard-1t", "gke", 44, 176, "tpu-v6e-slice", 1),
    Machine("ct6e-standard-4t", "gke", 180, 720, "tpu-v6e-slice", 4),
    Machine("ct6e-standard-8t", "gke", 180, 1440, "tpu-v6e-slice", 8),
)
# GPU machines, the GPU named as profiles name it (on GKE, the cloud.google.com/gke-accelerator label).
# GKE: Compute Engine's "GPU machine types" (cloud.google.com/compute/docs/gpus) for G2 (L4), A2 (A100) and A3 (H100).
# EKS: EC2's instance types (aws.amazon.com/ec2/instance-types: G5, P4d, P5); max pods from the EKS AMI's
# eni-max-pods.txt.
GPU_MACHINES = (
    Machine("g2-standard-4", "gke", 4, 16, "nvidia-l4", 1),
    Machine("g2-standard-8", "gke", 8, 32, "nvidia-l4", 1),
    Machine("g2-standard-12", "gke", 12, 48, "nvidia-l4", 1),
    Machine("g2-standard-16", "gke", 16, 64, "nvidia-l4", 1),
    Machine("g2-standard-32", "gke", 32, 128, "nvidia-l4", 1),
    Machine("g2-standard-24", "gke", 24, 96, "nvidia-l4", 2),
    Machine("g2-standard-48", "gke", 48, 192, "nvidia-l4", 4),
    Machine("g2-standard-96", "gke", 96, 384, "nvidia-l4", 8),
    Machine("a2-highgpu-1g", "gke", 12, 85, "nvidia-tesla-a100", 1),
    Machine("a2-highgpu-2g", "gke", 24, 170, "nvidia-tesla-a100", 2),
    Machine("a2-highgpu-4g", "gke", 48, 340, "nvidia-tesla-a100", 4),
    Machine("a2-highgpu-8g", "gke", 96, 680, "nvidia-tesla-a100", 8),
    Machine("a2-ultragpu-1g", "gke", 12, 170, "nvidia-a100-80gb", 1),
    Machine("a2-ultragpu-8g", "gke", 96, 1360, "nvidia-a100-80gb", 8),
    Machine("a3-highgpu-8g", "gke", 208, 1872, "nvidia-h100-80gb", 8),
    Machine("g5.xlarge", "eks", 4, 16, "nvidia-a10g", 1, max_pods=58),
    Machine("g5.2xlarge", "eks", 8, 32, "nvidia-a10g", 1, max_pods=58),
    Machine("g5.4xlarge", "eks", 16, 64, "nvidia-a10g", 1, max_pods=234),
    Machine("g5.8xlarge", "eks", 32, 128, "nvidia-a10g", 1, max_pods=234),
    Machine("g5.16xlarge", "eks", 64, 256, "nvidia-a10g", 1, max_pods=234),
    Machine("g5.12xlarge", "eks", 48, 192, "nvidia-a10g", 4, max_pods=737),
    Machine("g5.24xlarge", "eks", 96, 384, "nvidia-a10g", 4, max_pods=737),
    Machine("g5.48xlarge", "eks", 192, 768, "nvidia-a10g", 8, max_pods=345),
    Machine("p4d.24xlarge", "eks", 96, 1152, "nvidia-a100", 8, max_pods=737),
    Machine("p5.48xlarge", "eks", 192, 2048, "nvidia-h100", 8, max_pods=100),
)
MACHINES = {machine.name: machine for machine in (*TPU_MACHINES, *GPU_MACHINES)}


def selected_machines(profile: ClusterProfile) -> list[Machine]:
    """The known machines a profile's pods may land on, smallest first; empty where rlkube knows none (CPU nodes,
    a machine type or GPU model not in the tables)."""
    if (pinned := profile.node_selector.get(INSTANCE_TYPE_LABEL)) is not None:
        return [MACHINES[pinned]] if pinned in MACHINES else []
    if (tpu_slice := profile.tpu_slice) is not None:
        return [m for m in TPU_MACHINES
                if (m.accelerator, m.accelerators) == (tpu_slice.accelerator, tpu_slice.chips_per_host)]
    gpu = profile.accelerator
    if gpu is None:
        return []
    return sorted((m for m in GPU_MACHINES if (m.provider, m.accelerator) == (profile.provider, gpu.name)
                   and m.accelerators >= gpu.count), key=lambda m: (m.cpus, m.memory_gib))


def cpu_cores(value: str | float) -> float:
    """A Kubernetes CPU quantity (2, 1.5, "500m") in cores; ValueError if it is not one."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def node_fit_problem(profile: ClusterProfile) -> str | None:
    """One line saying why a copy's requests fit no machine the profile selects, or None where they fit one (or
    rlkube knows none of its machines). `rlkube render` and `submit` refuse with it; `rlkube doctor` reports it."""
    machines = selected_machines(profile)
    accelerator = profile.accelerator
    carriers = [m.accelerators for m in GPU_MACHINES if accelerator is not None and accelerator.type == "gpu"
                and (m.provider, m.accelerator) == (profile.provider, accelerator.name)]
    if carriers and max(carriers) < accelerator.count:
        return (f"cluster '{profile.name}': a copy asks for {accelerator.count} {accelerator.name} GPUs, and no "
                f"{profile.provider} machine has more than {max(carriers)}; lower the accelerator's count")
    if not machines:
        return None
    resources = profile.resources
    try:
        cpus = cpu_cores(resources.get("cpu", 0))
        memory = quantity_bytes(str(resources.get("memory", "0")))
    except ValueError:
        return None  # the API server names a malformed quantity itself
    if any(cpus <= m.allocatable_cpus and memory <= m.allocatable_memory for m in machines):
        return None
    largest = machines[-1]
    what = largest.name if len(machines) == 1 else f"any node with {accelerator.name}, up to {largest.name},"
    return (f"cluster '{profile.name}': a pod requests cpu {resources.get('cpu', 0)} and memory "
            f"{resources.get('memory', '0')}, more than {what} holds ({largest.allocatable_cpus:.2f} CPUs, "
            f"{largest.allocatable_memory / GIB:.1f}Gi allocatable); lower the profile's resources to fit")
