"""The runner: one experiment copy, trained with the seed paper's loop and everything around it.

The loop itself is act, step, observe, update. Around it the runner owns evaluation, testing,
TensorBoard and metrics.jsonl, atomic checkpoints with exact resume (on a period and on SIGTERM or
SIGINT), rendering and video.
"""

import hashlib
import json
import os
import pickle
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from rlkube.errors import UserError
from rlkube.rl import devices
from rlkube.rl.agents import Agent, make_agent
from rlkube.rl.agents.compiled import one_thread_per_op
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import HParams, apply_overrides, changed_hparams, from_dict, to_dict
from rlkube.rl.schedules import multiples_between
from rlkube.run.options import override_text
from rlkube.run.progress import Progress
from rlkube.run.tracking import Outcome, TrackingSettings, open_tracked_log
from rlkube.run.video import write_episode
from rlkube.run.viewer import Viewer
from rlkube.run.workers import OFF_POLICY_CHUNK, ActorPool
from rlkube.rundir import checkpoint, layout
from rlkube.rundir.across_copies import mean_and_std
from rlkube.rundir.hparams_record import hparams_record_text
from rlkube.rundir.progress_record import evaluation_line
from rlkube.rundir.run_log import RunLog
from rlkube.storage import sync
from rlkube.storage.pbt_decisions import latest_decision, read_decision

# Logs reach a remote run directory at least this often, besides every checkpoint and evaluation.
SYNC_INTERVAL_S = 60.0
# Evaluation and test episodes draw env seeds from their own ranges, apart from training's.
EVAL_SEED_OFFSET = 1_000_000
TEST_SEED_OFFSET = 2_000_000
# How often a PBT member waiting at a boundary looks for the controller's decision: in its own directory (a file
# to stat), or in its bucket (a request). Every member waits for the slowest, then for this.
PBT_POLL_S = 0.05
PBT_BUCKET_POLL_S = 0.2


@dataclass
class RunOptions:
    seed: int = 0
    eval_episodes: int = 10
    test_episodes: int = 10
    training: bool = True
    render: bool = False
    record_video: bool = False
    live_progress: bool | None = None
    log_prefix: str = ""
    # The copy's directory in a bucket (gs://, s3://): the runner works in copy_dir and mirrors it there.
    remote_dir: str | None = None
    device: str = "auto"  # where the learner runs (rlkube.rl.devices)
    num_workers: int = 0  # actor processes (rlkube.run.workers); 0 acts in this process
    tracking: TrackingSettings | None = None  # --track: MLflow or W&B too (rlkube.run.tracking)
    pbt_interval: int | None = None  # --pbt-interval: wait at every multiple for the PBT controller's decision
    test_policy: str = "best"  # --test-policy: the final test runs the best evaluation's weights, or the last


@dataclass
class LoopState:
    """The runner's own counters; with the agent's state and the env's, all a resume needs."""

    step: int = 0  # environment steps, summed over the vector's environments
    episodes: int = 0
    episode_returns: np.ndarray | None = None  # per environment, for the episodes under way
    episode_lengths: np.ndarray | None = None
    evaluations: int = 0
    last_log_step: int = 0
    wall_seconds: float = 0.0
    recent_returns: deque = field(default_factory=lambda: deque(maxlen=20))
    last_eval: tuple[float, float] | None = None


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was written before this was raised."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum = signum
        self.step = step


def saved_record(copy_dir: Path) -> dict[str, Any] | None:
    """The copy's hparams.yaml (hparams, seed, changes), None before its first start: what a resume is checked
    against."""
    path = copy_dir / layout.HPARAMS_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


def check_same_hparams(copy_dir: Path, hp: HParams) -> dict[str, tuple[Any, Any]]:
    """A run directory holds one experiment: refuse to resume it with hparams its agent cannot change mid-run.

    Returns the changes it accepts, as (saved, new) by name: those in the saved set's mutable_on_resume(),
    which the runner applies once the checkpoint is restored.
    """
    record = saved_record(copy_dir)
    if record is None:
        return {}
    saved = from_dict(record["hparams"])
    changes = changed_hparams(saved, hp)
    # train_steps may grow: continuing a finished run for longer is a resume, not a new experiment.
    changes.pop("train_steps", None)
    mutable = saved.mutable_on_resume()
    if fixed := [key for key in changes if key not in mutable]:
        shown = ", ".join(f"{key}: {changes[key][0]} -> {changes[key][1]}" for key in fixed[:3])
        may_change = f" (a resume may change {', '.join(sorted(mutable))})" if mutable else ""
        raise UserError(f"{copy_dir} holds a run with other hparams ({shown}); "
                        f"use a new --output-dir or the same hparams to resume{may_change}")
    return changes


def check_same_seed(copy_dir: Path, seed: int) -> None:
    """A copy resumes only with the seed it started with: its RNGs in the checkpoint came from that seed."""
    record = saved_record(copy_dir)
    if record is not None and (saved := record["seed"]) != seed:
        raise UserError(f"{copy_dir} holds a run with seed {saved}, not {seed}; "
                        f"use a new --output-dir or the same seed to resume")


def _episodes(envs: list[gym.Env], agent: Agent, seeds: list[int], record: bool,
              viewer: Viewer | None) -> tuple[list[float], list[int], list[np.ndarray]]:
    """One greedy episode on each env from its seed, acting on all running ones as one batch.

    Greedy acting draws no randomness, so each episode is what it would be on its own. Frames are the first env's.
    """
    frames: list[np.ndarray] = []

    def frame() -> None:
        if record or viewer:
            image = envs[0].render()
            if record:
                frames.append(image)
            if viewer:
                viewer.show(image)

    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
    frame()
    returns, lengths = [0.0] * len(envs), [0] * len(envs)
    running = list(range(len(envs)))
    while running:
        actions, _ = agent.act(np.stack([obs[i] for i in running]), explore=False)
        still_running = []
        for i, action in zip(running, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += float(reward)
            lengths[i] += 1
            if i == 0:
                frame()
            if not (terminated or truncated):
                still_running.append(i)
        running = still_running
    return returns, lengths, frames


class Runner:
    def __init__(self, hp: HParams, copy_dir: Path, options: RunOptions) -> None:
        self.hp = hp
        self.copy_dir = copy_dir
        self.options = options
        if options.pbt_interval:
            self.hp = hp = self._with_pbt_decision(hp)
        render_mode = "rgb_array" if options.render or options.record_video else None
        # Everything that can reject the user's input happens before anything is written.
        eval_env = make_env(hp.env, render_mode=render_mode)
        self.eval_envs = [eval_env]  # the first renders; the rest are made when evaluation needs them
        # The strategy comes first: TensorFlow's thread pool is fixed once its runtime starts, and one thread
        # per op makes a small dense CPU learner ~20% faster (see one_thread_per_op).
        self.agent = make_agent(hp, eval_env.observation_space, eval_env.action_space, options.seed,
                                devices.strategy_for(options.device, inline_ops=one_thread_per_op(hp)))
        # With workers, the actors own the training environments.
        self.envs = make_vector_env(hp.env, hp.num_envs, hp.vector_mode) if not options.num_workers else None
        self.hparams_changes = check_same_hparams(copy_dir, hp)
        check_same_seed(copy_dir, options.seed)
        self.checkpoint_dir = layout.checkpoints_dir(copy_dir)
        self.state = LoopState()
        # The best evaluation so far: its step, mean_return, std_return, and the acting params it evaluated.
        self.best: dict[str, Any] | None = None
        self.obs: Any = None
        self.stop_signal: int | None = None
        self.last_sync = time.monotonic()

    # -- the experiment -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train (or resume) to hp.train_steps, then test; or only test with --no-training."""
        latest = checkpoint.latest(self.checkpoint_dir)
        if not self.options.training and latest is None:
            raise UserError(f"--no-training needs a checkpoint, and {self.checkpoint_dir} has none; "
                            f"train first or point --output-dir at a trained run")
        self.copy_dir.mkdir(parents=True, exist_ok=True)
        restored = checkpoint.load(latest) if latest else None
        exploit = self._exploit_at(restored["loop"].step) if restored else None
        if exploit:  # the checkpoint is another member's; the logs are this one's, as long as they were then
            restored["logs"] = exploit["logs"]
        self.log = self._open_log(restored)
        self.progress = Progress(self.hp.train_steps, self.options.log_prefix, live=self.options.live_progress,
                                 copy_dir=self.copy_dir)
        if self.tracker:
            self.progress.message(f"tracking: {self.tracker.where}")
        self.viewer = Viewer(f"rlkube: {self.hp.env} ({self.copy_dir.name})") if self.options.render else None
        outcome: Outcome = "failed"
        try:
            if restored:
                self._restore(restored)
                self.progress.message(f"resumed from {latest} at step {self.state.step}")
                if exploit:
                    self._take_own_random_streams(exploit)
            else:
                self._start()
            if self.options.training:
                self._train()
            test = self._test()
            summary = self._summarise(test)
            self._sync()
            best_file = self.copy_dir / layout.BEST_POLICY
            self._track_files([self.copy_dir / layout.summary_file(self.options.training),
                               *([best_file] if best_file.exists() else [])])
            outcome = "finished"
            return summary
        except StopRequested:
            outcome = "stopped"
            raise
        finally:
            self.progress.close()
            self.log.close()
            if self.tracker:
                self.tracker.finish(outcome)
            if self.envs is not None:
                self.envs.close()
            for env in self.eval_envs:
                env.close()
            if self.viewer:
                self.viewer.close()

    # -- PBT (rlkube.launch.pbt) --------------------------------------------------------------------

    def _with_pbt_decision(self, hp: HParams) -> HParams:
        """The hparams the newest PBT decision at or before this copy's checkpoint gave it (or `hp`, the ones it
        started with): a restarted member goes on with what an uninterrupted one would have."""
        latest = checkpoint.latest(layout.checkpoints_dir(self.copy_dir))
        if latest is None:
            return hp
        decision = latest_decision(self._decisions_location, layout.checkpoint_step(latest.name))
        return self._decided_hparams(hp, decision) if decision else hp

    @property
    def _decisions_location(self) -> str | Path:
        """Where the controller writes this member's decisions: its bucket directory, else its own."""
        return self.options.remote_dir or self.copy_dir

    @staticmethod
    def _decided_hparams(hp: HParams, decision: dict[str, Any]) -> HParams:
        return apply_overrides(hp, {name: override_text(value) for name, value in decision["hparams"].items()})

    def _at_pbt_boundary(self, before: int, after: int) -> bool:
        interval = self.options.pbt_interval
        return bool(interval) and 0 < after < self.hp.train_steps and multiples_between(before, after, interval) > 0

    def _follow_pbt_decision(self, step: int) -> None:
        """At a PBT boundary, evaluated and checkpointed: wait for the controller's decision, then go on with it.
        An exploited member takes the checkpoint the controller put in place of its own (the donor's), the new
        hparams and its own random streams, exactly as it would after a restart there."""
        self.progress.message(f"PBT: at step {step}, waiting for the controller's decision")
        while (decision := read_decision(self._decisions_location, step)) is None:
            if self.stop_signal is not None:
                raise StopRequested(self.stop_signal, step)
            time.sleep(PBT_BUCKET_POLL_S if self.options.remote_dir else PBT_POLL_S)
        if decision["exploit"] is None:
            return
        name = layout.checkpoint_name(step)
        if self.options.remote_dir:  # this copy's own checkpoint at the step would shadow the bucket's new one
            shutil.rmtree(self.checkpoint_dir / name, ignore_errors=True)
            sync.pull_latest_checkpoint(self.options.remote_dir, self.copy_dir)
        hp = self._decided_hparams(self.hp, decision)
        self.hparams_changes = check_same_hparams(self.copy_dir, hp)
        self.hp = hp
        self._restore(checkpoint.load(self.checkpoint_dir / name))
        self._take_own_random_streams(self._exploit_at(step))

    def _exploit_at(self, step: int) -> dict[str, Any] | None:
        """PBT's record that the checkpoint at `step` was copied here from another member (see
        rlkube.launch.pbt.exploit), or None. An older record (the member has checkpointed since) no longer applies."""
        path = self.copy_dir / layout.EXPLOIT_FILE
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        return record if record["step"] == step else None

    def _take_own_random_streams(self, exploit: dict[str, Any]) -> None:
        """After an exploit: every random stream (the agent's and the envs') from this member's seed for that
        generation, so that members sharing weights do not share their futures; new episodes start."""
        self.agent.reseed(exploit["seed"])
        if self.envs is not None:
            self.obs, _ = self.envs.reset(seed=exploit["seed"])
            self.state.episode_returns[:] = 0.0
            self.state.episode_lengths[:] = 0
        self.progress.message(f"PBT generation {exploit['generation']}: took copy-{exploit['donor']}'s state at step "
                              f"{exploit['step']}; own random streams from seed {exploit['seed']}")

    def _open_log(self, restored: dict[str, Any] | None) -> RunLog:
        """The copy's logs, rolled back to the restored checkpoint; with --track, they go to the tracker's run too
        (the same run on a resume)."""
        lengths = restored["logs"] if restored else None
        if self.options.tracking is None:
            self.tracker = None
            return RunLog(self.copy_dir, lengths)
        restored_step = restored["loop"].step if restored else None
        log = open_tracked_log(self.options.tracking, self.copy_dir, lengths, restored_step, self.options.seed,
                               self.options.remote_dir)
        self.tracker = log.tracker
        return log

    def _track_files(self, paths: list[Path]) -> None:
        """Upload files of the copy's directory to the tracker, if there is one (videos, the summary)."""
        for path in paths if self.tracker else []:
            self.tracker.log_artifact(path, self.copy_dir)

    def _start(self) -> None:
        layout.write_atomically(self.copy_dir / layout.HPARAMS_FILE,
                                hparams_record_text(to_dict(self.hp), self.options.seed))
        self.log.hparams({**to_dict(self.hp), "seed": self.options.seed})
        if self.envs is not None:
            self.obs, _ = self.envs.reset(seed=self.options.seed)
        self.state.episode_returns = np.zeros(self.hp.num_envs)
        self.state.episode_lengths = np.zeros(self.hp.num_envs, np.int64)

    def _train(self) -> None:
        previous_handlers = self._catch_stop_signals()
        self.last_log_time = time.perf_counter()
        self.started = time.perf_counter() - self.state.wall_seconds
        try:
            step = self.state.step
            if self._at_pbt_boundary(step - 1, step) and read_decision(self._decisions_location, step) is None:
                self._follow_pbt_decision(step)  # restarted while waiting there
            if self.options.num_workers:
                self._train_with_workers()
            else:
                self._train_in_process()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)

    def _train_in_process(self) -> None:
        hp, agent = self.hp, self.agent
        while self.state.step < hp.train_steps:
            state = self.state  # a PBT exploit replaces it at a boundary
            # The seed paper's loop: act, step, observe, update (here for a vector of environments).
            actions, extras = agent.act(self.obs)
            next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
            done = terminated | truncated
            agent.observe(self.obs, actions, rewards, learning_next_obs(next_obs, done, info), terminated,
                          truncated, extras)
            learned = agent.update()
            self.obs = next_obs

            state.episode_returns += rewards
            state.episode_lengths += 1
            ended = [(float(state.episode_returns[i]), int(state.episode_lengths[i])) for i in np.flatnonzero(done)]
            state.episode_returns[done], state.episode_lengths[done] = 0.0, 0
            self._after_steps(hp.num_envs, learned, ended)

    def _train_with_workers(self) -> None:
        """The same observe and update, fed by actor processes' rollouts (rlkube.run.workers)."""
        hp, state, agent = self.hp, self.state, self.agent
        if state.step >= hp.train_steps:
            return  # a finished run, rerun: its first rollout would learn nothing yet evaluate the last step again
        rollout_steps = agent.rollout_steps or OFF_POLICY_CHUNK
        observation_space = self.eval_envs[0].observation_space
        pool = ActorPool(hp.env, hp.num_envs, hp.vector_mode, observation_space.shape, observation_space.dtype,
                         agent.policy, self.options.num_workers, self.options.seed + state.step, rollout_steps,
                         agent.pacing, self.progress.message)
        try:
            for rollout in pool.rollouts_to_learn():
                steps = min(len(rollout), -(-(hp.train_steps - state.step) // hp.num_envs))
                learned: dict[str, float] = {}
                for t in range(steps):
                    agent.observe(*rollout.step(t), rollout.step_extras(t))
                    learned = agent.update() or learned
                pool.publish(agent.policy.params, agent.steps, bool(learned))
                ended = [(episode_return, length) for t, episode_return, length in rollout.episodes if t < steps]
                self._after_steps(steps * hp.num_envs, learned, ended)
                if state.step >= hp.train_steps:
                    break
        finally:
            pool.close()

    def _after_steps(self, count: int, learned: dict[str, float], ended: list[tuple[float, int]]) -> None:
        """Everything around learning once `count` more environment steps are in: logs, evaluation, checkpoints."""
        hp, state = self.hp, self.state
        before, state.step = state.step, state.step + count
        for episode_return, length in ended:
            state.episodes += 1
            state.recent_returns.append(episode_return)
            self.log.scalars(state.step, {"charts/episodic_return": episode_return, "charts/episodic_length": length})
        if learned and state.step - state.last_log_step >= hp.log_every:
            now = time.perf_counter()
            sps = (state.step - state.last_log_step) / max(now - self.last_log_time, 1e-9)
            self.log.scalars(state.step, {**learned, **self.agent.scalars(), **self._mutable_hparams(),
                                          "charts/SPS": sps})
            state.last_log_step, self.last_log_time = state.step, now
            if time.monotonic() - self.last_sync > SYNC_INTERVAL_S:
                self._sync()
        state.wall_seconds = time.perf_counter() - self.started
        finished = state.step >= hp.train_steps
        boundary = self._at_pbt_boundary(before, state.step)
        if multiples_between(before, state.step, hp.eval_every) or finished or boundary:
            self._evaluate("eval", self.options.eval_episodes, EVAL_SEED_OFFSET)
            self._sync()
        if multiples_between(before, state.step, hp.checkpoint_every) or finished or boundary:
            self._save()
        if self.stop_signal is not None:
            self._save()
            raise StopRequested(self.stop_signal, state.step)
        if boundary:
            self._follow_pbt_decision(state.step)
        self.progress.update(state.step, state.recent_returns[-1] if state.recent_returns else None, state.wall_seconds)

    def _mutable_hparams(self) -> dict[str, float]:
        """The values of the hparams a resume (or PBT) may change, as scalars: TensorBoard shows their schedule."""
        values = {name: getattr(self.hp, name) for name in sorted(self.hp.mutable_on_resume())}
        return {f"hparams/{name}": float(value) for name, value in values.items()
                if isinstance(value, int | float) and not isinstance(value, bool)}

    def _evaluate(self, kind: str, episodes: int, seed_offset: int) -> tuple[float, float] | None:
        """`episodes` greedy episodes with frozen weights on the separate evaluation env."""
        if episodes <= 0:
            return None
        state = self.state
        base = self.options.seed + seed_offset + state.evaluations * episodes
        # Episodes run side by side on copies of the evaluation env, except when someone watches (--render).
        batch = 1 if self.viewer else episodes
        while len(self.eval_envs) < batch:
            self.eval_envs.append(make_env(self.hp.env))
        returns, lengths = [], []
        for first in range(0, episodes, batch):
            count = min(batch, episodes - first)
            record = self.options.record_video and first == 0
            totals, steps, frames = _episodes(self.eval_envs[:count], self.agent,
                                              [base + index for index in range(first, first + count)], record,
                                              self.viewer)
            returns += totals
            lengths += steps
            if record:
                name = f"{kind}-step{state.step}" if kind == "eval" else "test"
                self._track_files(write_episode(frames, self.copy_dir / layout.VIDEOS / name))
        mean, std = float(np.mean(returns)), float(np.std(returns))
        if kind == "eval":
            state.evaluations += 1
            state.last_eval = (mean, std)
            self.log.metrics({"step": state.step, "wall_seconds": round(state.wall_seconds, 3),
                              "mean_return": mean, "std_return": std})
            self._keep_if_best(mean, std)
        self.log.scalars(state.step, {f"{kind}/mean_return": mean, f"{kind}/std_return": std,
                                      f"{kind}/mean_length": float(np.mean(lengths))})
        self.progress.message(evaluation_line(kind, state.step, mean, std))
        return mean, std

    def _test(self) -> tuple[float, float] | None:
        """The final test: of the best evaluation's policy, unless --test-policy last or no evaluation kept one."""
        self.tested_policy = "best" if self.options.test_policy == "best" and self.best else "last"
        if self.tested_policy != self.options.test_policy and self.options.test_episodes:
            self.progress.message("no evaluation has kept a best policy (no evaluation ran); testing the last")
        if self.tested_policy == "last":
            return self._evaluate("test", self.options.test_episodes, TEST_SEED_OFFSET)
        policy = self.agent.policy
        last_params, policy.params = policy.params, self.best["params"]
        self.progress.message(f"testing the best policy: evaluated {self.best['mean_return']:.2f} at step "
                              f"{self.best['step']}")
        try:
            return self._evaluate("test", self.options.test_episodes, TEST_SEED_OFFSET)
        finally:
            policy.params = last_params

    def _keep_if_best(self, mean: float, std: float) -> None:
        """Keep the policy that just evaluated if it is at least as good as the best so far (the first always is).
        Of equal evaluations the later wins: it has trained longer, and CartPole's often tie at the cap of 500
        (`make run`'s seed first evaluates 500 at 10k, a policy that tests at 467.5; its 500 at 50k tests at 500)."""
        if self.best is not None and mean < self.best["mean_return"]:
            return
        # Policies replace their params whole, never in place, so the reference stays this evaluation's.
        self.best = {"step": self.state.step, "mean_return": mean, "std_return": std,
                     "params": self.agent.policy.params}
        checkpoint.save_best(self.copy_dir, self.best)

    def _summarise(self, test: tuple[float, float] | None) -> dict[str, Any]:
        state = self.state
        summary = {
            "hparams": self.hp.__class__.__name__, "env": self.hp.env, "seed": self.options.seed,
            "total_steps": state.step, "episodes": state.episodes,
            "wall_seconds": round(state.wall_seconds, 3),
            "sps": round(state.step / state.wall_seconds, 1) if state.wall_seconds else None,
            "eval_mean_return": state.last_eval[0] if state.last_eval else None,
            "eval_std_return": state.last_eval[1] if state.last_eval else None,
            "best_eval_mean_return": self.best["mean_return"] if self.best else None,
            "best_eval_std_return": self.best["std_return"] if self.best else None,
            "best_eval_step": self.best["step"] if self.best else None,
            "test_mean_return": test[0] if test else None,
            "test_std_return": test[1] if test else None,
            "test_policy": self.tested_policy,  # which weights the test ran: "best" or "last"
        }
        if self.options.pbt_interval:
            # What `rlkube pbt replay` compares: the agent's whole state (weights, optimizer, memory, RNGs). Only for
            # PBT members: pickling a large replay memory once more costs memory and time no other run needs.
            state_bytes = pickle.dumps(self.agent.state_dict(), pickle.HIGHEST_PROTOCOL)
            summary["state_sha256"] = hashlib.sha256(state_bytes).hexdigest()
        name = layout.summary_file(self.options.training)
        layout.write_atomically(self.copy_dir / name, json.dumps(summary, indent=2) + "\n")
        return summary

    # -- checkpoints ----------------------------------------------------------------------------

    def _save(self) -> None:
        checkpoint.save(self.checkpoint_dir, self.state.step, {
            "agent": self.agent.state_dict(),
            "loop": self.state,
            "obs": self.obs,
            "envs": self._pickled_envs(),
            "logs": self.log.lengths(),
            "best": self.best,
        })
        self._sync()

    def _sync(self) -> None:
        """Mirror the copy's directory to its bucket; only complete checkpoints become visible there."""
        if self.options.remote_dir:
            self.log.lengths()  # flushes the event file
            sync.sync_up(self.copy_dir, self.options.remote_dir)
            self.last_sync = time.monotonic()

    def _restore(self, saved: dict[str, Any]) -> None:
        self.agent.load_state_dict(saved["agent"])
        # The checkpoint holds the saved run's values of the hparams a resume may change (Adam's learning rate).
        self.agent.set_hparams(self.hp)
        self.state = saved["loop"]
        # The checkpoint's best, not the file's: a kill after a new best but before its checkpoint left the file
        # ahead of the run it resumes. (A checkpoint from before best policies holds none.)
        self.best = saved.get("best")
        if self.best:
            checkpoint.save_best(self.copy_dir, self.best)
        else:
            (self.copy_dir / layout.BEST_POLICY).unlink(missing_ok=True)
        if self.hparams_changes:
            self._record_hparams_changes()
        self.obs = saved["obs"]
        if self.envs is None:
            return  # the actors start new episodes
        if saved["envs"] is not None:
            self.envs.close()
            self.envs = pickle.loads(saved["envs"])
        else:
            # Async envs live in their processes and cannot be saved: the resumed run starts new episodes.
            self.obs, _ = self.envs.reset(seed=self.options.seed + self.state.step)
            self.state.episode_returns[:] = 0.0
            self.state.episode_lengths[:] = 0

    def _record_hparams_changes(self) -> None:
        """hparams.yaml holds the hparams in force and, under `changes`, what each resume changed at which step."""
        record = saved_record(self.copy_dir)
        changes = {key: {"from": old, "to": new} for key, (old, new) in self.hparams_changes.items()}
        history = [*record.get("changes", []), {"step": self.state.step, **changes}]
        layout.write_atomically(self.copy_dir / layout.HPARAMS_FILE,
                                hparams_record_text(to_dict(self.hp), record["seed"], history))
        shown = ", ".join(f"{key}: {old} -> {new}" for key, (old, new) in self.hparams_changes.items())
        self.progress.message(f"hparams changed at step {self.state.step}: {shown}")

    def _pickled_envs(self) -> bytes | None:
        """The env state itself, so a resumed run continues mid-episode (sync vector envs only)."""
        if self.envs is None or isinstance(self.envs, gym.vector.AsyncVectorEnv):
            return None
        return pickle.dumps(self.envs)

    def _catch_stop_signals(self) -> dict[int, Any]:
        def request_stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signum

        return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}


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
