"""An experiment is K copies of one run, each with its own seed and hparams in DIR/copy-<i>/.

Copies run in parallel processes when there are cores for them. The parent forwards SIGTERM and
SIGINT to them (in a container only PID 1 gets the signal) so every copy checkpoints before exit.
"""

import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rlkube.errors import SUPERSEDED_EXIT_CODE, UserError
from rlkube.rl.hparams import HParams
from rlkube.run.options import CopyPlan, copy_hparams
from rlkube.run.runner import Runner, RunOptions
from rlkube.run.signals import StopRequested
from rlkube.rundir import layout
from rlkube.rundir.across_copies import mean_and_std
from rlkube.storage.ownership import Superseded

EXIT_USER_ERROR = 2


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std across copies of each copy's final numbers."""
    result: dict[str, Any] = {"copies": len(summaries)}
    for key in ("eval_mean_return", "best_eval_mean_return", "test_mean_return", "wall_seconds", "sps",
                "total_steps"):
        values = [s[key] for s in summaries if s.get(key) is not None]
        if values:
            mean, std = mean_and_std(values)
            result[key] = {"mean": mean, "std": std}
    return result


def limit_threads(threads: int) -> None:
    """Keep parallel copies from fighting over cores: TF would give each one every core."""
    import tensorflow as tf  # noqa: PLC0415  (imported here so the setting precedes any TF op)

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _copy_runner(hp: HParams, output_dir: Path, copy: CopyPlan, options: RunOptions, remote: str | None) -> Runner:
    """The runner of one copy, with its own seed and hparams, in its directory (mirroring its bucket's, if any)."""
    remote_dir = layout.copy_url(remote, copy.index) if remote is not None else None
    return Runner(copy_hparams(hp, copy), layout.copy_dir(output_dir, copy.index),
                  replace(options, seed=copy.seed, copy_index=copy.index, remote_dir=remote_dir))


def _run_copy(hp: HParams, output_dir: Path, copy: CopyPlan, options: RunOptions, threads: int | None,
              remote: str | None) -> int:
    """A child process's whole life: run one copy, turn the outcome into an exit code."""
    if threads is not None:
        limit_threads(threads)
    try:
        _copy_runner(hp, output_dir, copy, options, remote).run()
    except UserError as error:
        print(f"{options.log_prefix}error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Superseded as superseded:
        print(f"{options.log_prefix}stopped: {superseded}", file=sys.stderr)
        return SUPERSEDED_EXIT_CODE
    except StopRequested as stop:
        return 128 + stop.signum
    return 0


def _child(hp: HParams, output_dir: Path, copy: CopyPlan, options: RunOptions, threads: int,
           remote: str | None) -> None:
    sys.exit(_run_copy(hp, output_dir, copy, options, threads, remote))


def train_experiment(hp: HParams, output_dir: Path, copies: list[CopyPlan], options: RunOptions,
                     remote: str | None = None) -> dict[str, Any]:
    """Run every copy to the end and return the summary across copies (also DIR/summary.json).

    Raises StopRequested when a signal stopped the copies (after each wrote a checkpoint).
    """
    name = layout.summary_file(options.training)
    if len(copies) == 1:
        summaries = [_copy_runner(hp, output_dir, copies[0], options, remote).run()]
    else:
        _run_parallel(hp, output_dir, copies, options, remote)
        summaries = [json.loads((layout.copy_dir(output_dir, copy.index) / name).read_text()) for copy in copies]
    result = {**aggregate(summaries), "per_copy": summaries}
    layout.write_atomically(output_dir / name, json.dumps(result, indent=2) + "\n")
    return result


def train_copy(hp: HParams, output_dir: Path, copy: CopyPlan, options: RunOptions,
               remote: str | None = None) -> dict[str, Any]:
    """Run one copy alone (one pod of an Indexed Job), in DIR/copy-<index>/."""
    summary = _copy_runner(hp, output_dir, copy, options, remote).run()
    return {**aggregate([summary]), "per_copy": [summary]}


def _run_parallel(hp: HParams, output_dir: Path, copies: list[CopyPlan], options: RunOptions,
                  remote: str | None) -> None:
    cores = os.cpu_count() or 1
    parallel = min(len(copies), cores)
    threads = max(1, cores // parallel)
    context = multiprocessing.get_context("spawn")
    pending = list(copies)
    running: dict[int, multiprocessing.Process] = {}
    codes: dict[int, int] = {}
    stop: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stop.append(signum)
        for process in running.values():
            if process.pid is not None:
                os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while pending or running:
            while pending and len(running) < parallel and not stop:
                copy = pending.pop(0)
                copy_options = replace(options, live_progress=False, log_prefix=f"{layout.copy_name(copy.index)} | ")
                process = context.Process(target=_child, args=(hp, output_dir, copy, copy_options, threads, remote))
                process.start()
                running[copy.index] = process
            for index, process in list(running.items()):
                if not process.is_alive():
                    process.join()
                    codes[index] = process.exitcode if process.exitcode is not None else 1
                    del running[index]
            if stop and not running:
                break
            time.sleep(0.05)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop:
        raise StopRequested(stop[0], -1)
    failed = {i: c for i, c in codes.items() if c != 0}
    if failed:
        if all(c == EXIT_USER_ERROR for c in failed.values()):
            raise UserError(f"copies {sorted(failed)} stopped on bad input (see their messages above)")
        if all(c == SUPERSEDED_EXIT_CODE for c in failed.values()):
            raise Superseded(f"copies {sorted(failed)} were taken over by newer writers (see their messages above)")
        raise RuntimeError(f"copies {sorted(failed)} failed with exit codes {sorted(set(failed.values()))}")
