"""The rendered examples kept in manifests/examples/: one experiment per shipped Kubernetes profile.

Provenance is fixed so the files only change when rendering does. `python -m tests.rendered_examples`
rewrites them; test_render fails when they are stale.
"""

import dataclasses
from pathlib import Path

from rlkube.launch.clusters import ClusterProfile, load_profiles, with_accelerator
from rlkube.launch.render import render, to_yaml
from rlkube.launch.spec import ExperimentSpec, Provenance, TrainFlags, build_spec

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "manifests" / "examples"
PROVENANCE = Provenance(git_commit="0123456789abcdef0123456789abcdef01234567", git_dirty=False,
                        rlkube_version="example", submit_command="rlkube submit --hparams dqn_cartpole --copies 5",
                        created="2026-01-01T00:00:00+00:00")


def example_profiles() -> dict[str, ClusterProfile]:
    """Every shipped Kubernetes profile, plus a multi-host TPU slice and a spot EKS managed node group."""
    profiles = {name: p for name, p in load_profiles().items() if p.target == "kubernetes"}
    profiles["gke-tpu-multihost"] = dataclasses.replace(with_accelerator(profiles["gke-tpu"], "v5litepod-16"),
                                                        spot=True, name="gke-tpu-multihost")
    profiles["eks-managed-ondemand"] = dataclasses.replace(profiles["eks"], capacity_selector="managed", spot=False,
                                                           queue="research", priority_class="rl-batch",
                                                           name="eks-managed-ondemand")
    return profiles


def example_spec(profile: ClusterProfile) -> ExperimentSpec:
    copies = 2 if profile.tpu_slice and profile.tpu_slice.hosts > 1 else 5
    return build_spec(profile, TrainFlags("dqn_cartpole", overrides="lr=0.001", seed=0), copies,
                      name=f"example-{profile.name}", image=f"registry.example/rlkube:{profile.name}",
                      provenance=PROVENANCE)


def rendered_examples() -> dict[str, str]:
    return {f"{name}.yaml": to_yaml(render(example_spec(p), p)) for name, p in example_profiles().items()}


def write_examples() -> None:
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for stale in EXAMPLES_DIR.glob("*.yaml"):
        stale.unlink()
    for name, text in rendered_examples().items():
        (EXAMPLES_DIR / name).write_text(text)


if __name__ == "__main__":
    write_examples()
