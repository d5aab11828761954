"""Shell completion through click's own machinery, as bash, zsh and fish call it: the installed `rlkube` script run
with _RLKUBE_COMPLETE and the words typed so far. Every completion is also checked to import no TensorFlow."""

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.spec import build_spec
from rlkube.launch.sweep.methods import PRUNERS, SAMPLERS
from rlkube.rl.hparams import hparams_registry
from rlkube.run.options import TrainOptions

RLKUBE_SCRIPT = Path(sys.executable).with_name("rlkube")  # the console script a user's shell runs
HEAVY = ("tensorflow", "optuna", "mlflow", "wandb")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # only this test's profiles
    monkeypatch.chdir(tmp_path)
    return tmp_path


def complete(line: str, shell: str = "bash") -> list[str]:
    """The candidates for the last word of `line` (a trailing space: a new, empty word), as `shell` asks for them."""
    words = line.split()
    incomplete = "" if line.endswith(" ") else words[-1]
    if shell == "fish":  # fish passes the line up to the cursor and the word under it
        env = {"COMP_WORDS": line, "COMP_CWORD": incomplete}
    else:  # bash and zsh pass every word and the index of the one under the cursor
        env = {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1 if incomplete else len(words))}
    result = subprocess.run([sys.executable, "-X", "importtime", str(RLKUBE_SCRIPT)], capture_output=True, text=True,
                            env={**os.environ, **env, "_RLKUBE_COMPLETE": f"{shell}_complete"}, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)$", result.stderr, re.M)}
    assert not imported & set(HEAVY), f"completing '{line}' imported {sorted(imported & set(HEAVY))}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if shell == "zsh":  # type, value, help: three lines per candidate
        lines = result.stdout.splitlines()
        return [value for kind, value in zip(lines[::3], lines[1::3], strict=True) if kind == "plain"]
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]


def record_experiment(name: str, minutes_ago: int) -> None:
    """An experiment in the store as `rlkube submit` records it, submitted that long ago (no copy is started)."""
    spec = build_spec(get_profile("local"), TrainOptions(hparams="dqn_cartpole"), 1, name=name,
                      now=datetime.now(UTC) - timedelta(minutes=minutes_ago))
    store.save(spec, "local", None, {}, creator="alice")


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_experiment_names_complete_from_the_store_newest_first_in_every_shell(shell: str) -> None:
    record_experiment("cartpole-old", minutes_ago=30)
    record_experiment("cartpole-new", minutes_ago=1)
    record_experiment("pong", minutes_ago=10)
    assert complete("rlkube logs cart", shell) == ["cartpole-new", "cartpole-old"]
    assert complete("rlkube status ", shell) == ["cartpole-new", "pong", "cartpole-old"]


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("command", ["logs", "status", "results", "cancel", "tensorboard"])
def test_every_command_that_takes_an_experiment_completes_its_name(command: str) -> None:
    record_experiment("only-one", minutes_ago=1)
    assert complete(f"rlkube {command} on") == ["only-one"]


@pytest.mark.usefixtures("workdir")
def test_tensorboard_completes_sweeps_after_experiments() -> None:
    record_experiment("ppo-sweep-t0", minutes_ago=1)
    store.save_sweep(store.SweepRecord("ppo-sweep", "journal.log", "driver", None, datetime.now(UTC).isoformat()))
    assert complete("rlkube tensorboard ppo") == ["ppo-sweep-t0", "ppo-sweep"]
    assert complete("rlkube logs ppo") == ["ppo-sweep-t0"]  # a sweep has no logs of its own


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("command", ["train", "submit", "render"])
def test_hparams_sets_complete_on_every_command_with_train_flags(command: str) -> None:
    assert complete(f"rlkube {command} --hparams dqn_cart") == ["dqn_cartpole"]
    assert complete(f"rlkube {command} --hparams ppo_") == [n for n in hparams_registry.names() if n.startswith("ppo_")]
    assert len(complete(f"rlkube {command} --hparams ")) == len(hparams_registry.names())


@pytest.mark.usefixtures("workdir")
def test_a_sweeps_samplers_and_pruners_complete_from_their_registry_without_optuna() -> None:
    assert complete("rlkube sweep start --sampler ") == SAMPLERS.names()
    assert complete("rlkube sweep start --pruner ") == PRUNERS.names()
    assert complete("rlkube sweep start --pruner w") == [name for name in PRUNERS if name.startswith("w")]


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("shell", ["zsh", "fish"])  # bash splits words at '=', so it completes the first name only
def test_hparam_overrides_complete_the_sets_names_then_the_values_a_field_may_take(shell: str) -> None:
    assert complete("rlkube train --hparams ppo_cartpole --hparam-override lr=1e-3,use_s", shell) == [
        "lr=1e-3,use_sde="]
    assert complete("rlkube submit --hparams dqn_cartpole --hparam-override double_q=true,distributional=", shell) == [
        f"double_q=true,distributional={head}" for head in ("none", "c51", "qr")]
    # Without --hparams first, the hparams every set has.
    assert complete("rlkube train --hparam-override vector_mode=", shell) == [
        "vector_mode=sync", "vector_mode=async", "vector_mode=envpool"]


def test_cluster_profiles_complete_the_shipped_ones_and_the_users(workdir: Path) -> None:
    (workdir / "rlkube.yaml").write_text(yaml.safe_dump({"gke-mine": {"target": "local", "output": "runs"}}))
    assert complete("rlkube submit --hparams dqn_cartpole --cluster gke") == ["gke-tpu", "gke-gpu", "gke-mine"]
    assert {"local", "kube", "eks", "gke-mine"} <= set(complete("rlkube render --cluster "))


@pytest.mark.usefixtures("workdir")
def test_env_ids_complete_rlkubes_gymnasiums_and_ataris() -> None:
    assert complete("rlkube train --hparams dqn_cartpole --env CartPole") == ["CartPole-v0", "CartPole-v1"]
    assert complete("rlkube submit --env HalfCheetah-v5") == ["HalfCheetah-v5"]
    assert complete("rlkube train --env ALE/Pong") == ["ALE/Pong-v5"]


def test_a_broken_profile_file_completes_nothing_and_prints_no_traceback(workdir: Path) -> None:
    (workdir / "rlkube.yaml").write_text("gke-mine: [unclosed\n")
    assert complete("rlkube submit --cluster ") == []
