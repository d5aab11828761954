"""Every bad input is one line, exit 2, nothing written, before TensorFlow is imported.

The catalogue holds one case per bad input: those that issue 27 found accepted or answered with a traceback, and
the rest of a hostile read of the flags, the files they name (hparams, space, copies and profile files) and the
experiment store. Then a property test: generated inputs to the commands that only parse, render or dry-run
either succeed or fail in that one line, and never write a file.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rlkube.launch.store import SCHEMA_VERSION
from rlkube.rl.hparams import get_hparams
from tests.cli_sandbox import CliSandbox, Outcome, outcome_text

RENDER = ["render", "--cluster", "kube", "--hparams", "dqn_cartpole"]
TRAIN = ["train", "--hparams", "dqn_cartpole", "--output-dir", "run"]
# ppo_cartpole evaluates every 10000 steps of 100000, and can change lr mid-run: a PBT run that is right but for
# the one flag each case gets wrong.
PBT = ["pbt", "start", "--hparams", "ppo_cartpole", "--interval", "20000"]
PBT_MUTATE = [*PBT, "--mutate", "lr=log_uniform:1e-5:1e-2"]
SWEEP = ["sweep", "start", "--hparams", "ppo_cartpole"]
SPACE = [*SWEEP, "--space", "space.yaml"]


def profile(settings: str) -> dict[str, str]:
    """./rlkube.yaml with a Kubernetes profile `mine` on a PVC, plus `settings` (YAML lines at its indent)."""
    return {"rlkube.yaml": f"mine:\n  target: kubernetes\n  pvc: runs\n{settings}"}


def store(*statements: str) -> list[str]:
    return list(statements)


@dataclass(frozen=True)
class Bad:
    args: list[str]
    says: str  # what the one line must say
    files: dict[str, str] | None = None
    store_sql: list[str] | None = None


CATALOGUE = {
    # NaN and infinity wherever a number is read
    "override-nan": Bad([*RENDER, "--hparam-override", "lr=nan"], "hparam 'lr' must be a finite number, got nan"),
    "override-inf": Bad([*RENDER, "--hparam-override", "max_grad_norm=inf"], "must be a finite number, got inf"),
    "override-minus-infinity": Bad([*RENDER, "--hparam-override", "gamma=-Infinity"], "must be a finite number"),
    "override-nan-in-a-tuple": Bad([*RENDER, "--hparam-override", "hidden_sizes=64;nan"],
                                   "hparam 'hidden_sizes' must be int, got 'nan'"),
    "hparams-file-nan": Bad(["render", "--cluster", "kube", "--hparams-file", "h.yaml"], "must be a finite number",
                            files={"h.yaml": "hparams: dqn_cartpole\noverrides: {lr: .nan}\n"}),
    "sweep-bound-nan": Bad(SPACE, "'lr': uniform takes two finite numbers",
                           files={"space.yaml": "lr: {uniform: [.nan, 0.1]}\n"}),
    "sweep-bound-inf": Bad(SPACE, "'gamma': uniform takes two finite numbers",
                           files={"space.yaml": "gamma: {uniform: [0.9, .inf]}\n"}),
    "sweep-bound-nan-as-text": Bad(SPACE, "'lr': log_uniform takes two finite numbers",
                                   files={"space.yaml": "lr: {log_uniform: ['nan', 0.1]}\n"}),
    "sweep-choice-nan": Bad(SPACE, "'lr': choice nan: hparam 'lr' must be a finite number",
                            files={"space.yaml": "lr: {choice: [.nan, 0.1]}\n"}),
    "sweep-poll-nan": Bad([*SWEEP, "--poll", "nan"], "'--poll': 'nan' is not a finite number"),
    "sweep-poll-inf": Bad([*SWEEP, "--poll", "inf"], "'--poll': 'inf' is not a finite number"),
    "pbt-perturb-nan": Bad([*PBT_MUTATE, "--perturb", "nan,1.2"], "--perturb takes two positive factors"),
    "pbt-perturb-inf": Bad([*PBT_MUTATE, "--perturb", "0.8,inf"], "--perturb takes two positive factors"),
    "pbt-mutate-nan": Bad([*PBT, "--mutate", "lr=uniform:nan:0.1"], "uniform takes two finite numbers"),
    "pbt-mutate-inf": Bad([*PBT, "--mutate", "lr=log_uniform:1e-5:inf"], "log_uniform takes two finite numbers"),
    "pbt-mutate-choice-nan": Bad([*PBT, "--mutate", "lr=choice:nan,0.1"], "hparam 'lr' must be a finite number"),
    "pbt-quantile-nan": Bad([*PBT_MUTATE, "--quantile", "nan"], "--quantile must be in (0, 0.5]"),
    "pbt-resample-prob-nan": Bad([*PBT_MUTATE, "--resample-prob", "nan"], "--resample-prob must be in [0, 1]"),
    "profile-resource-nan": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                "resources must map names to values (finite numbers",
                                files=profile("  resources: {cpu: .nan}\n")),
    # duplicate keys
    "override-given-twice": Bad([*RENDER, "--hparam-override", "lr=1e-3,lr=2e-3"],
                                "override 'lr' is given twice (lr=1e-3 and lr=2e-3)"),
    "override-given-twice-with-spaces": Bad([*RENDER, "--hparam-override", "lr=1e-3, lr =2e-3"],
                                            "override 'lr' is given twice"),
    "copies-file-override-given-twice": Bad(
        [*TRAIN, "--copies-file", "c.json"], "copy 0: override 'lr' is given twice",
        files={"c.json": '[{"index": 0, "seed": 0, "overrides": "lr=0.1,lr=0.2"}]'}),
    # names matched whole, never empty
    "name-with-a-trailing-newline": Bad([*RENDER, "--name", "abc\n"], "bad experiment name 'abc\\n'"),
    "name-empty": Bad([*RENDER, "--name", ""], "bad experiment name ''"),
    "name-with-a-slash": Bad([*RENDER, "--name", "../etc"], "bad experiment name '../etc'"),
    "name-in-capitals": Bad([*RENDER, "--name", "MyRun"], "bad experiment name 'MyRun'"),
    "sweep-name-empty": Bad([*SWEEP, "--name", ""], "bad experiment name ''"),
    "pbt-name-empty": Bad([*PBT_MUTATE, "--name", ""], "bad experiment name ''"),
    "sweep-objective-with-a-trailing-newline": Bad([*SWEEP, "--objective", "final\n"], "bad --objective 'final\\n'"),
    "pbt-metric-with-a-trailing-newline": Bad([*PBT_MUTATE, "--metric", "best\n"], "bad --metric 'best\\n'"),
    "profile-env-name-with-a-newline": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                           "env name 'A\\n' must be letters", files=profile('  env: {"A\\n": x}\n')),
    "profile-size-with-a-newline": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                       "tmp_size_limit must be a positive Kubernetes quantity",
                                       files=profile('  tmp_size_limit: "8Gi\\n"\n')),
    # bucket URLs
    "output-dir-gs-without-a-bucket": Bad(["train", "--hparams", "dqn_cartpole", "--output-dir", "gs:///x"],
                                          "storage URL gs:///x names no bucket"),
    "output-dir-s3-without-a-bucket": Bad(["train", "--hparams", "dqn_cartpole", "--output-dir", "s3:///x/y"],
                                          "storage URL s3:///x/y names no bucket"),
    "output-dir-bucket-with-a-space": Bad(["train", "--hparams", "dqn_cartpole", "--output-dir", "gs://a b/x"],
                                          "'a b' is not a bucket name"),
    "profile-output-without-a-bucket": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                           "output: storage URL gs:///runs names no bucket",
                                           files={"rlkube.yaml": "mine:\n  target: kubernetes\n  output: gs:///runs\n"}),
    # credentials in URIs, wherever a URI is read
    "track-uri-query-parameter": Bad([*RENDER, "--track", "mlflow", "--track-uri", "http://mlflow:5000/?apikey=k3y"],
                                     "--track-uri http://mlflow:5000/ carries credentials (or may: a query string)"),
    "track-uri-user-and-password": Bad([*RENDER, "--track", "mlflow", "--track-uri", "https://me:pw@mlflow"],
                                       "--track-uri https://mlflow carries credentials (or may: user-info)"),
    "track-uri-token-as-user": Bad([*RENDER, "--track", "wandb", "--track-uri", "https://t0ken@wandb.example"],
                                   "carries credentials (or may: user-info)"),
    "track-uri-not-a-uri": Bad([*RENDER, "--track", "mlflow", "--track-uri", "http://[::1"], "is not a URI"),
    "output-dir-with-user-info": Bad(["train", "--hparams", "dqn_cartpole", "--output-dir", "s3://key:secret@b/x"],
                                     "storage URL s3://b/x carries credentials"),
    "output-dir-with-a-query": Bad(["train", "--hparams", "dqn_cartpole", "--output-dir", "gs://b/x?token=t"],
                                   "storage URL gs://b/x carries credentials (or may: a query string)"),
    "profile-output-with-user-info": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                         "profile 'mine': output s3://b/runs carries credentials",
                                         files={"rlkube.yaml": "mine:\n  target: kubernetes\n"
                                                               "  output: s3://key:secret@b/runs\n"}),
    "profile-output-with-a-query": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                       "output gs://b/runs carries credentials (or may: a query string)",
                                       files={"rlkube.yaml": "mine:\n  target: kubernetes\n"
                                                             "  output: gs://b/runs?sig=abc\n"}),
    "profile-env-uri-with-user-info": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                          "env MLFLOW_TRACKING_URI https://mlflow carries credentials",
                                          files=profile("  env: {MLFLOW_TRACKING_URI: 'https://me:pw@mlflow'}\n")),
    "profile-env-uri-with-a-query": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                        "env ENDPOINT http://minio:9000/ carries credentials",
                                        files=profile("  env: {ENDPOINT: 'http://minio:9000/?X-Amz-Signature=s'}\n")),
    # integers, exactly
    "override-int-with-a-fraction": Bad([*RENDER, "--hparam-override", "train_steps=1.5"],
                                        "hparam 'train_steps' must be int, got '1.5'; a whole number"),
    "override-int-past-int64": Bad([*RENDER, "--hparam-override", "train_steps=99999999999999999999"],
                                   "hparam 'train_steps' must be int, got '99999999999999999999'"),
    "override-int-with-a-huge-exponent": Bad([*RENDER, "--hparam-override", "batch_size=1e999999999"],
                                             "hparam 'batch_size' must be int, got '1e999999999'"),
    "override-int-nan": Bad([*RENDER, "--hparam-override", "batch_size=nan"], "hparam 'batch_size' must be int"),
    "seed-negative": Bad([*RENDER, "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range"),
    "seed-past-2-to-the-32": Bad([*RENDER, "--seed", "4294967296"], "4294967296 is not in the range 0<=x<=4294967295"),
    "seed-of-the-last-copy-past-2-to-the-32": Bad([*RENDER, "--seed", "4294967295", "--copies", "2"],
                                                  "copy 1's seed 4294967296 is outside 0..4294967295"),
    "train-copy-index-seed-past-2-to-the-32": Bad([*TRAIN, "--seed", "4294967295", "--copy-index", "3"],
                                                  "copy 3's seed 4294967298 is outside"),
    "copies-file-seed-negative": Bad([*TRAIN, "--copies-file", "c.json"], "copy 0's seed -5 is outside",
                                     files={"c.json": '[{"index": 0, "seed": -5}]'}),
    "copies-file-seed-nan": Bad([*TRAIN, "--copies-file", "c.json"], "write a JSON list of",
                                files={"c.json": '[{"index": 0, "seed": NaN}]'}),
    "hparams-show-seed-negative": Bad(["hparams", "show", "dqn_cartpole", "--seed", "-3"], "'--seed': -3 is not in"),
    "num-workers-unbounded": Bad([*RENDER, "--num-workers", "100000"], "'--num-workers': 100000 is not in the range"),
    "train-ray-actors-without-workers": Bad([*TRAIN, "--actors", "ray"], "--actors ray needs actors to run: add"),
    "render-ray-actors-without-workers": Bad([*RENDER, "--actors", "ray"], "--actors ray needs actors to run: add"),
    "actors-unknown": Bad([*TRAIN, "--num-workers", "2", "--actors", "threads"], "'--actors': 'threads' is not one"),
    "train-copies-unbounded": Bad([*TRAIN, "--copies", "100000000"], "'--copies': 100000000 is not in the range"),
    "pbt-population-unbounded": Bad([*PBT_MUTATE, "--population", "100000000"], "and at most 1000, got 100000000"),
    "sweep-seeds-unbounded": Bad([*SWEEP, "--seeds", "100000000"], "--seeds must be at most 1000"),
    "pbt-interval-zero": Bad([*PBT_MUTATE[:4], "--interval", "0", *PBT_MUTATE[6:]], "--interval must be at least 1"),
    "pbt-interval-negative": Bad([*PBT_MUTATE[:4], "--interval", "-10000", *PBT_MUTATE[6:]],
                                 "--interval must be at least 1"),
    # namespaces, contexts and images
    "namespace-in-capitals": Bad([*RENDER, "-n", "Team_A"], "-n/--namespace 'Team_A' is not a namespace name"),
    "namespace-empty": Bad([*RENDER, "-n", ""], "-n/--namespace '' is not a namespace name"),
    "namespace-longer-than-a-dns-label": Bad([*RENDER, "--namespace", "a" * 64], "is not a namespace name"),
    "namespace-with-a-trailing-newline": Bad([*RENDER, "-n", "rl\n"], "-n/--namespace 'rl\\n' is not a namespace"),
    "profile-namespace-with-a-space": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                          "profile 'mine': namespace 'team a' is not a namespace name",
                                          files=profile("  namespace: team a\n")),
    "profile-output-not-text": Bad(["render", "--cluster", "mine", "--hparams", "dqn_cartpole"],
                                   "output must be a string, got 7", files=profile("  output: 7\n")),
    "context-empty": Bad([*RENDER, "--context", ""], "--context '' names no kube context"),
    "image-with-a-space": Bad([*RENDER, "--image", "my image"], "--image 'my image' is not an image reference"),
    "image-with-a-newline": Bad([*RENDER, "--image", "rlkube:1\n"], "--image 'rlkube:1\\n' is not an image"),
    "track-group-with-a-newline": Bad([*RENDER, "--track", "mlflow", "--track-group", "a\nb"],
                                      "--track-group 'a\\nb' holds a control character"),
    # what a message quotes stays on one line, whatever the user typed
    "override-key-with-an-escape": Bad([*RENDER, "--hparam-override", "l\x1br=0.1"], "unknown hparam 'l\\x1br'"),
    "hparams-set-with-an-escape-sequence": Bad(["render", "--cluster", "kube", "--hparams", "\x1b[2Jx"],
                                               "unknown hparams set '\\x1b[2Jx'"),
    "unknown-option-with-a-newline": Bad([*RENDER, "--bogus\nline"], "No such option '--bogus\\nline'"),
    # click's own usage errors: one line, not usage, hint and error on four
    "unknown-command": Bad(["bogus"], "No such command 'bogus'"),
    "unknown-top-level-option": Bad(["--bogus"], "No such option '--bogus'. (see rlkube --help)"),
    "missing-required-option": Bad(["train", "--hparams", "dqn_cartpole"], "Missing option '--output-dir'"),
    "choice-not-offered": Bad([*RENDER, "--format", "pdf"], "Invalid value for '--format'"),
    # the experiment store: corrupt, newer, or of another shape
    "store-corrupt": Bad(["list"], "experiments.db is not an experiment store rlkube",
                         files={".local/share/rlkube/experiments.db": "not a database"}),
    "store-of-a-newer-version": Bad(["list"], "was written by a newer rlkube (experiment store version 99",
                                    store_sql=store("PRAGMA user_version = 99")),
    "store-of-another-shape": Bad(["list"], "no such column",
                                  store_sql=store("PRAGMA user_version = 1", "CREATE TABLE experiments (name TEXT)",
                                                  "INSERT INTO experiments VALUES ('a')")),
    "store-record-of-another-shape": Bad(["status", "a"], "experiment 'a' in ", store_sql=store(
        f"PRAGMA user_version = {SCHEMA_VERSION}",
        "CREATE TABLE experiments (name TEXT, cluster TEXT, target TEXT, context TEXT, namespace TEXT, copies INTEGER,"
        " image TEXT, output_dir TEXT, git_commit TEXT, created TEXT, spec TEXT, backend TEXT, creator TEXT)",
        "INSERT INTO experiments VALUES ('a', 'local', 'local', NULL, 'default', 1, 'i', 'o', NULL, 'now', '{}', '{}',"
        " NULL)")),
    "store-sweep-of-another-shape": Bad(["sweep", "status", "s"], "sweep 's' in ",
                                        store_sql=store(f"PRAGMA user_version = {SCHEMA_VERSION}",
                                                        "CREATE TABLE sweeps (name TEXT)",
                                                        "INSERT INTO sweeps VALUES ('s')")),
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[CliSandbox]:
    with CliSandbox() as serving:
        yield serving


def assert_one_line_and_nothing_written(outcome: Outcome) -> None:
    assert outcome.one_error_line(), outcome_text(outcome)
    assert outcome.written == [], outcome_text(outcome)
    assert outcome.heavy == [], outcome_text(outcome)


@pytest.mark.parametrize("case", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_a_bad_input_is_one_line_exit_2_nothing_written_and_no_tensorflow(sandbox: CliSandbox, case: Bad) -> None:
    outcome = sandbox.run(case.args, files=case.files, store_sql=case.store_sql)
    assert_one_line_and_nothing_written(outcome)
    assert case.says in outcome.stderr, outcome.stderr


@pytest.mark.parametrize("args", [
    pytest.param(["list"], id="list"),
    pytest.param(["list", "-o", "json"], id="list-json"),
    pytest.param(["sweep", "status", "s"], id="sweep-status"),
    pytest.param(["submit", "--hparams", "dqn_cartpole", "--dry-run"], id="submit-dry-run"),
    pytest.param(["submit", "--cluster", "kube", "--hparams", "dqn_cartpole", "--name", "x", "--seed", "-1",
                  "--dry-run"], id="submit-dry-run-refused"),
])
def test_read_only_commands_and_dry_runs_create_no_store(sandbox: CliSandbox, args: list[str]) -> None:
    outcome = sandbox.run(args)
    assert outcome.exit_code in (0, 2), outcome_text(outcome)
    assert not outcome.traceback, outcome_text(outcome)
    assert outcome.written == [], outcome_text(outcome)


def test_a_project_file_changing_a_shipped_profile_says_so_in_one_line_and_still_works(sandbox: CliSandbox) -> None:
    outcome = sandbox.run(["render", "--cluster", "kube", "--hparams", "dqn_cartpole", "--name", "x"],
                          files={"rlkube.yaml": "kube:\n  image: evil.example/rlkube:1\n  context: prod\n"})
    assert outcome.exit_code == 0, outcome_text(outcome)
    notes = outcome.stderr.splitlines()
    assert len(notes) == 1, notes
    assert notes[0].startswith("note: "), notes
    assert "rlkube.yaml changes context, image of the profile 'kube' from rlkube's clusters.yaml" in notes[0]
    assert "image: evil.example/rlkube:1" in outcome.stdout


@pytest.mark.parametrize(("text", "steps"), [("1000", 1000), ("1e3", 1000), ("1.5e3", 1500), ("1_000", 1000),
                                             ("9223372036854775807", 2**63 - 1),
                                             ("123456789012345678", 123456789012345678)])
def test_an_int_hparam_is_parsed_exactly_and_e_notation_counts_when_whole(text: str, steps: int) -> None:
    assert get_hparams("dqn_cartpole", f"train_steps={text}").train_steps == steps


# -- the property: generated inputs to parse, render and --dry-run ---------------------------------------------------

PROPERTY_EXAMPLES = 400
# Text a hostile user might type: control characters included (a NUL cannot be in a command's arguments).
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e3", "1.5e3", "1e999999999", "1_000", "0x10", "",
                     "99999999999999999999", "-0", "1e-3", "64;64", "true", "none"]),
    st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), TEXT)
OVERRIDE_KEYS = st.sampled_from(["lr", "gamma", "batch_size", "train_steps", "hidden_sizes", "max_grad_norm",
                                 "target_return", "vector_mode", "agent", "env", "epsilon_end", "clip_range"])
NAME = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
# Each optional flag: values that are right, and values a hostile user might give. A flag is in about one input of
# four, with a right value two times of three, so that both the successes and the refusals are many.
FLAGS = {
    "--hparam-override": (st.sampled_from(["lr=3e-4", "gamma=0.98,batch_size=32", "hidden_sizes=64;64",
                                           "train_steps=1e3", "target_return=none"]),
                          st.lists(st.tuples(st.one_of(OVERRIDE_KEYS, TEXT), NUMBER_TEXT), max_size=3).map(
                              lambda pairs: ",".join(f"{key}={value}" for key, value in pairs))),
    "--seed": (st.integers(0, 2**32 - 2).map(str), NUMBER_TEXT),
    "--copies": (st.integers(1, 5).map(str), st.one_of(st.integers(-2, 1002).map(str), NUMBER_TEXT)),
    "--num-workers": (st.integers(0, 8).map(str), st.one_of(st.integers(-1, 1030).map(str), NUMBER_TEXT)),
    "--train-steps": (st.integers(1, 10**9).map(str), NUMBER_TEXT),
    "--name": (NAME, st.one_of(st.sampled_from(["", "abc\n", "A", "-x", "x" * 41]), TEXT)),
    "-n": (NAME, st.one_of(st.sampled_from(["", "rl\n", "Team_A", "a" * 64]), TEXT)),
    "--image": (st.sampled_from(["ghcr.io/rlkube/rlkube-cpu:0.1.0", "localhost:5000/x@sha256:" + "a" * 64]),
                st.one_of(st.sampled_from(["UPPER/x", "x:", "a b", "x:1\n"]), TEXT)),
    "--env": (st.sampled_from(["CartPole-v1", "Acrobot-v1"]),
              st.one_of(st.sampled_from(["Pendulum-v1", "CartPole-v9"]), TEXT)),
    "--track-uri": (st.sampled_from(["http://mlflow:5000", "file:///tmp/mlruns", "https://wandb.example"]),
                    st.one_of(st.sampled_from(["https://me:pw@h", "http://h/?apikey=k", "http://[::1", "https://t@h"]),
                              TEXT)),
    "--track-group": (NAME, TEXT),
    "--context": (NAME, TEXT),
}
COMMANDS = st.sampled_from([["render", "--cluster", "kube"], ["render", "--cluster", "eks", "-o", "json"],
                            ["render", "--cluster", "gke-gpu", "--format", "helm-values"],
                            ["submit", "--cluster", "local", "--dry-run"]])


@st.composite
def cli_inputs(draw: st.DrawFn) -> list[str]:
    """A command that only parses, renders or dry-runs, with its flags drawn from FLAGS."""
    hparams = draw(st.sampled_from(["dqn_cartpole", "ppo_cartpole"]) if draw(st.integers(0, 5)) else TEXT)
    args = [*draw(COMMANDS), "--hparams", hparams]
    tracked = draw(st.integers(0, 2)) == 0
    if tracked:
        args += ["--track", draw(st.sampled_from(["mlflow", "wandb", "neptune"]))]
    for flag, (right, hostile) in FLAGS.items():
        # --track-uri and --track-group need --track: mostly given with it, and without it now and then
        if draw(st.integers(0, 3)) == 0 and (tracked or not flag.startswith("--track") or draw(st.integers(0, 3)) == 0):
            args += [flag, draw(right if draw(st.integers(0, 2)) else hostile)]
    return args


@settings(max_examples=PROPERTY_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(args=cli_inputs())
def test_any_input_to_parse_render_or_dry_run_succeeds_or_is_one_line_and_writes_nothing(sandbox: CliSandbox,
                                                                                          args: list[str]) -> None:
    outcome = sandbox.run(args)
    event(f"exit {outcome.exit_code}")  # --hypothesis-show-statistics counts how many were refused
    if outcome.exit_code == 0:
        assert not outcome.traceback, outcome_text(outcome)
        assert outcome.written == [], outcome_text(outcome)
        assert outcome.heavy == [], outcome_text(outcome)
    else:
        assert_one_line_and_nothing_written(outcome)
