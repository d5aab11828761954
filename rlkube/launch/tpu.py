"""TPU names as people know them, mapped to what GKE schedules on.

GKE selects TPU nodes by accelerator label and topology, not by the Cloud TPU names
(`v5litepod-16`, `v4-8`). The number in v4 and v5p names counts TensorCores (two per chip); in
v5e (v5litepod) and v6e names it counts chips.
"""

import math
from dataclasses import dataclass

from rlkube.errors import UserError


@dataclass(frozen=True)
class TPUSlice:
    accelerator: str  # the value of cloud.google.com/gke-tpu-accelerator
    topology: str  # the value of cloud.google.com/gke-tpu-topology
    chips: int
    chips_per_host: int

    @property
    def hosts(self) -> int:
        return self.chips // self.chips_per_host


# Generation -> (GKE accelerator label, TensorCores per unit in the name, chips per host when multi-host)
GENERATIONS = {
    "v4": ("tpu-v4-podslice", 2, 4),
    "v5p": ("tpu-v5p-slice", 2, 4),
    "v5litepod": ("tpu-v5-lite-podslice", 1, 4),
    "v5e": ("tpu-v5-lite-podslice", 1, 4),
    "v6e": ("tpu-v6e-slice", 1, 4),
}
# 2D slices (v5e, v6e): chips -> topology; single-host machines hold up to 8 chips.
TOPOLOGIES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
SINGLE_HOST_MAX_2D = 8


def _topology_3d(chips: int) -> str:
    """v4 / v5p: the near-cubic AxBxC holding `chips` chips, as GKE writes it (2x2x1, 2x2x2, 2x2x4, 2x4x4)."""
    sides = [1, 1, 1]
    position = 0
    while math.prod(sides) < chips:
        sides[position % 3] *= 2
        position += 1
    # The one single-host 3D slice keeps its flat side last; larger ones are written smallest first.
    return "2x2x1" if chips == 4 else "x".join(str(s) for s in sorted(sides))


def resolve(name: str) -> TPUSlice:
    """`v5litepod-16` -> tpu-v5-lite-podslice 4x4, 16 chips on 4 hosts; a UserError for unknown names."""
    generation, _, size = name.lower().partition("-")
    known = ", ".join(f"{g}-N" for g in GENERATIONS)
    if generation not in GENERATIONS or not size.isdigit():
        raise UserError(f"unknown TPU type '{name}'; use a name like v5litepod-8, v4-8, v5p-8 or v6e-8 ({known})")
    accelerator, cores_per_chip, multi_host_chips = GENERATIONS[generation]
    units = int(size)
    if units % cores_per_chip:
        raise UserError(f"unknown TPU type '{name}': {generation} sizes count TensorCores, so they are even")
    chips = units // cores_per_chip
    if cores_per_chip == 1:
        if chips not in TOPOLOGIES_2D:
            sizes = ", ".join(f"{generation}-{c}" for c in TOPOLOGIES_2D)
            raise UserError(f"unknown TPU type '{name}'; {generation} comes as {sizes}")
        per_host = chips if chips <= SINGLE_HOST_MAX_2D else multi_host_chips
        return TPUSlice(accelerator, TOPOLOGIES_2D[chips], chips, per_host)
    if chips < 4 or chips & (chips - 1):
        raise UserError(f"unknown TPU type '{name}'; {generation} slices are {generation}-8, -16, -32, ... "
                        f"(powers of two, counting TensorCores)")
    return TPUSlice(accelerator, _topology_3d(chips), chips, min(chips, multi_host_chips))


def single_host_names() -> list[str]:
    """Every TPU type whose slice is one host: v4-8, v5p-8, and 1, 4 or 8 chips of v5e (v5litepod) and v6e."""
    names = []
    for generation, (_, cores_per_chip, multi_host_chips) in GENERATIONS.items():
        if cores_per_chip == 1:
            names += [f"{generation}-{chips}" for chips in TOPOLOGIES_2D if chips <= SINGLE_HOST_MAX_2D]
        else:  # 3D (v4, v5p): only 2x2x1, the chips of one host
            names.append(f"{generation}-{multi_host_chips * cores_per_chip}")
    return names


def resolve_single_host(name: str) -> TPUSlice:
    """resolve(name), refusing a slice of several hosts.

    Each host of a slice runs `rlkube train` for the same copy, and nothing in the learner reads which host it is,
    so every host would train that copy into the same directory. Until a multi-host learner exists, one host only.
    """
    tpu_slice = resolve(name)
    if tpu_slice.hosts > 1:
        raise UserError(f"TPU type '{name}' is a slice of {tpu_slice.hosts} hosts, and rlkube trains on one host only "
                        f"(multi-host slices are not supported yet); use a single-host type: "
                        f"{', '.join(single_host_names())}")
    return tpu_slice
