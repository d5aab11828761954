"""The rules every target shares, through the Target interface rather than the CLI, on the local target.

Whatever the target, base.py records each experiment where it ran, refuses a taken name in one line (submit and
dryrun alike) and, with replace, cancels the recorded experiment through its own target before starting its
successor. tests/k8s/test_kube_target.py checks the same on a cluster, through the CLI.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.spec import ExperimentSpec, TrainFlags, build_spec
from rlkube.launch.targets.base import Target, target_for

NAME = "same"


def quick_spec(train_steps: int) -> ExperimentSpec:
    train = TrainFlags("dqn_cartpole", "eval_every=100,checkpoint_every=100", train_steps=train_steps,
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
