"""The `rlkube` command: bad input gets one clear line and exit 2; nothing is left behind."""

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import click
import pytest
import yaml

from rlkube.cli.main import cli
from rlkube.run.options import TrainOptions, hparams_file_text, read_hparams_file
from tests.conftest import run_rlkube

HEAVY = ("tensorflow", "optuna", "mlflow", "wandb")


def heavy_imports_after(*cli_args: str) -> set[str]:
    """Run the CLI in a fresh interpreter and report which heavy libraries it imported."""
    code = ("import sys\nfrom rlkube.cli.main import cli\n"
            f"try:\n    cli({list(cli_args)!r})\nexcept SystemExit:\n    pass\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(filter(None, result.stdout.strip().splitlines()[-1].split(",")))


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["--version"], ["sweep", "--help"],
                                  ["sweep", "start", "--help"], ["submit", "--help"],
                                  ["train", "--hparams", "nope", "--output-dir", "/tmp/x"],
                                  ["train", "--hparams", "dqn_cartpole", "--hparam-override", "agent=ppo",
                                   "--output-dir", "/tmp/x"],
                                  ["sweep", "start", "--hparams", "ppo_cartpole", "--sampler", "nope"]])
def test_commands_that_do_not_train_never_import_tensorflow_or_optuna(args: list[str]) -> None:
    assert heavy_imports_after(*args) == set()


# The paths live under each test's tmp_path, so cases name them: {run} a fresh run directory, {file} a plain file,
# {copies} a copies table whose copy 1 has a misspelt override.
BAD_INPUTS = [
    pytest.param(["--hparams", "dqn_cartpol", "--output-dir", "{run}"],
                 "unknown hparams set 'dqn_cartpol'; did you mean", id="unknown-hparams-set"),
    pytest.param(["--hparams", "dqn_cartpole", "--hparam-override", "lrr=1", "--output-dir", "{run}"],
                 "unknown hparam 'lrr'; did you mean lr?", id="unknown-hparam"),
    pytest.param(["--hparams", "dqn_cartpole", "--hparam-override", "lr=fast", "--output-dir", "{run}"],
                 "hparam 'lr' must be float, got 'fast'", id="hparam-of-the-wrong-type"),
    pytest.param(["--hparams", "dqn_cartpole", "--hparam-override", "agent=ppo", "--output-dir", "{run}"],
                 "hparam 'agent' cannot be 'ppo' for this set: its DQNHParams are for agent dqn; the ppo sets are "
                 "ppo_cartpole, ppo_pendulum", id="agent-of-another-hparams-type"),
    pytest.param(["--hparams", "dqn_cartpole", "--env", "CartPole-v9", "--output-dir", "{run}"],
                 "unknown env 'CartPole-v9'", id="unknown-env"),
    pytest.param(["--hparams", "dqn_cartpole", "--output-dir", "{file}/run"], "is a file, not a directory",
                 id="output-dir-under-a-file"),
    pytest.param(["--hparams", "dqn_cartpole", "--output-dir", "/proc/rlkube-run"], "cannot write in /proc",
                 id="output-dir-not-writable"),
    pytest.param(["--hparams", "dqn_cartpole", "--no-training", "--output-dir", "{run}"],
                 "--no-training needs a checkpoint", id="no-training-without-checkpoint"),
    pytest.param(["--hparams", "dqn_cartpole", "--render", "--output-dir", "{run}"], "--render needs a display",
                 id="render-without-display"),
    pytest.param(["--hparams", "dqn_cartpole", "--env", "Pendulum-v1", "--output-dir", "{run}"],
                 "agent 'dqn' needs a Discrete action space, but env 'Pendulum-v1' has Box",
                 id="env-with-the-wrong-action-space"),
    pytest.param(["--hparams", "dqn_cartpole", "--copies-file", "{file}", "--output-dir", "{run}"],
                 "--copies-file {file}: not JSON", id="copies-file-not-json"),
    pytest.param(["--hparams", "dqn_cartpole", "--copies-file", "{copies}", "--output-dir", "{run}"],
                 "copy 1: unknown hparam 'lrr'; did you mean lr?", id="copy-with-an-unknown-hparam"),
    pytest.param(["--hparams", "dqn_cartpole", "--copies-file", "{copies}", "--copy-index", "2", "--output-dir",
                  "{run}"], "--copy-index 2 is not in --copies-file {copies}, which has copies 0..1",
                 id="copy-index-beyond-the-copies-file"),
    pytest.param(["--hparams", "dqn_cartpole", "--copies-file", "{copies}", "--copies", "2", "--output-dir", "{run}"],
                 "says how many copies there are; leave out --copies", id="copies-file-and-copies"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_gets_one_clear_line_and_leaves_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    copies = tmp_path / "copies.json"
    copies.write_text('[{"index": 0, "seed": 3}, {"index": 1, "seed": 4, "overrides": "lrr=1"}]')
    paths = {"run": tmp_path / "run", "file": a_file, "copies": copies}
    args = [arg.format(**paths) for arg in args]
    message = message.format(**paths)
    before = sorted(tmp_path.iterdir())
    result = run_rlkube("train", *args, env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert message in error_lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", [["render"], ["submit", "--dry-run"]])
@pytest.mark.parametrize(("tpu", "project_profiles"), [
    pytest.param("v5litepod-16", None, id="by-tpu-flag"),
    pytest.param(None, "gke-tpu:\n  accelerator: {type: tpu, name: v4-16}\n", id="by-profile"),
])
def test_a_multi_host_tpu_slice_is_refused_naming_the_single_host_types(
        tmp_path: Path, command: list[str], tpu: str | None, project_profiles: str | None) -> None:
    if project_profiles:
        (tmp_path / "rlkube.yaml").write_text(project_profiles)
    tpu_flag = ["--tpu", tpu] if tpu else []
    result = run_rlkube(*command, "--cluster", "gke-tpu", *tpu_flag, "--hparams", "dqn_cartpole", cwd=tmp_path,
                        env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "is a slice of" in result.stderr
    assert "use a single-host type: v4-8, v5p-8, v5litepod-1, v5litepod-4, v5litepod-8" in result.stderr
    assert "Traceback" not in result.stderr


def sample_value(option: dataclasses.Field) -> object:
    """A value of the option's type other than its default, as a user could give it."""
    kind = typing.get_type_hints(TrainOptions)[option.name]
    if kind is bool:
        return not option.default
    if int in typing.get_args(kind) or kind is int:
        return 7
    return f"{option.name}-value"


def parsed_train_options(command: click.Command, args: list[str]) -> TrainOptions:
    """The TrainOptions that `command` gives its callback for these arguments."""
    context = command.make_context(command.name, args)
    return TrainOptions.from_click(dict(context.params))


@pytest.mark.parametrize("command", ["train", "submit", "render"])
def test_every_train_option_is_a_flag_of_the_commands_that_share_them(command: str) -> None:
    declared = {param.name: param for param in cli.commands[command].params}
    for option in dataclasses.fields(TrainOptions):
        assert option.name in declared, f"{command} lacks {option.metadata['flag']}"
        assert option.metadata["flag"] in declared[option.name].opts
        assert declared[option.name].help == option.metadata["help"]


@pytest.mark.parametrize(("command", "own_args"), [("train", ["--output-dir", "run"]), ("submit", []),
                                                   ("render", [])])
def test_train_options_come_back_from_their_args_through_each_command(command: str, own_args: list[str]) -> None:
    given = TrainOptions(**{option.name: sample_value(option) for option in dataclasses.fields(TrainOptions)})
    assert parsed_train_options(cli.commands[command], [*given.args(), *own_args]) == given
    assert parsed_train_options(cli.commands[command], [*TrainOptions("dqn_cartpole").args(), *own_args]) == \
        TrainOptions("dqn_cartpole")


def test_every_train_option_that_is_set_appears_in_the_args() -> None:
    for option in dataclasses.fields(TrainOptions):
        value = sample_value(option)
        options = TrainOptions(**{"hparams": "dqn_cartpole", option.name: value})
        args = options.args()
        assert option.metadata["flag"] in args
        if not isinstance(value, bool):
            assert args[args.index(option.metadata["flag"]) + 1] == str(value)


# --hparams-file: a named set plus overrides in YAML, expanded into --hparams and --hparam-override when read.

def test_a_run_from_an_hparams_file_trains_with_the_files_values(tmp_path: Path) -> None:
    overrides = {"lr": 0.00031, "n_epochs": 2, "hidden_sizes": (16, 16), "normalize_advantage": False,
                 "eval_every": 256, "checkpoint_every": 256}
    hparams_file = tmp_path / "best.yaml"
    hparams_file.write_text(hparams_file_text("ppo_cartpole", overrides))
    result = run_rlkube("train", "--hparams-file", str(hparams_file), "--train-steps", "256", "--eval-episodes", "1",
                        "--test-episodes", "1", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((tmp_path / "run" / "copy-0" / "hparams.yaml").read_text())["hparams"]
    assert saved["_type"] == "PPOHParams"
    assert {key: saved[key] for key in overrides} == {**overrides, "hidden_sizes": [16, 16]}
    assert saved["train_steps"] == 256


@pytest.mark.parametrize(("command", "own_args"), [("train", ["--output-dir", "run"]), ("submit", []),
                                                   ("render", [])])
def test_hparam_override_wins_over_the_hparams_file(tmp_path: Path, command: str, own_args: list[str]) -> None:
    hparams_file = tmp_path / "best.yaml"
    hparams_file.write_text(hparams_file_text("ppo_cartpole", {"lr": 0.00031, "n_epochs": 8}))
    options = parsed_train_options(cli.commands[command], ["--hparams-file", str(hparams_file),
                                                           "--hparam-override", "lr=0.5", *own_args])
    assert options == TrainOptions("ppo_cartpole", overrides="lr=0.5,n_epochs=8")
    hp = options.resolved_hparams()
    assert (hp.lr, hp.n_epochs) == (0.5, 8)


# Each case's file (None: no file at that path) and the flags besides --output-dir; {file} is the file's path.
BAD_HPARAMS_FILES = [
    pytest.param(None, ["--hparams-file", "{file}"], "--hparams-file {file}: cannot read it (No such file",
                 id="missing-file"),
    pytest.param(b"\xff\xfe\x00binary", ["--hparams-file", "{file}"], "--hparams-file {file}: not a text file",
                 id="not-text"),
    pytest.param("hparams: [ppo_cartpole\n", ["--hparams-file", "{file}"], "--hparams-file {file}: not YAML (",
                 id="not-yaml"),
    pytest.param("- ppo_cartpole\n", ["--hparams-file", "{file}"], "--hparams-file {file}: not a YAML mapping",
                 id="not-a-mapping"),
    pytest.param("overrides: {lr: 0.1}\n", ["--hparams-file", "{file}"],
                 "--hparams-file {file}: no set name under 'hparams'", id="missing-hparams"),
    pytest.param("hparams: ppo_cartpole\nhparam_overrides: {lr: 0.1}\n", ["--hparams-file", "{file}"],
                 "--hparams-file {file}: unknown key 'hparam_overrides'", id="unknown-top-level-key"),
    pytest.param("hparams: ppo_cartpole\noverrides: lr=0.1\n", ["--hparams-file", "{file}"],
                 "--hparams-file {file}: 'overrides' is not a mapping", id="overrides-not-a-mapping"),
    pytest.param("hparams: ppo_cartpole\noverrides: {env: 'CartPole-v1,lr=0.5'}\n", ["--hparams-file", "{file}"],
                 "--hparams-file {file}: override 'env': 'CartPole-v1,lr=0.5' is no hparam's", id="value-with-a-comma"),
    pytest.param("hparams: ppo_cartpole\noverrides: {lrr: 0.1}\n", ["--hparams-file", "{file}"],
                 "unknown hparam 'lrr'; did you mean lr?", id="unknown-hparam-in-the-file"),
    pytest.param("hparams: ppo_cartpole\n", ["--hparams", "dqn_cartpole", "--hparams-file", "{file}"],
                 "--hparams dqn_cartpole and --hparams-file {file} both name the hparams set", id="both-given"),
    pytest.param(None, [], "which hparams? give --hparams SET (e.g. dqn_cartpole) or --hparams-file FILE",
                 id="neither-given"),
]


@pytest.mark.parametrize(("content", "args", "message"), BAD_HPARAMS_FILES)
def test_a_bad_hparams_file_gets_one_clear_line(tmp_path: Path, content: str | bytes | None, args: list[str],
                                                message: str) -> None:
    hparams_file = tmp_path / "hparams.yaml"
    if isinstance(content, bytes):
        hparams_file.write_bytes(content)
    elif content is not None:
        hparams_file.write_text(content)
    result = run_rlkube("train", *[arg.format(file=hparams_file) for arg in args], "--output-dir",
                        str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert message.format(file=hparams_file) in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("hparams", "overrides"), [
    pytest.param("ppo_cartpole", {"lr": 0.1 + 0.2, "clip_range": 1 / 3, "gamma": 0.98}, id="float"),
    pytest.param("ppo_cartpole", {"lr": 1e-5, "ent_coef": 0.0}, id="float-with-an-exponent"),
    pytest.param("ppo_cartpole", {"n_epochs": 8, "batch_size": 64}, id="int"),
    pytest.param("ppo_cartpole", {"normalize_advantage": False, "shared_torso": True}, id="bool"),
    pytest.param("ppo_cartpole", {"hidden_sizes": (64, 32)}, id="tuple"),
    pytest.param("ppo_cartpole", {"hidden_sizes": (7,)}, id="tuple-of-one"),
    pytest.param("ppo_cartpole", {"target_return": None, "env": "Acrobot-v1"}, id="none-and-str"),
])
def test_an_hparams_file_gives_back_the_values_it_was_written_with(
        tmp_path: Path, hparams: str, overrides: dict[str, object]) -> None:
    hparams_file = tmp_path / "hparams.yaml"
    hparams_file.write_text(hparams_file_text(hparams, overrides))
    name, override_text = read_hparams_file(hparams_file)
    hp = TrainOptions(name, override_text).resolved_hparams()
    assert name == hparams
    assert {key: getattr(hp, key) for key in overrides} == overrides
    assert all(type(getattr(hp, key)) is type(value) for key, value in overrides.items())


def test_an_hparams_file_says_how_to_run_it() -> None:
    first_line, *_ = hparams_file_text("ppo_cartpole", {"lr": 0.1}).splitlines()
    assert first_line.startswith("# rlkube train --hparams-file ")
