"""The rules every target shares, through the Target interface rather than the CLI, on the local target.

Whatever the target, base.py records each experiment where it ran, refuses a taken name in one line (submit and
dryrun alike) and, with replace, cancels the recorded experiment through its own target before starting its
successor. tests/k8s/test_kube_target.py checks the same on a cluster, through the CLI.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.spec import ExperimentSpec, build_spec
from rlkube.launch.targets.base import Target, target_for
from rlkube.rl.hparams import get_hparams
from rlkube.run.options import EXPERIMENT_ID_ENV, CopyPlan, TrainOptions, copies_json
from rlkube.rundir.layout import COPIES_FILE
from tests.conftest import run_rlkube

NAME = "same"


def quick_spec(train_steps: int) -> ExperimentSpec:
    train = TrainOptions("dqn_cartpole", "eval_every=100,checkpoint_every=100", train_steps=train_steps,
                       eval_episodes=1, test_episodes=1)
    return build_spec(get_profile("local"), train, 1, name=NAME)


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    target = target_for(get_profile("local"))
    yield target
    if store.exists(NAME):  # no copy outlives the test
        target.cancel(store.get(NAME))


def test_a_taken_name_is_refused_in_one_line_unless_replaced(target: Target) -> None:
    first = target.submit(quick_spec(100_000))
    assert store.get(NAME).target == target.kind
    for attempt in (target.submit, target.dryrun):
        with pytest.raises(UserError) as refused:
            attempt(quick_spec(300))
        assert str(refused.value) == f"experiment '{NAME}' exists already; choose another --name, or --replace it"

    deadline = time.monotonic() + 180
    while target.describe(store.get(NAME))[0].last_step is None:  # running, so a stop is a checkpointed one
        assert time.monotonic() < deadline, (Path(first.output_dir) / "copy-0" / "train.log").read_text()
        time.sleep(0.5)
    assert target.dryrun(quick_spec(300), replace=True).startswith("dry run: would start 1 local copies")
    assert target.describe(store.get(NAME))[0].phase == "Running"

    target.submit(quick_spec(300), replace=True)
    # The first experiment was cancelled through its target, so its copy stopped after a checkpoint.
    assert "stopped by signal" in (Path(first.output_dir) / "copy-0" / "train.log").read_text()
    record = store.get(NAME)
    assert (record.spec.train.train_steps, record.backend["cancelled"]) == (300, False)


def test_copies_planned_one_by_one_run_locally_with_their_own_seeds_and_overrides(target: Target) -> None:
    train = TrainOptions("dqn_cartpole", "eval_every=100,checkpoint_every=100", train_steps=300, eval_episodes=1,
                         test_episodes=1)
    copies = [CopyPlan(0, 11, "gamma=0.9"), CopyPlan(1, 5, "lr=0.002")]
    spec = target.submit(build_spec(get_profile("local"), train, copies, name=NAME))
    run = Path(spec.output_dir)
    deadline = time.monotonic() + 300
    while {c.phase for c in target.describe(store.get(NAME))} - {"Succeeded", "Failed"}:
        assert time.monotonic() < deadline, (run / "copy-0" / "train.log").read_text()
        time.sleep(0.5)
    assert [c.phase for c in target.describe(store.get(NAME))] == ["Succeeded"] * 2, \
        [(run / f"copy-{i}" / "train.log").read_text() for i in (0, 1)]

    default = get_hparams("dqn_cartpole")
    recorded = [yaml.safe_load((run / f"copy-{i}" / "hparams.yaml").read_text()) for i in (0, 1)]
    assert [r["seed"] for r in recorded] == [11, 5]
    assert [(r["hparams"]["gamma"], r["hparams"]["lr"]) for r in recorded] == [(0.9, default.lr),
                                                                                (default.gamma, 0.002)]

    # Copy 0 resumed with another seed (by the experiment's own copy: any other writer is refused before) would
    # continue RNGs that came from its first one: refused in one line.
    other_seed = run / "other-seed.json"
    other_seed.write_text(copies_json([CopyPlan(0, 12, "gamma=0.9"), copies[1]]))
    refused = run_rlkube("train", *spec.train.args(), "--output-dir", str(run), "--copies-file", str(other_seed),
                         "--copy-index", "0", env={EXPERIMENT_ID_ENV: spec.experiment_id})
    assert refused.returncode == 2, refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {run / 'copy-0'} holds a run with seed 11, not 12; use a new --output-dir or the same seed to resume"]
    assert (run / COPIES_FILE).read_text() == copies_json(copies)
