"""Golden determinism: every registered variant's short fixed-seed run logs the numbers it logged before.

Each case is `rlkube train --seed 0` on a few thousand steps of a registered hparams set: past learning_starts,
through several gradient phases and target updates, with evaluations and a final test. Every scalar it logs to
TensorBoard (losses, training episodes, exploration, evaluation and test returns) is compared, step by step,
with tests/goldens/<case>.json. A numeric regression in any agent shows here in seconds, where the learning
tier would take minutes to notice it, if it noticed it at all.

The rule: a golden changes only in a commit that also records the full tier's learning results. A change that
moves these numbers on purpose has to show that the agents still learn; re-record with

    RLKUBE_RECORD_GOLDENS=1 pytest tests/test_golden.py [-k CASE]

and commit the goldens together with those results.

The cases are derived from the registries: every hparams set on a classic-control env is a case under its own
name, so a new set fails here until its golden is recorded. Sets on Atari or MuJoCo are left to the learning
tier: a Pong evaluation alone is thousands of Nature-CNN steps, and their learners are the classic-control
sets' learners on a larger network. EXTRA_CASES adds the variants that no registered set is (PPO's plain
Gaussian policy on Box actions), and every registered agent must appear in some case.
"""

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

import rlkube
from rlkube.rl.agents import agent_registry
from rlkube.rl.agents.compiled import one_thread_per_op
from rlkube.rl.envs import CLASSIC_CONTROL_IDS
from rlkube.rl.hparams import get_hparams, hparams_registry
from rlkube.rundir.layout import EVENTS_GLOB, copy_dir
from tests.conftest import tensorflow_version

GOLDENS = Path(__file__).parent / "goldens"
RECORD = os.environ.get("RLKUBE_RECORD_GOLDENS") == "1"
RECORD_HINT = ("RLKUBE_RECORD_GOLDENS=1 pytest tests/test_golden.py -k {case}, and commit it together with the full "
               "tier's learning results")

# What every case overrides: a few thousand steps, evaluations every thousand, a log line at every gradient phase.
SHORT_RUN = {"train_steps": "3000", "eval_every": "1000", "log_every": "250"}
EVAL_EPISODES = "2"
TEST_EPISODES = "2"
# Where a set's own settings would not reach learning in a short run, or would make it slow, by set name.
SET_OVERRIDES: dict[str, dict[str, str]] = {
    # One rollout is 8 x 128 steps: four of them.
    "vpg_cartpole": {"train_steps": "4096", "eval_every": "2048"},
    # One rollout of 4 x 1024 steps would outlast the run: three rollouts of 4 x 256.
    "ppo_pendulum": {"n_steps": "256", "train_steps": "3072", "eval_every": "1024"},
    # A gradient step per env step on (400, 300) or (256, 256) networks takes seconds over a run; (64, 64) exercises
    # the same code. DDPG and TD3 learn from step 10,000 in their sets.
    "ddpg_pendulum": {"hidden_sizes": "64;64", "learning_starts": "500", "train_steps": "1500"},
    "td3_pendulum": {"hidden_sizes": "64;64", "learning_starts": "500", "train_steps": "1500"},
    "sac_pendulum": {"hidden_sizes": "64;64", "train_steps": "1500"},
    "ddpg_mountaincar_continuous": {"hidden_sizes": "64;64", "train_steps": "1500"},
    "sac_mountaincar_continuous": {"train_steps": "1500"},
    # The slowest of the DQN family per step (a gradient call every 4 steps; noisy, 3-step and prioritized).
    "dqn_acrobot": {"train_steps": "2000"},
    "rainbow_cartpole": {"train_steps": "2000"},
}
# Variants that no registered set is: case name -> (set, overrides on top of the set's SET_OVERRIDES).
EXTRA_CASES: dict[str, tuple[str, dict[str, str]]] = {
    "ppo_pendulum_gaussian": ("ppo_pendulum", {"use_sde": "false"}),
}
# TOLERANCE: none; every value must equal its golden bit for bit. Measured on the 2-core AMD EPYC (AVX-512) that CI
# runs on, TensorFlow 2.21: every case logged identical float32s run after run, under a load average of 9 to 15,
# in its own process or after other cases in one process, in either order, and with other cases running beside
# it. The one thing that moved a number is TensorFlow's intra-op thread count, which `train` keeps to the CLI's
# own choice. A tolerance would buy nothing: a weight that moves by one ulp soon changes an action, and from then
# on the episodes differ, so a real change shows as large differences, not small ones; and a refactor, which these
# goldens check, should change no bit. Another CPU (one without AVX-512) or another TensorFlow may round
# differently: the failure names what recorded the golden, and re-recording there follows the rule above.
# Scalars that measure the machine rather than the run.
WALL_CLOCK_TAGS = frozenset({"charts/SPS"})


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    hparams: str
    overrides: dict[str, str]

    def train_args(self, output_dir: Path) -> list[str]:
        override_text = ",".join(f"{key}={value}" for key, value in self.overrides.items())
        return ["train", "--hparams", self.hparams, "--seed", "0", "--eval-episodes", EVAL_EPISODES,
                "--test-episodes", TEST_EPISODES, "--hparam-override", override_text, "--output-dir", str(output_dir)]


def _case(name: str, hparams: str, extra: dict[str, str] | None = None) -> Case:
    return Case(name, hparams, {**SHORT_RUN, **SET_OVERRIDES.get(hparams, {}), **(extra or {})})


def golden_cases() -> list[Case]:
    """A case per registered set on a classic-control env, under the set's name, and the EXTRA_CASES."""
    registered = [_case(name, name) for name in hparams_registry
                  if hparams_registry[name]().env in CLASSIC_CONTROL_IDS]
    extra = [_case(name, hparams, overrides) for name, (hparams, overrides) in EXTRA_CASES.items()]
    return registered + extra


CASES = golden_cases()


# Cases run a few to a process, as `rlkube train` invocations of the real CLI one after another: TensorFlow's import
# and start-up (~5 s of CPU) then come once per batch instead of once per case. The runner sets TensorFlow's intra-op
# threads once per process (one thread for small learners, see one_thread_per_op), and vpg_cartpole's policy loss
# differs in its sixth digit between one thread and two, so a batch holds only cases that choose the same threads.
# Every case logged the same bits in a batch as in a process of its own (see TOLERANCE).
BATCHES_PER_THREAD_CHOICE = 2
RUN_CASES_IN_ONE_PROCESS = """
import json, sys, traceback
from rlkube.cli.main import cli
outcomes = {}
for name, args in json.loads(sys.argv[1]):
    try:
        outcomes[name] = cli.main(args, prog_name="rlkube", standalone_mode=False) or 0
    except SystemExit as exit_:
        outcomes[name] = exit_.code
    except BaseException:
        outcomes[name] = traceback.format_exc()
print("OUTCOMES " + json.dumps(outcomes))
"""


def batches(cases: list[Case]) -> dict[str, str]:
    """Each case's process, by name: cases that choose the same TensorFlow threads, spread over a few processes that
    pytest-xdist's --dist loadgroup may run side by side."""
    one_thread = {case.name: one_thread_per_op(get_hparams(case.hparams, case.overrides)) for case in cases}
    batch = {}
    for choice, label in ((True, "one"), (False, "pool")):
        same_threads = [name for name in one_thread if one_thread[name] == choice]
        batch.update({name: f"golden-{label}-thread-{index % BATCHES_PER_THREAD_CHOICE}"
                      for index, name in enumerate(same_threads)})
    return batch


BATCH = batches(CASES)
_trained: dict[str, Path | str] = {}  # case name -> its copy's run directory, or why its run failed


def train(case: Case, selected: list[Case], scratch: Path) -> Path:
    """The case's copy directory, trained by `rlkube train` together with the other selected cases of its batch."""
    if case.name not in _trained:
        batch = [other for other in selected if BATCH[other.name] == BATCH[case.name] and other.name not in _trained]
        jobs = [(other.name, other.train_args(scratch / other.name)) for other in batch]
        result = subprocess.run([sys.executable, "-c", RUN_CASES_IN_ONE_PROCESS, json.dumps(jobs)],
                                capture_output=True, text=True, timeout=900, check=False)
        marker = [line for line in result.stdout.splitlines() if line.startswith("OUTCOMES ")]
        assert result.returncode == 0, f"the batch process failed: {result.stderr[-3000:]}"
        assert marker, f"the batch process said nothing of its cases: {result.stdout[-3000:]}"
        for name, outcome in json.loads(marker[0].removeprefix("OUTCOMES ")).items():
            _trained[name] = copy_dir(scratch / name, 0) if outcome == 0 else f"exit {outcome}: {result.stderr[-3000:]}"
    trained = _trained[case.name]
    assert isinstance(trained, Path), f"rlkube train {' '.join(case.train_args(Path('DIR')))} failed: {trained}"
    return trained


def logged_scalars(run_dir: Path) -> dict[str, list[list[float]]]:
    """Every scalar the run logged, as [step, value] pairs per tag in the order written (several training episodes
    may end at one step). The values are TensorBoard's float32s, exactly."""
    logged: dict[str, list[list[float]]] = {}
    for path in sorted(run_dir.glob(EVENTS_GLOB)):
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value" and value.tag not in WALL_CLOCK_TAGS:
                    logged.setdefault(value.tag, []).append([event.step, value.simple_value])
    return dict(sorted(logged.items()))


def provenance(case: Case) -> dict[str, Any]:
    """What wrote a golden: the command, and the versions and machine whose arithmetic it holds."""
    return {
        "command": ["rlkube", *case.train_args(Path("DIR"))],
        "rlkube": rlkube.__version__,
        "tensorflow": tensorflow_version(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), else its architecture: XLA compiles for the instructions the CPU has."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine()


def golden_text(case: Case, scalars: dict[str, list[list[float]]]) -> str:
    """The golden file: provenance, then one line per tag, so that a diff shows which tags moved."""
    lines = [f"  {json.dumps(tag)}: {json.dumps(pairs)}" for tag, pairs in scalars.items()]
    head = json.dumps({"case": case.name, "written_by": provenance(case)}, indent=2)[:-2]
    return head + ',\n  "scalars": {\n' + ",\n".join(f"  {line}" for line in lines) + "\n  }\n}\n"


def differences(expected: dict[str, list[list[float]]], got: dict[str, list[list[float]]]) -> list[str]:
    """Each way `got` departs from `expected`: missing or new tags, other steps, then each tag's first other value,
    earliest step first (where the run first departed; later ones follow from it)."""
    found = [f"{tag}: in the golden, not logged" for tag in sorted(expected.keys() - got.keys())]
    found += [f"{tag}: logged, not in the golden" for tag in sorted(got.keys() - expected.keys())]
    first_values: list[tuple[float, str]] = []
    for tag in sorted(expected.keys() & got.keys()):
        expected_steps, got_steps = [step for step, _ in expected[tag]], [step for step, _ in got[tag]]
        if expected_steps != got_steps:
            found.append(f"{tag}: logged at steps {got_steps}, the golden at {expected_steps}")
            continue
        for (step, want), (_, value) in zip(expected[tag], got[tag], strict=True):
            if value != want:  # exactly: see TOLERANCE
                first_values.append((step, f"{tag} at step {step}: expected {want!r}, got {value!r}"))
                break
    return found + [line for _, line in sorted(first_values)]


@pytest.fixture
def selected_cases(request: pytest.FixtureRequest) -> list[Case]:
    """The golden cases this session runs (after -k and -m), in collection order."""
    return [item.callspec.params["case"] for item in request.session.items
            if item.originalname == "test_run_logs_its_golden_numbers"]


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.xdist_group(BATCH[case.name]), id=case.name)
                                  for case in CASES])
def test_run_logs_its_golden_numbers(case: Case, selected_cases: list[Case],
                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    golden = GOLDENS / f"{case.name}.json"
    if not RECORD and not golden.exists():
        pytest.fail(f"no golden for {case.name} ({golden}); record it with {RECORD_HINT.format(case=case.name)}")
    scalars = logged_scalars(train(case, selected_cases, tmp_path_factory.mktemp("golden")))
    if RECORD:
        GOLDENS.mkdir(exist_ok=True)
        golden.write_text(golden_text(case, scalars))
        return
    recorded = json.loads(golden.read_text())
    found = differences(recorded["scalars"], scalars)
    assert not found, (f"{case.name} departs from its golden in {len(found)} place(s), first:\n  "
                       + "\n  ".join(found[:5]) + f"\nrecorded by {recorded['written_by']}\nIf the change is meant, "
                       f"re-record with {RECORD_HINT.format(case=case.name)}")


def test_every_agent_has_a_golden_case() -> None:
    covered = {get_hparams(case.hparams, case.overrides).agent for case in CASES}
    missing = sorted(set(agent_registry.names()) - covered)
    assert not missing, (f"agents without a golden case: {missing}; register a classic-control hparams set for each "
                         f"(or add it to EXTRA_CASES), then record with {RECORD_HINT.format(case='NAME')}")


def test_every_golden_belongs_to_a_case() -> None:
    stale = sorted({path.stem for path in GOLDENS.glob("*.json")} - {case.name for case in CASES})
    assert not stale, f"goldens of no case (a set renamed or removed?): {stale}; delete them from {GOLDENS}"
