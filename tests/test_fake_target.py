"""The fake target (tests/fake_target.py) is a target like any other: registered by its kind, chosen by a profile,
and driven by the CLI's verbs in process and in subprocesses, with no TensorFlow process anywhere."""

import dataclasses
import getpass
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import tests.fake_target
from rlkube.cli.main import cli
from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.clusters import ClusterProfile, get_profile
from rlkube.launch.spec import build_spec
from rlkube.launch.targets.base import target_for, target_registry
from rlkube.run.options import CopyPlan, TrainOptions
from rlkube.rundir import layout
from tests.conftest import run_rlkube
from tests.fake_target import FakeTarget, fake_env, fake_profile, wait_for_end

SUBMIT = ["submit", "--hparams", "dqn_cartpole", "--cluster", "fake", "--train-steps", "2000", "--hparam-override",
          "eval_every=500"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    fake_profile(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("project")
def test_a_profile_with_target_fake_picks_the_registered_fake_target() -> None:
    assert "fake" in target_registry.names()
    assert isinstance(target_for(get_profile("fake")), FakeTarget)
    with pytest.raises(UserError, match=r"unknown target 'fkae'; did you mean fake\?"):
        target_for(ClusterProfile(name="typo", target="fkae"))


@pytest.mark.usefixtures("project")
def test_fake_copies_score_best_near_lr_1e_3_and_write_the_run_directory_readers_use() -> None:
    train = TrainOptions("dqn_cartpole", "eval_every=500", train_steps=2000)
    copies = [CopyPlan(0, 0, "lr=0.001"), CopyPlan(1, 0, "lr=0.1"), CopyPlan(2, 0, "lr=0.00001")]
    target = target_for(get_profile("fake"))
    spec = target.submit(build_spec(get_profile("fake"), train, copies, name="lrs"))
    record = store.get("lrs")
    assert [c.phase for c in wait_for_end(record)] == ["Succeeded"] * 3
    evaluations = target.evaluations(record)
    assert [e["step"] for e in evaluations[0]] == [500, 1000, 1500, 2000]
    finals = [evaluations[copy][-1]["mean_return"] for copy in range(3)]
    assert finals[0] > max(finals[1:])
    copy = layout.copy_dir(Path(spec.output_dir), 0)
    summary = json.loads((copy / layout.SUMMARY_FILE).read_text())
    assert (summary["total_steps"], summary["eval_mean_return"]) == (2000, finals[0])
    assert json.loads((copy / layout.PROGRESS_FILE).read_text())["step"] == 2000


def test_the_cli_verbs_work_in_process_through_the_fake_target(project: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    submitted = runner.invoke(cli, [*SUBMIT, "--name", "done", "--follow"])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted done to fake: 1 copy of dqn_cartpole" in submitted.output
    assert "copy-0 | eval at step 2000:" in submitted.output.splitlines()[-1]
    status = json.loads(runner.invoke(cli, ["status", "done", "-o", "json"]).output)
    assert (status["phase"], status["copies"][0]["last_step"]) == ("Succeeded", 2000)
    logs = runner.invoke(cli, ["logs", "done"]).output.splitlines()
    assert "copy-0 | eval at step 2000:" in logs[-1]

    monkeypatch.setattr(tests.fake_target, "STEPS_PER_SECOND", 1.0)  # a copy that is still running
    assert runner.invoke(cli, [*SUBMIT, "--name", "slow"]).exit_code == 0
    listed = {entry["name"]: entry["phase"] for entry in json.loads(runner.invoke(cli, ["list", "-o", "json"]).output)}
    assert listed == {"done": "Succeeded", "slow": "Running"}
    cancelled = runner.invoke(cli, ["cancel", "slow"])
    assert cancelled.output.startswith("cancelled slow: removed fake copy-0"), cancelled.output
    assert json.loads(runner.invoke(cli, ["status", "slow", "-o", "json"]).output)["phase"] == "Cancelled"
    assert runner.invoke(cli, ["render", "--hparams", "dqn_cartpole", "--cluster", "fake"]).exit_code == 2
    assert not (project / "runs" / "slow" / layout.copy_name(0) / layout.SUMMARY_FILE).exists()


@pytest.mark.usefixtures("project")
def test_list_says_who_submitted_each_experiment_and_mine_keeps_only_ones_own() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, [*SUBMIT, "--name", "ours"]).exit_code == 0
    ours = store.get("ours")
    store.save(dataclasses.replace(ours.spec, name="theirs"), ours.target, None, ours.backend, creator="bob")
    listed = json.loads(runner.invoke(cli, ["list", "-o", "json"]).output)
    assert {entry["name"]: entry["creator"] for entry in listed} == {"ours": getpass.getuser(), "theirs": "bob"}
    table = runner.invoke(cli, ["list", "--mine"]).output.splitlines()
    assert table[0].endswith("SUBMITTED BY")
    assert [row.split()[0] for row in table[1:]] == ["ours"]


def test_the_rlkube_command_and_what_it_starts_know_the_fake_target_through_fake_env(project: Path) -> None:
    env = fake_env(RLKUBE_FAKE_STEPS_PER_SECOND="1", RLKUBE_DATA_DIR=str(project / "data"),
                   XDG_CONFIG_HOME=str(project / "config"))
    submitted = run_rlkube(*SUBMIT, "--name", "sub", "--copies", "2", cwd=project, env=env)
    assert submitted.returncode == 0, submitted.stderr
    status = run_rlkube("status", "sub", "-o", "json", cwd=project, env=env)
    assert [c["phase"] for c in json.loads(status.stdout)["copies"]] == ["Running"] * 2, status.stderr
    listed = run_rlkube("list", cwd=project, env=env)
    assert listed.stdout.splitlines()[1].split()[:3] == ["sub", "fake", "Running"], listed.stderr
    cancelled = run_rlkube("cancel", "sub", cwd=project, env=env)
    assert "removed fake copy-0, fake copy-1" in cancelled.stdout, cancelled.stderr
    assert json.loads(run_rlkube("status", "sub", "-o", "json", cwd=project, env=env).stdout)["phase"] == "Cancelled"
