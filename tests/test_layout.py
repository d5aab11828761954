"""The package layout is the architecture: these rules keep each layer's imports pointing one way.

What runs in the container images (rl, run, rundir, storage) never imports the launch layer or the CLI;
the RL library knows nothing of runs; and acting (the numpy side of rl) never imports TensorFlow, so actor
processes stay light; and within a layer no modules import each other round a loop. Checked on the source, so a
lazy import inside a function counts too.
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
NUMPY_SIDE = ("rl/networks.py", "rl/replay.py", "rl/envs.py", "rl/atari.py", "rl/atari_envpool.py", "rl/policies",
              "rl/action_selection.py", "rl/schedules.py", "rl/distributions.py", "rl/hparams", "rl/pacing.py",
              "run/workers.py")


def imported_modules(path: Path) -> set[str]:
    return imported_modules_of(ast.parse(path.read_text()))


def imported_modules_of(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imported_modules(path: Path) -> set[str]:
    """imported_modules less the imports under `if TYPE_CHECKING:`, which never run and so close no loop."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = [ast.Pass()]
    return imported_modules_of(tree)


def import_cycles(package: str) -> list[list[str]]:
    """The groups of a package's modules that import each other round a loop at run time, lazy imports included. A
    module's own package, which Python initialises before it, is no edge: that is how a package's __init__ registers
    its members (rlkube.rl.agents, rlkube.launch.targets)."""
    modules = {module_name(path): path for path in sources(package)}
    graph = {name: {imported for imported in runtime_imported_modules(path) if imported in modules} - {name}
             for name, path in modules.items()}

    def reachable(start: str) -> set[str]:
        found, frontier = set(), [start]
        while frontier:
            for imported in graph[frontier.pop()] - found:
                found.add(imported)
                frontier.append(imported)
        return found

    reach = {name: reachable(name) for name in graph}
    loops = {frozenset(other for other in reach[name] if name in reach[other]) for name in graph if name in reach[name]}
    return sorted(sorted(loop) for loop in loops)


@pytest.mark.parametrize("package", ["rl", "run", "rundir", "storage", "launch", "cli"])
def test_no_modules_import_each_other_round_a_loop(package: str) -> None:
    assert import_cycles(package) == []
