"""Ready for a GPU node: rlkube's Atari learners, envpool and a ppo_pong training, measured here, as one table.

    bash benchmarks/gpu_check.sh                     # on a GPU node in the rlkube-gpu image: at most 9 minutes
    bash benchmarks/gpu_check.sh --device cpu --minutes 5 --measure-seconds 1 --train-steps 256 \\
        --evaluations 1 --eval-episodes 1 --hparam-override n_steps=16,n_epochs=1     # the dry run of the tests

Three stages share --minutes. Each runs in a process of its own, stopped when its share runs out:
1. learners (LEARNER_SHARE): dqn_pong's gradient step (batch 32), ppo_pong's (its minibatch) and ppo_pong's acting
   and learning per 1k env steps, on --device, timed by atari_learner_vs_sb3.RlkubeWorker exactly as the SB3
   comparison times them: on the almost free Pong-shaped env, so that the env is not in them;
2. envs (ENV_SHARE): envpool on all usable cores, and ppo_pong's own training vector, timed by atari_sps (the ALE
   pipeline where envpool is not installed);
3. training (all that is left): `rlkube train --hparams ppo_pong` for as many steps as the measured rates fit into
   TRAIN_FILL of the time left; should it run over, SIGTERM stops it in time (the runner checkpoints and exits).

The table (markdown) is all that goes to stdout; the stages' own output goes to stderr. Exits 1 if a stage failed,
ran out of its time or could not train: its row says which.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atari_learner_vs_sb3 import LEARNING_STARTS  # benchmarks/ is this script's directory

import rlkube  # before numpy, which the stages import: it keeps acting's OpenBLAS on one thread, as in a run
from rlkube.errors import UserError

HERE = Path(__file__).resolve().parent
TRAINING_SET = "ppo_pong"
LEARNER_SHARE = 0.2
ENV_SHARE = 0.1
# The training's steps fill this much of its time at the measured rates; evaluations, the run's start-up beyond
# what the learner stage's took, and the estimate's error get the rest.
TRAIN_FILL = 0.8
# SIGTERM comes this long (at most 5% of the budget) before the budget ends: the runner checkpoints and exits in it,
# once the evaluation under way, if any, is over (on the 2-core VM, one at load 12 outlasted 8 s).
STOP_GRACE_S = 20.0
STAGES = ("learners", "envs")


# -- the stages, each run as `gpu_check.py --stage NAME` ----------------------------------------------------------

def learner_stage(device: str, seconds: float, dqn_learning_starts: int) -> dict[str, Any]:
    """The Nature-CNN learners' times on `device`: rounds of atari_learner_vs_sb3's commands for about `seconds`."""
    started = time.perf_counter()
    import tensorflow as tf  # noqa: PLC0415  (the stage's process alone loads TensorFlow)
    from atari_learner_vs_sb3 import RlkubeWorker  # noqa: PLC0415

    worker = RlkubeWorker("auto", threads=0, device=device, learning_starts=dqn_learning_starts)
    setup_seconds = time.perf_counter() - started
    dqn_ms, ppo_ms, ppo_1k = [], [], []
    rounds_started = time.perf_counter()
    while not dqn_ms or time.perf_counter() - rounds_started < seconds:
        dqn_ms.append(worker.run("dqn_step")["ms"])
        ppo = worker.run("ppo_1k")
        ppo_ms.append(ppo["step_ms"])
        ppo_1k.append(ppo["s"])
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "setup_s": setup_seconds, "rounds": len(dqn_ms),
        "dqn_step_ms": statistics.median(dqn_ms), "dqn_batch": worker.dqn.hp.batch_size,
        "dqn_dtype": convolution_dtype_name(worker.dqn),
        "ppo_step_ms": statistics.median(ppo_ms), "ppo_batch": worker.ppo.hp.batch_size,
        "ppo_dtype": convolution_dtype_name(worker.ppo), "ppo_1k_s": statistics.median(ppo_1k),
        "tf_version": tf.__version__, "tf_built_with_cuda": tf.test.is_built_with_cuda(),
        "tf_gpus": [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus],
    }


def convolution_dtype_name(agent: Any) -> str:
    """What the agent's convolutions compute in: its hidden dtype, None being float32 (TensorFloat-32 on a GPU)."""
    return agent.hidden_dtype.name if agent.hidden_dtype is not None else "float32"


def env_stage(overrides: str, seconds: float) -> dict[str, Any]:
    """Steps/s of envpool on all usable cores (where installed) and of the training set's own vector."""
    from atari_sps import vector_steps_per_second  # noqa: PLC0415

    from rlkube.rl import atari_envpool  # noqa: PLC0415
    from rlkube.rl.envs import make_vector_env  # noqa: PLC0415
    from rlkube.rl.hparams import get_hparams  # noqa: PLC0415

    hp = get_hparams(TRAINING_SET, overrides)
    cores = usable_cores()
    with warnings.catch_warnings():  # the fallback's warning: the row says it
        warnings.simplefilter("ignore")
        training_vector = make_vector_env(hp.env, hp.num_envs, hp.vector_mode)
    record: dict[str, Any] = {
        "cores": cores, "envpool": atari_envpool.installed(),
        "training_vector": {"envs": hp.num_envs, "envpool": isinstance(training_vector, atari_envpool.EnvpoolAtari),
                            "sps": vector_steps_per_second(training_vector, seconds)},
    }
    if record["envpool"]:
        envs = max(cores, hp.num_envs)
        all_cores = atari_envpool.EnvpoolAtari(hp.env, envs, num_threads=cores)
        record["all_cores"] = {"envs": envs, "sps": vector_steps_per_second(all_cores, seconds)}
    return record


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, within a container's CPU limit (cgroup v2's cpu.max)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    return cores if quota == "max" else max(1, min(cores, math.ceil(int(quota) / int(period))))


# -- the driver ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Stage:
    """A stage's record, or why there is none (`problem`), and the seconds it took of its share."""

    share_s: float
    seconds: float
    record: dict[str, Any] | None = None
    problem: str | None = None


def run_stage(name: str, args: argparse.Namespace, share_s: float) -> Stage:
    command = [sys.executable, __file__, "--stage", name, "--device", args.device, "--measure-seconds",
               str(args.measure_seconds), "--dqn-learning-starts", str(args.dqn_learning_starts),
               "--hparam-override", args.hparam_override]
    print(f"gpu_check: stage {name} ({share_s:.0f} s at most)", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:  # the stage's stderr (TensorFlow's, say) goes straight to ours
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=share_s, check=False)
    except subprocess.TimeoutExpired:
        return Stage(share_s, time.monotonic() - started, problem=f"did not finish in its {share_s:.1f} s share")
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return Stage(share_s, seconds, problem=f"failed (exit {done.returncode}; its error is above the table)")
    return Stage(share_s, seconds, record=json.loads(done.stdout.strip().splitlines()[-1]))


@dataclasses.dataclass
class Training:
    planned_steps: int | None = None
    estimated_sps: float | None = None
    eval_every: int | None = None
    seconds: float = 0.0
    outcome: str = "skipped"  # how it ended, as the table says it
    progress: dict[str, Any] | None = None  # the run's progress.json
    evaluations: list[dict[str, Any]] | None = None  # its metrics.jsonl
    problem: str | None = None


def plan_steps(args: argparse.Namespace, hp: Any, learners: Stage, envs: Stage, window_s: float) -> Training:
    """The training's steps: --train-steps, or what the measured rates fit into TRAIN_FILL of `window_s`."""
    if args.train_steps:
        return Training(planned_steps=args.train_steps)
    if learners.record is None or envs.record is None:
        return Training(problem="skipped: no measured rate to size it by (see the stages' rows)")
    # The runner acts, steps the envs and learns in turn, so their times add up.
    seconds_per_step = learners.record["ppo_1k_s"] / 1_000 + 1 / envs.record["training_vector"]["sps"]
    rollout = hp.num_envs * hp.n_steps
    usable = TRAIN_FILL * (window_s - learners.record["setup_s"])
    steps = rollout * int(usable / seconds_per_step // rollout)
    if steps == 0:
        return Training(estimated_sps=1 / seconds_per_step,
                        problem=f"skipped: {window_s:.0f} s left fit no rollout of {rollout} steps")
    return Training(planned_steps=steps, estimated_sps=1 / seconds_per_step)


def train(args: argparse.Namespace, training: Training, deadline: float, grace_s: float) -> None:
    """`rlkube train` for the planned steps, stopped by SIGTERM `grace_s` before `deadline` if still running."""
    from rlkube.rundir import layout  # noqa: PLC0415
    from rlkube.rundir.progress_record import ProgressRecord  # noqa: PLC0415

    training.eval_every = max(1, training.planned_steps // args.evaluations)
    # The user's overrides come last, so that theirs win.
    overrides = ",".join(filter(None, [f"eval_every={training.eval_every}", args.hparam_override]))
    with tempfile.TemporaryDirectory(prefix="rlkube-gpu-check-") as run_dir:
        command = [sys.executable, "-m", "rlkube", "train", "--hparams", TRAINING_SET, "--hparam-override", overrides,
                   "--train-steps", str(training.planned_steps), "--eval-episodes", str(args.eval_episodes),
                   "--test-episodes", "0", "--device", args.device, "--output-dir", run_dir]
        print(f"gpu_check: training: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=sys.stderr)  # its lines are for the person watching
        try:
            code = process.wait(timeout=max(0.0, deadline - grace_s - time.monotonic()))
            training.outcome = "finished" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=grace_s)
                # 143 from the runner's checkpoint and exit; killed by the signal itself before its loop began
                stopped = code in (128 + signal.SIGTERM, -signal.SIGTERM)
                training.outcome = "stopped at the time limit" if stopped else "failed"
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
                # What it logged stands: its evaluations, and its steps as of its last progress record (<= 10 s old)
                training.outcome = f"killed at the time limit, {grace_s:.0f} s after SIGTERM"
        training.seconds = time.monotonic() - started
        copy = layout.copy_dir(Path(run_dir), 0)
        record = ProgressRecord.read(copy)
        training.progress = dataclasses.asdict(record) if record else None
        metrics = copy / layout.METRICS_FILE
        training.evaluations = ([json.loads(line) for line in metrics.read_text().splitlines()]
                                if metrics.exists() else [])
    if training.outcome == "failed":
        training.problem = f"failed (exit {code}; its error is above the table)"
    elif not training.evaluations or not (training.progress or {}).get("wall_seconds"):
        training.problem = "no evaluation ran before it stopped"


# -- the table ----------------------------------------------------------------------------------------------------

def machine_rows(args: argparse.Namespace, learners: Stage) -> list[tuple[str, str]]:
    cores, usable = os.cpu_count(), usable_cores()
    cpu = f"{cores} cores ({cpu_model()})" + (f", {usable} usable by this process" if usable != cores else "")
    return [("GPU", gpu_text(learners)), ("CPU", cpu), ("TensorFlow", tf_text(learners)),
            ("rlkube", f"{rlkube.__version__} at {git_commit()}"),
            ("device", f"--device {args.device} (learners and training)")]


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return "model unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "model unknown")


def gpu_text(learners: Stage) -> str:
    """What TensorFlow sees, with nvidia-smi's view beside it where there is one (a driver TF cannot use, say)."""
    smi = ""
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, check=False, timeout=30)
        smi = "; ".join(query.stdout.strip().splitlines()) if query.returncode == 0 else "fails"
    if learners.record is None:
        seen = f"not known: the learner stage {learners.problem}"
    elif learners.record["tf_gpus"]:
        seen = ", ".join(learners.record["tf_gpus"])
    else:
        seen = "none seen by TensorFlow" + ("" if learners.record["tf_built_with_cuda"] else " (built without CUDA)")
    return seen + (f"; nvidia-smi: {smi}" if smi else "; no nvidia-smi")


def tf_text(learners: Stage) -> str:
    if learners.record is not None:
        return learners.record["tf_version"]
    from importlib import metadata  # noqa: PLC0415

    for distribution in ("tensorflow", "tensorflow-cpu", "tensorflow-tpu"):
        try:
            return f"{metadata.version(distribution)} ({distribution})"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def git_commit() -> str:
    """This checkout's commit, `-dirty` with uncommitted changes to tracked files; where git cannot run (the images
    have none), read from .git itself."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(HERE), *args], capture_output=True, text=True, check=False)

    if shutil.which("git") and (head := git("rev-parse", "--short", "HEAD")).returncode == 0:
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    commit = commit_in_git_dir(HERE.parent / ".git")
    return f"{commit[:7]} (no git here to tell uncommitted changes)" if commit else "no git checkout"


def commit_in_git_dir(git_dir: Path) -> str | None:
    """HEAD's commit, read from a repository's .git directory (a worktree's .git is a file: None)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head  # a detached HEAD is the commit itself
        ref = head.removeprefix("ref: ")
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text().strip()
        packed = (git_dir / "packed-refs").read_text().splitlines()
    except OSError:
        return None
    return next((line.split()[0] for line in packed if line.endswith(f" {ref}")), None)


def learner_rows(learners: Stage) -> list[tuple[str, str]]:
    record = learners.record
    if record is None:
        return [(label, learners.problem) for label in ("`dqn_pong` gradient step", "`ppo_pong` gradient step",
                                                        "`ppo_pong` acting and learning")]
    rounds = f"median of {record['rounds']} rounds" if record["rounds"] > 1 else "1 round"
    return [
        (f"`dqn_pong` gradient step (batch {record['dqn_batch']}, {record['dqn_dtype']} convolutions, "
         "replay sampling included)", f"{record['dqn_step_ms']:.3g} ms ({rounds})"),
        (f"`ppo_pong` gradient step (minibatch {record['ppo_batch']}, {record['ppo_dtype']} convolutions, "
         "an update's steps averaged)", f"{record['ppo_step_ms']:.3g} ms ({rounds})"),
        ("`ppo_pong` acting and learning per 1k env steps (Pong-shaped env: no emulator)",
         f"{record['ppo_1k_s']:.3g} s ({rounds})"),
    ]


def env_rows(envs: Stage) -> list[tuple[str, str]]:
    record = envs.record
    if record is None:
        return [("envpool on all cores", envs.problem), (f"`{TRAINING_SET}`'s training vector", envs.problem)]
    vector = record["training_vector"]
    backend = "envpool" if vector["envpool"] else "ALE pipeline in process"
    vector_row = (f"`{TRAINING_SET}`'s training vector ({vector['envs']} envs, {backend})",
                  f"{vector['sps']:,.0f} steps/s")
    if "all_cores" not in record:
        return [(f"envpool on all {record['cores']} cores",
                 f"not installed (pip install 'rlkube[envpool]'); the ALE pipeline instead, {vector['envs']} envs "
                 f"in process on one core: {vector['sps']:,.0f} steps/s"), vector_row]
    all_cores = record["all_cores"]
    return [(f"envpool on all {record['cores']} cores ({all_cores['envs']} envs, {record['cores']} threads)",
             f"{all_cores['sps']:,.0f} steps/s"), vector_row]


def training_rows(args: argparse.Namespace, training: Training) -> list[tuple[str, str]]:
    if training.planned_steps is None:
        return [(f"`{TRAINING_SET}` trained by `rlkube train`", training.problem)]
    planned = (f"{training.planned_steps:,} steps " + (
        "(--train-steps)" if args.train_steps else f"(fit to the estimated {training.estimated_sps:,.0f} steps/s)")
        + f", evaluated every {training.eval_every:,} steps on {args.eval_episodes} episode"
        + ("s" if args.eval_episodes > 1 else ""))
    label = (f"`{TRAINING_SET}` trained by `rlkube train` for {training.seconds:.0f} s: {planned}; "
             f"{training.outcome}")
    if training.problem:
        return [(label, training.problem)]
    best = max(training.evaluations, key=lambda evaluation: (evaluation["mean_return"], evaluation["step"]))
    progress = training.progress
    sps = progress["step"] / progress["wall_seconds"]
    return [(label, f"best evaluation {best['mean_return']:.2f} ± {best['std_return']:.2f} at step {best['step']:,} "
                    f"(of {len(training.evaluations)}); {progress['step']:,} steps at {sps:,.0f} steps/s")]


def print_table(rows: list[tuple[str, str]]) -> None:
    print("| rlkube GPU check | measured |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


# -- main ---------------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="where the learners and the training learn (default gpu)")
    parser.add_argument("--minutes", type=float, default=9.0, help="the whole check's time (default 9)")
    parser.add_argument("--measure-seconds", type=float, default=10.0,
                        help="each timing's length within the learner and env stages (default 10)")
    parser.add_argument("--dqn-learning-starts", type=int, default=LEARNING_STARTS,
                        help="transitions dqn_pong stores before its timed gradient steps (default "
                             f"{LEARNING_STARTS:,}, as atari_learner_vs_sb3.py; fewer shorten the learner stage)")
    parser.add_argument("--train-steps", type=int, help="the training's steps (default: fit to the measured rates)")
    parser.add_argument("--evaluations", type=int, default=4, help="the training's evaluations (default 4)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes of each evaluation (default 5)")
    parser.add_argument("--hparam-override", default="",
                        help=f"overrides of {TRAINING_SET} for the training (and its env vector), as rlkube train's")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # run as that stage's process
    args = parser.parse_args()
    for name in ("minutes", "measure_seconds", "dqn_learning_starts", "train_steps", "evaluations", "eval_episodes"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0, not {value}")
    return args


def run_as_stage(args: argparse.Namespace) -> None:
    stages: dict[str, Callable[[], dict[str, Any]]] = {
        "learners": lambda: learner_stage(args.device, args.measure_seconds, args.dqn_learning_starts),
        "envs": lambda: env_stage(args.hparam_override, args.measure_seconds),
    }
    try:
        record = stages[args.stage]()
    except UserError as error:  # --device gpu without one, say: a line above the table, not a traceback
        print(f"gpu_check: stage {args.stage}: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(record), flush=True)


def main() -> None:
    args = parse_args()
    if args.stage:
        run_as_stage(args)
        return
    started = time.monotonic()
    budget_s = 60 * args.minutes
    deadline = started + budget_s
    from rlkube.rl.hparams import get_hparams  # noqa: PLC0415

    try:  # the user's overrides, checked before any stage starts
        hp = get_hparams(TRAINING_SET, args.hparam_override)
    except UserError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        sys.exit(2)
    learners = run_stage("learners", args, LEARNER_SHARE * budget_s)
    envs = run_stage("envs", args, ENV_SHARE * budget_s)
    grace_s = min(STOP_GRACE_S, 0.05 * budget_s)
    training = plan_steps(args, hp, learners, envs, deadline - grace_s - time.monotonic())
    if training.planned_steps:
        train(args, training, deadline, grace_s)
    elapsed = time.monotonic() - started
    check = (f"{elapsed / 60:.1f} of {args.minutes:g} min: learners {learners.seconds:.0f} s of "
             f"{learners.share_s:.0f}, envs {envs.seconds:.0f} s of {envs.share_s:.0f}, training "
             f"{training.seconds:.0f} s")
    print_table([*machine_rows(args, learners), ("check's time", check), *learner_rows(learners),
                 *env_rows(envs), *training_rows(args, training)])
    if learners.problem or envs.problem or training.problem:
        sys.exit(1)


if __name__ == "__main__":
    main()
