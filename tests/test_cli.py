"""The `rlkube` command: bad input gets one clear line and exit 2; nothing is left behind."""

import dataclasses
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
import typing
from contextlib import closing
from importlib import resources
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from rlkube.cli.flags import renamed_option
from rlkube.cli.main import cli
from rlkube.errors import UserError, unknown_name
from rlkube.launch import store
from rlkube.launch.clusters import get_profile
from rlkube.launch.spec import build_spec
from rlkube.rl.envs import check_env_name
from rlkube.rl.hparams import get_hparams, hparams_registry
from rlkube.run.options import TrainOptions, hparams_file_text, read_hparams_file
from tests.conftest import REPO, run_rlkube

HEAVY = ("tensorflow", "optuna", "mlflow", "wandb", "ray")


def cli_in_fresh_interpreter(*cli_args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the CLI in a fresh interpreter: what it printed, and which heavy libraries it had imported."""
    code = ("import sys\nfrom rlkube.cli.main import cli\n"
            f"try:\n    cli({list(cli_args)!r})\nexcept SystemExit:\n    pass\n"
            f"print('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result, set(filter(None, result.stdout.rsplit("heavy:", 1)[1].strip().split(",")))


def heavy_imports_after(*cli_args: str) -> set[str]:
    return cli_in_fresh_interpreter(*cli_args)[1]


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["--version"], ["sweep", "--help"],
                                  ["sweep", "start", "--help"], ["submit", "--help"],
                                  ["train", "--hparams", "nope", "--output-dir", "/tmp/x"],
                                  ["train", "--hparams", "dqn_cartpole", "--hparam-override", "agent=ppo",
                                   "--output-dir", "/tmp/x"],
                                  ["sweep", "start", "--hparams", "ppo_cartpole", "--sampler", "nope"],
                                  ["hparams"], ["hparams", "show", "dqn_cartpole", "--hparam-override", "lr=1e-4",
                                                "--env", "Acrobot-v1", "--train-steps", "1000"],
                                  ["hparams", "show", "dqn_cartpol"], ["envs"], ["doctor", "--hparams", "ppo_pong"]])
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
    if isinstance(choice := option.metadata["click"].get("type"), click.Choice):
        return choice.choices[-1]
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


def every_command(group: click.Group = cli, path: str = "rlkube") -> typing.Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from every_command(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


@pytest.mark.parametrize(("command", "own_args", "shown"), [
    ("rlkube train", ["--output-dir", "run"], True), ("rlkube submit", [], True), ("rlkube sweep start", [], False),
    ("rlkube pbt start", ["--interval", "500"], False)])
def test_pbt_interval_is_left_out_of_the_help_of_commands_whose_copies_rlkube_paces(
        command: str, own_args: list[str], shown: bool) -> None:
    parsed = dict(every_command())[command]
    assert ("--pbt-interval" in parsed.get_help(click.Context(parsed))) == shown
    # Left out of the help, not refused: a command takes it as before.
    assert parsed_train_options(parsed, ["--hparams", "dqn_cartpole", "--pbt-interval", "500", *own_args]) == \
        TrainOptions("dqn_cartpole", pbt_interval=500)


def test_dash_o_is_an_output_format_wherever_a_command_shows_it() -> None:
    for path, command in every_command():
        for param in command.params:
            if "-o" in param.opts and not param.hidden:
                assert param.opts == ["-o", "--output"], path
                assert isinstance(param.type, click.Choice), path


def renamed_flags_command() -> click.Command:
    @click.command()
    @renamed_option("--wait", ("--follow",), "wait", "Wait.", is_flag=True)
    @renamed_option("--output-dir", ("-o",), "output_dir", "Where.", required=True)
    def command(wait: bool, output_dir: str) -> None:
        click.echo(f"wait={wait} output_dir={output_dir}")

    return command


@pytest.mark.parametrize(("args", "stdout", "notices"), [
    (["--output-dir", "d", "--wait"], "wait=True output_dir=d", []),
    (["-o", "d"], "wait=False output_dir=d",
     ["note: -o is now --output-dir; the old spelling goes in the next release"]),
    (["--follow", "--output-dir", "d"], "wait=True output_dir=d",
     ["note: --follow is now --wait; the old spelling goes in the next release"]),
])
def test_a_renamed_flags_old_spelling_works_for_a_release_with_a_one_line_notice(args: list[str], stdout: str,
                                                                                 notices: list[str]) -> None:
    result = CliRunner().invoke(renamed_flags_command(), args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == stdout
    assert result.stderr.strip().splitlines() == notices


def test_a_renamed_flag_is_refused_twice_and_still_required() -> None:
    both = CliRunner().invoke(renamed_flags_command(), ["-o", "a", "--output-dir", "b"])
    assert isinstance(both.exception, UserError)
    assert str(both.exception) == "-o is the old spelling of --output-dir; give --output-dir once"
    neither = CliRunner().invoke(renamed_flags_command(), [])
    assert neither.exit_code == 2
    assert "Missing option '--output-dir'" in neither.stderr
    shown = CliRunner().invoke(renamed_flags_command(), ["--help"]).stdout
    assert " -o" not in shown
    assert "--follow" not in shown


@pytest.mark.parametrize(("args", "lines"), [
    (["pbt", "replay", "nosuch", "--follow"],
     ["note: --follow is now --wait; the old spelling goes in the next release", "error: no PBT run named 'nosuch'"]),
    (["pbt", "lineage", "nosuch", "-o", "x.png"],
     ["note: -o/--output is now --output-file; the old spelling goes in the next release",
      "error: no PBT run named 'nosuch'"]),
    (["sweep", "plot", "nosuch", "-o", "plots"],
     ["note: -o is now --output-dir; the old spelling goes in the next release", "error: unknown sweep 'nosuch'"]),
    (["sweep", "best", "nosuch", "-o", "a.yaml", "--output-file", "b.yaml"],
     ["error: -o/--output is the old spelling of --output-file; give --output-file once"]),
])
def test_each_renamed_flag_of_sweep_and_pbt_says_its_new_name(tmp_path: Path, args: list[str],
                                                             lines: list[str]) -> None:
    result = run_rlkube(*args, env={"RLKUBE_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
    assert result.returncode == 2
    said = result.stderr.strip().splitlines()
    assert len(said) == len(lines), result.stderr
    for line, start in zip(said, lines, strict=True):
        assert line.startswith(start)


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


# -- discovery (rlkube hparams, rlkube envs) and a quiet train ------------------------------------------------------

TINY_RUN = ["--hparams", "dqn_cartpole", "--hparam-override", "lr=0.0005", "--train-steps", "300", "--seed", "3",
            "--eval-episodes", "1", "--test-episodes", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A two-copy run (so its copies train in processes of their own) and what `rlkube train` printed."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    result = run_rlkube("train", *TINY_RUN, "--copies", "2", "--output-dir", str(run))
    assert result.returncode == 0, result.stderr
    return run, result


def test_train_prints_no_tensorflow_start_up_lines_in_any_process(
        tiny_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    _, result = tiny_run
    assert "copy-1 | " in result.stderr  # the copies' processes wrote here too
    assert "oneDNN" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr


def test_train_verbose_shows_tensorflows_info_lines(tiny_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run, _ = tiny_run
    result = run_rlkube("train", *TINY_RUN, "--no-training", "--verbose", "--output-dir", str(run))
    assert result.returncode == 0, result.stderr
    # absl's info lines (I0000 00:00:1796080641.176055   23530 port.cc:153] ...): oneDNN's, XLA's, ...
    assert any(re.match(r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] ", line) for line in result.stderr.splitlines()), result.stderr


def test_hparams_show_prints_the_yaml_a_run_saves(tiny_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run, _ = tiny_run
    shown = run_rlkube("hparams", "show", *TINY_RUN[1:6], "--seed", "3")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout) == yaml.safe_load((run / "copy-0" / "hparams.yaml").read_text())
    lr_line = next(line for line in shown.stdout.splitlines() if line.startswith("  lr: "))
    assert lr_line.split("#")[1].strip() == "float in [0.0, 1.0]: learning rate"


def test_hparams_show_comments_every_field_with_its_type_and_range() -> None:
    shown = run_rlkube("hparams", "show", "ppo_cartpole")
    assert shown.returncode == 0, shown.stderr
    fields = dataclasses.fields(get_hparams("ppo_cartpole"))
    comments = {line.split(":")[0].strip(): line.split("#", 1)[1].strip()
                for line in shown.stdout.splitlines() if line.startswith("  ") and "#" in line}
    assert {field.name for field in fields} <= comments.keys()
    assert comments["vector_mode"] == ("str (sync | async | envpool): async steps each env in its own process; "
                                       "envpool steps Atari in C++ threads")
    assert comments["hidden_sizes"] == "list of int, each >= 1: widths of the hidden layers"
    assert comments["clip_range_vf"].startswith("float >= 0.0 or null: ")


def test_hparams_show_refuses_bad_input_in_one_line() -> None:
    result = run_rlkube("hparams", "show", "dqn_cartpole", "--hparam-override", "lrr=1")
    assert result.returncode == 2
    assert result.stderr == "error: unknown hparam 'lrr'; did you mean lr?\n"


def test_hparams_lists_every_set_with_its_agent_env_budget_and_target() -> None:
    result = run_rlkube("hparams")
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split(None, 5) for line in result.stdout.splitlines()]
    assert header == ["SET", "AGENT", "ENV", "BUDGET", "TARGET", "MEASURED"]
    assert [row[0] for row in rows] == hparams_registry.names()
    for name, agent, env, budget, target, _measured in rows:
        hp = get_hparams(name)
        assert (agent, env) == (hp.agent, hp.env)
        assert int(budget.replace("M", "000000").replace("k", "000")) == hp.train_steps
        assert target == ("-" if hp.target_return is None else f"{hp.target_return:g}")


def _measured_column(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line.split(None, 5)[5] for line in stdout.splitlines()[1:]}


def test_hparams_shows_the_shipped_report_dated_unless_results_name_another(tmp_path: Path) -> None:
    shipped = _measured_column(run_rlkube("hparams").stdout)
    report = [json.loads(line) for line in (REPO / "docs" / "results" / "results.jsonl").read_text().splitlines()]
    reported = {record["hparams"] for record in report}
    assert {name for name, cell in shipped.items() if cell != "-"} == reported  # every reported set, only those
    sac = [record for record in report if record["hparams"] == "sac_halfcheetah"]
    assert shipped["sac_halfcheetah"] == (f"best 10667.8 ± 410.5, 2/2 seeds at target "
                                          f"({sac[0]['measured']['date']})")  # as docs/results/results.md rows it
    assert shipped["dqn_pong"] == "-"  # not measured: nothing is claimed
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"hparams": "dqn_pong", "seed": 0, "best_eval": 20.5,
                                   "first_step_reaching_target": 4_000_000, "budget_fraction": 1.0,
                                   "measured": {"date": "2027-01-02"}}) + "\n")
    other = _measured_column(run_rlkube("hparams", "--results", str(tmp_path)).stdout)
    assert other["dqn_pong"] == "best 20.5, 1/1 seeds at target (2027-01-02)"
    assert other["sac_halfcheetah"] == "-"  # another report replaces the shipped one


def test_the_shipped_results_are_what_ship_results_makes_of_docs_results() -> None:
    spec = importlib.util.spec_from_file_location("ship_results", REPO / "benchmarks" / "ship_results.py")
    ship_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_results)
    shipped = resources.files("rlkube.rl.hparams").joinpath("measured.jsonl").read_text()
    assert shipped == ship_results.shipped_text(), "docs/results changed: run python benchmarks/ship_results.py"


def test_hparams_measured_column_comes_from_the_benchmarks_results_file_or_report_directory(tmp_path: Path) -> None:
    records = [{"hparams": "dqn_cartpole", "seed": 0, "best_eval": 500.0, "first_step_reaching_target": 20000,
                "budget_fraction": 1.0},
               {"hparams": "dqn_cartpole", "seed": 1, "best_eval": 460.0, "first_step_reaching_target": None,
                "budget_fraction": 1.0},
               {"hparams": "vpg_cartpole", "seed": 0, "best_eval": 312.5, "first_step_reaching_target": None,
                "budget_fraction": 0.2}]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(record) + "\n" for record in records))
    result = run_rlkube("hparams", "--results", str(results))
    assert result.returncode == 0, result.stderr
    measured = {line.split()[0]: line.split(None, 5)[5] for line in result.stdout.splitlines()[1:]}
    assert measured["dqn_cartpole"] == "best 480.0 ± 20.0, 1/2 seeds at target"  # as the report: pstdev
    assert measured["vpg_cartpole"] == "best 312.5, 20% of the budget"  # vpg_cartpole has no published target
    assert measured["ppo_cartpole"] == "-"
    report_directory = run_rlkube("hparams", "--results", str(tmp_path))  # as --report DIR wrote it
    assert report_directory.returncode == 0, report_directory.stderr
    assert report_directory.stdout == result.stdout
    results.write_text('{"hparams": "dqn_cartpole"}\n')
    bad = run_rlkube("hparams", "--results", str(results))
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"error: --results {results}: line 1 is not a line that benchmarks/hparams_targets.py")
    assert bad.stderr.count("\n") == 1


def test_envs_lists_each_env_id_once() -> None:
    result = run_rlkube("envs")
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == len(set(ids))
    assert {"CartPole-v1", "CartPole-v0", "HalfCheetah-v5"} <= set(ids)


def test_an_unknown_env_offers_each_close_match_once() -> None:
    with pytest.raises(UserError) as error:
        check_env_name("CartPole-v9")
    offered = str(error.value).split("did you mean ")[1].rstrip("?").replace(" or ", ", ").split(", ")
    assert offered[:2] == ["CartPole-v1", "CartPole-v0"]
    assert len(offered) == len(set(offered))
    assert str(unknown_name("env", "CartPole-v9", ["CartPole-v1", "CartPole-v1", "CartPole-v0"])) == (
        "unknown env 'CartPole-v9'; did you mean CartPole-v1 or CartPole-v0?")


def test_an_unknown_env_without_close_matches_points_to_rlkube_envs() -> None:
    with pytest.raises(UserError) as error:
        check_env_name("Zzyzx")
    assert str(error.value) == "unknown env 'Zzyzx'; `rlkube envs` lists them"


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--no-training", "--output-dir", "{run}"], "--no-training needs a checkpoint",
                 id="no-training-without-checkpoint"),
    pytest.param(["--env", "Pendulum-v1", "--output-dir", "{run}"],
                 "agent 'dqn' needs a Discrete action space, but env 'Pendulum-v1' has Box",
                 id="env-for-another-agent"),
    pytest.param(["--copies-file", "{copies}", "--output-dir", "{run}"],
                 "agent 'dqn' needs a Discrete action space, but env 'Pendulum-v1' has Box", id="a-copys-env"),
    pytest.param(["--env", "CartPole-v9", "--output-dir", "{run}"], "unknown env 'CartPole-v9'", id="unknown-env"),
    pytest.param(["--output-dir", "/proc/rlkube-run"], "cannot write in /proc", id="unwritable-dir"),
    pytest.param(["--output-dir", "{file}/run"], "is a file, not a directory", id="dir-under-a-file"),
    pytest.param(["--output-dir", "gcs://bucket/run"], "unsupported storage URL gcs://bucket/run",
                 id="bucket-url-of-another-scheme"),
    pytest.param(["--output-dir", "s3://"], "storage URL s3:// names no bucket", id="bucket-url-without-a-bucket"),
])
def test_every_input_check_of_train_runs_before_tensorflow_is_imported(tmp_path: Path, args: list[str],
                                                                        message: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    copies = tmp_path / "copies.json"
    copies.write_text('[{"index": 0, "seed": 0}, {"index": 1, "seed": 1, "overrides": "env=Pendulum-v1"}]')
    paths = {"run": tmp_path / "run", "file": a_file, "copies": copies}
    result, heavy = cli_in_fresh_interpreter("train", "--hparams", "dqn_cartpole",
                                             *(arg.format(**paths) for arg in args))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]
    assert "tensorflow" not in heavy
    assert not (tmp_path / "run").exists()


# -- the experiment store's version (rlkube.launch.store.SCHEMA_VERSION) -------------------------------------------

def store_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute("PRAGMA user_version").fetchone()[0]


def set_store_version(path: Path, version: int) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA user_version = {version}")


def test_a_store_written_before_store_versions_is_read_and_stamped(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path))
    sweep = store.SweepRecord("s", "sqlite:///s.db", "driver", 1, "2026-01-01T00:00:00+00:00")
    store.save_sweep(sweep)
    assert store_version(tmp_path / store.STORE_FILE) == store.SCHEMA_VERSION
    # What rlkube wrote before store versions: these tables, at SQLite's default version 0.
    set_store_version(tmp_path / store.STORE_FILE, 0)
    assert store.find_sweep("s") == sweep
    assert store_version(tmp_path / store.STORE_FILE) == store.SCHEMA_VERSION


def test_a_store_of_version_1_gains_the_creator_column_and_keeps_its_experiments(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path))
    path = tmp_path / store.STORE_FILE
    spec = build_spec(get_profile("local"), TrainOptions("dqn_cartpole"), 1, name="before")
    # Version 1's table: the experiments without their creator.
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(store.SCHEMA.replace(",\n    creator TEXT", ""))
        connection.execute("INSERT INTO experiments VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (
            "before", "local", "local", None, "default", 1, "img", "runs/before", None, spec.provenance.created,
            json.dumps(spec.to_dict()), "{}"))
    set_store_version(path, 1)
    assert store.get("before").creator is None
    assert store_version(path) == store.SCHEMA_VERSION
    store.save(dataclasses.replace(spec, name="after"), "local", None, {}, creator="alice")
    assert [(record.name, record.creator) for record in store.all_records()] == [("after", "alice"), ("before", None)]


@pytest.mark.parametrize(("made", "message"), [
    ("newer", f"experiments.db was written by a newer rlkube (experiment store version {store.SCHEMA_VERSION + 1}; "
              "rlkube"),
    ("corrupt", "experiments.db is not an experiment store rlkube can read (file is not a database); move it aside"),
])
def test_a_store_of_a_newer_rlkube_or_a_corrupt_one_is_refused_in_one_line(made: str, message: str,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / store.STORE_FILE
    if made == "newer":
        set_store_version(path, store.SCHEMA_VERSION + 1)
    else:
        path.write_bytes(b"not SQLite at all, but long enough to be taken for a header of one" * 4)
    before = path.read_bytes()
    result = run_rlkube("list", env={"RLKUBE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], "one line"
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert path.read_bytes() == before
