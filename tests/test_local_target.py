"""`--cluster local`: copies as detached processes, with status, logs, list, cancel and TensorBoard."""

import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from tests.conftest import rlkube_command, run_rlkube

QUICK = ["--hparams", "dqn_cartpole", "--eval-episodes", "2", "--test-episodes", "1",
         "--hparam-override", "eval_every=1000,checkpoint_every=500"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rlkube(*args: str) -> subprocess.CompletedProcess:
    return run_rlkube(*args, env={"RLKUBE_DATA_DIR": os.environ["RLKUBE_DATA_DIR"]}, cwd=Path.cwd())


def wait_for_phase(name: str, phases: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(rlkube("status", name, "-o", "json").stdout)
        if state["phase"] in phases:
            return state
        time.sleep(0.5)
    raise AssertionError(f"{name} never reached {phases}: {state}")


@pytest.mark.full  # per change: these verbs through the fake target (test_fake_target.py)
def test_local_copies_run_to_completion_with_status_logs_and_list(workdir: Path) -> None:
    submitted = rlkube("submit", *QUICK, "--train-steps", "2000", "--copies", "2", "--name", "two")
    assert submitted.returncode == 0, submitted.stderr
    assert "rlkube logs two" in submitted.stdout

    followed = rlkube("logs", "two")  # follows until both copies end
    assert followed.returncode == 0, followed.stderr
    for copy in (0, 1):
        assert f"copy-{copy} | test at step 2000" in followed.stdout

    state = wait_for_phase("two", {"Succeeded", "Failed"})
    assert state["phase"] == "Succeeded"
    assert [(c["copy"], c["last_step"]) for c in state["copies"]] == [(0, 2000), (1, 2000)]
    for copy in (0, 1):
        summary = json.loads((workdir / "runs" / "two" / f"copy-{copy}" / "summary.json").read_text())
        assert summary["seed"] == copy

    listed = json.loads(rlkube("list", "-o", "json").stdout)
    assert [(e["name"], e["cluster"], e["phase"], e["copies"]) for e in listed] == [("two", "local", "Succeeded", 2)]
    tail = rlkube("logs", "two", "--copy", "1", "--tail", "1", "--no-follow").stdout.splitlines()
    assert len(tail) == 1
    assert tail[0].startswith("copy-1 | ")

    # Without a name, as a user types them, the commands mean the latest experiment.
    assert rlkube("logs", "--no-follow").stdout == rlkube("logs", "two", "--no-follow").stdout
    assert json.loads(rlkube("status", "-o", "json").stdout)["experiment"] == "two"
    assert json.loads(rlkube("results", "-o", "json").stdout)["experiment"] == "two"


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("command", ["logs", "status", "tensorboard", "results", "cancel"])
def test_a_command_without_an_experiment_and_none_submitted_says_so_in_one_line(command: str) -> None:
    result = rlkube(command)
    assert result.returncode == 2
    assert result.stderr == ("error: no experiments yet, so none to show; submit one first: "
                             "rlkube submit --hparams dqn_cartpole\n")


def test_cancel_stops_every_copy_after_a_checkpoint_and_keeps_results(workdir: Path) -> None:
    assert rlkube("submit", *QUICK, "--train-steps", "500000", "--copies", "2", "--name", "long").returncode == 0
    deadline = time.monotonic() + 120
    checkpoints = [workdir / "runs" / "long" / f"copy-{i}" / "checkpoints" for i in (0, 1)]
    while not all(c.exists() and any(c.glob("ckpt-*")) for c in checkpoints):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    cancelled = rlkube("cancel", "long")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "process copy-0" in cancelled.stdout
    assert "process copy-1" in cancelled.stdout
    state = json.loads(rlkube("status", "long", "-o", "json").stdout)
    assert state["phase"] == "Cancelled"
    log = (workdir / "runs" / "long" / "copy-0" / "train.log").read_text()
    assert "checkpoint saved" in log


@pytest.mark.usefixtures("workdir")
def test_a_taken_name_is_refused_unless_replaced() -> None:
    assert rlkube("submit", *QUICK, "--train-steps", "300", "--name", "same").returncode == 0
    again = rlkube("submit", *QUICK, "--train-steps", "300", "--name", "same")
    assert again.returncode == 2
    assert "experiment 'same' exists already; choose another --name, or --replace it" in again.stderr
    replaced = rlkube("submit", *QUICK, "--train-steps", "300", "--name", "same", "--replace")
    assert replaced.returncode == 0, replaced.stderr


@pytest.mark.full  # per change: these verbs through the fake target (test_fake_target.py)
@pytest.mark.usefixtures("workdir")
def test_tensorboard_serves_the_experiments_scalars() -> None:
    assert rlkube("submit", *QUICK, "--train-steps", "1000", "--name", "tb").returncode == 0
    wait_for_phase("tb", {"Succeeded"})
    # `rlkube tensorboard` as typed: the latest experiment, the only one here.
    server = subprocess.Popen(rlkube_command("tensorboard"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ})
    try:
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, server.stderr.read() if server.poll() is not None else line
        url = found.group(0)
        with urllib.request.urlopen(f"{url}data/plugin/scalars/tags", timeout=30) as response:
            tags = json.loads(response.read())
        assert "eval/mean_return" in tags["copy-0"]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(("args", "message"), [
    (["logs", "nope"], "unknown experiment 'nope'"),
    (["submit", "--hparams", "dqn_cartpole", "--cluster", "gke-tpuu"], "unknown cluster 'gke-tpuu'; did you mean"),
    (["submit", "--hparams", "dqn_cartpole", "--name", "Bad_Name"], "bad experiment name 'Bad_Name'"),
    (["submit", "--hparams", "dqn_cartpole", "--cluster", "gke-tpu", "--tpu", "v5litepod-12"],
     "unknown TPU type 'v5litepod-12'"),
    (["submit", "--hparams", "dqn_cartpole", "--tpu", "v4-8"], "--tpu needs a TPU profile"),
    (["render", "--hparams", "dqn_cartpole"], "runs local processes, which have no manifests"),
])
def test_bad_experiment_commands_get_one_clear_line(workdir: Path, args: list[str], message: str) -> None:
    result = rlkube(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr
    assert not (workdir / "runs").exists()


@pytest.mark.usefixtures("workdir")
def test_submit_follow_streams_until_the_copies_end() -> None:
    followed = rlkube("submit", *QUICK, "--train-steps", "600", "--copies", "2", "--name", "follow", "--follow")
    assert followed.returncode == 0, followed.stderr
    for copy in (0, 1):
        assert f"copy-{copy} | test at step 600" in followed.stdout
    assert json.loads(rlkube("status", "follow", "-o", "json").stdout)["phase"] == "Succeeded"


@pytest.mark.full  # per change: these verbs through the fake target (test_fake_target.py)
def test_results_summarise_copies_and_plot_their_curves(workdir: Path) -> None:
    assert rlkube("submit", *QUICK, "--train-steps", "2000", "--copies", "2", "--name", "res").returncode == 0
    wait_for_phase("res", {"Succeeded"})
    table = rlkube("results", "res", "--plot", str(workdir / "curves.png"))
    assert table.returncode == 0, table.stderr
    assert "eval return across 2 copies:" in table.stdout
    data = json.loads(rlkube("results", "res", "-o", "json").stdout)
    finals = [c["summary"]["eval_mean_return"] for c in data["copies"]]
    assert data["across_copies"]["eval_mean_return"][0] == pytest.approx(sum(finals) / 2)
    assert [len(c["evaluations"]) for c in data["copies"]] == [2, 2]
    image = imageio.imread(workdir / "curves.png")
    assert image.shape[0] > 300
    assert image.shape[1] > 500
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 20  # curves and a band, not a blank canvas


def test_the_users_three_commands_work_as_typed(workdir: Path) -> None:
    """`rlkube submit ... --copies 2`, `rlkube logs`, `rlkube tensorboard`: verbatim, nothing named after submit."""
    submitted = rlkube("submit", "--cluster", "local", "--hparams", "dqn_cartpole", "--copies", "2",
                           "--train-steps", "2500")
    assert submitted.returncode == 0, submitted.stderr
    name = re.search(r"^submitted (\S+) to local", submitted.stdout, re.MULTILINE).group(1)

    followed = rlkube("logs")  # follows until both copies end
    assert followed.returncode == 0, followed.stderr
    assert followed.stderr.splitlines()[0] == f"experiment: {name} (latest)"
    for copy in (0, 1):
        assert f"copy-{copy} | test at step 2500" in followed.stdout

    with subprocess.Popen(rlkube_command("tensorboard"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as server:
        try:
            url = served_url(server)
            returns = scalar_values(url, "copy-1", "eval/mean_return")
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=30)
    assert stderr.splitlines()[0] == f"experiment: {name} (latest)"
    assert [step for step, _ in returns] == [2500]
    summary = json.loads((workdir / "runs" / name / "copy-1" / "summary.json").read_text())
    assert returns[0][1] == pytest.approx(summary["eval_mean_return"])


def served_url(server: subprocess.Popen) -> str:
    """The http://127.0.0.1:PORT/ that `rlkube tensorboard` prints once TensorBoard answers."""
    line = server.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert found, (line, server.stderr.read() if server.poll() is not None else "")
    return found.group(0)


def scalar_values(url: str, run: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar, as TensorBoard's scalars plugin serves them over HTTP."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    with urllib.request.urlopen(f"{url}data/plugin/scalars/scalars?{query}", timeout=60) as response:
        return [(step, value) for _wall_time, step, value in json.loads(response.read())]


@pytest.mark.full  # per change: these verbs through the fake target (test_fake_target.py)
def test_commands_without_a_name_say_which_experiment_they_mean_and_keep_json_parseable(workdir: Path) -> None:
    for name in ("first", "second"):
        assert rlkube("submit", *QUICK, "--train-steps", "300", "--name", name).returncode == 0
    wait_for_phase("second", {"Succeeded"})
    for args in (["status"], ["status", "-o", "json"], ["results"], ["results", "-o", "json"],
                 ["logs", "--no-follow"]):
        result = rlkube(*args)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[0] == "experiment: second (latest)", args
    assert json.loads(rlkube("status", "-o", "json").stdout)["experiment"] == "second"
    named = rlkube("status", "first")
    assert "experiment:" not in named.stderr  # a named experiment needs no reminder
    assert named.stdout.startswith("first ")
    assert (workdir / "runs" / "first").is_dir()


def on_a_terminal(args: list[str], typed: str) -> subprocess.CompletedProcess:
    """`rlkube ARGS` with a terminal as its stdin, on which `typed` is typed."""
    controller, terminal = os.openpty()
    try:
        with subprocess.Popen(rlkube_command(*args), stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as process:
            os.write(controller, typed.encode())
            stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.mark.usefixtures("workdir")
def test_cancel_without_a_name_asks_first_and_refuses_without_a_terminal() -> None:
    assert rlkube("submit", *QUICK, "--train-steps", "500000", "--name", "long").returncode == 0

    scripted = subprocess.run(rlkube_command("cancel"), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120, check=False)
    assert scripted.returncode == 2
    assert scripted.stderr == ("experiment: long (latest)\nerror: cancel without a name means the latest experiment, "
                               "long; confirm with -y, or name it: rlkube cancel long\n")

    declined = on_a_terminal(["cancel"], "n\n")
    assert declined.returncode == 1
    assert "cancel long (1 copy on local, submitted " in declined.stderr
    assert declined.stdout == ""
    assert wait_for_phase("long", {"Running"}, timeout=60)["phase"] == "Running"

    confirmed = rlkube("cancel", "-y")
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stderr == "experiment: long (latest)\n"  # no question asked
    assert confirmed.stdout.startswith("cancelled long: removed process copy-0")
    assert json.loads(rlkube("status", "long", "-o", "json").stdout)["phase"] == "Cancelled"
