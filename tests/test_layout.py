"""The package layout is the architecture: these rules keep each layer's imports pointing one way.

What runs in the container images (rl, run, rundir, storage) never imports the launch layer or the CLI;
the RL library knows nothing of runs; and acting (the numpy side of rl) never imports TensorFlow, so actor
processes stay light. Checked on the source, so a lazy import inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rlkube"

# package -> the rlkube packages it must never import
FORBIDDEN = {
    "rl": ("rlkube.run", "rlkube.rundir", "rlkube.storage", "rlkube.launch", "rlkube.cli"),
    "run": ("rlkube.launch", "rlkube.cli"),
    "rundir": ("rlkube.rl", "rlkube.run", "rlkube.storage", "rlkube.launch", "rlkube.cli"),
    "storage": ("rlkube.rl", "rlkube.run", "rlkube.launch", "rlkube.cli"),
    "launch": ("rlkube.cli", "tensorflow"),
}
# The numpy side of the RL library: actors import these and must not pay for TensorFlow.
NUMPY_SIDE = ("rl/networks.py", "rl/replay.py", "rl/envs.py", "rl/atari.py", "rl/policies", "rl/action_selection.py",
              "rl/schedules.py", "rl/distributions.py", "rl/hparams", "rl/pacing.py", "run/workers.py")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def sources(relative: str) -> list[Path]:
    path = PACKAGE / relative
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_the_layers_above_it(package: str) -> None:
    offences = [f"{path.relative_to(PACKAGE.parent)} imports {name}"
                for path in sources(package) for name in sorted(imported_modules(path))
                if any(name == layer or name.startswith(f"{layer}.") for layer in FORBIDDEN[package])]
    assert not offences, offences


def test_the_acting_side_never_imports_tensorflow() -> None:
    offences = [f"{path.relative_to(PACKAGE.parent)} imports {name}"
                for relative in NUMPY_SIDE for path in sources(relative)
                for name in sorted(imported_modules(path)) if name.split(".")[0] == "tensorflow"]
    assert not offences, offences


def test_the_acting_side_never_imports_the_learners() -> None:
    # Maths both halves use (rl/distributions.py, rl/networks.py) lives on the numpy side; agents import it.
    offences = [f"{path.relative_to(PACKAGE.parent)} imports {name}"
                for relative in NUMPY_SIDE for path in sources(relative)
                for name in sorted(imported_modules(path)) if name.startswith("rlkube.rl.agents")]
    assert not offences, offences


def test_every_numpy_side_entry_exists() -> None:
    assert [relative for relative in NUMPY_SIDE if not (PACKAGE / relative).exists()] == []
