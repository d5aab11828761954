"""The runner: one experiment copy, trained with the seed paper's loop and everything around it.

The loop itself is act, step, observe, update, in this process or fed by actor processes (rlkube.run.workers).
Around each step the runner calls on the rooms that own the rest: evaluation and the final test
(rlkube.run.evaluation), resume rules (rlkube.run.resume) with atomic checkpoints (rlkube.rundir.checkpoint) in a
directory this runner holds (rlkube.storage.ownership),
PBT boundaries (rlkube.run.pbt_member), stop signals (rlkube.run.signals), logs and --track
(rlkube.rundir.run_log, rlkube.run.tracking), the live progress (rlkube.run.progress) and the --render window.
"""

import hashlib
import json
import pickle
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlkube.errors import UserError
from rlkube.rl import devices
from rlkube.rl.agents import make_agent
from rlkube.rl.agents.compiled import one_thread_per_op
from rlkube.rl.envs import learning_next_obs, make_env, make_vector_env
from rlkube.rl.hparams import HParams, to_dict
from rlkube.rl.networks import Params
from rlkube.rl.schedules import multiples_between
from rlkube.run.evaluation import Evaluation, Kind
from rlkube.run.pbt_member import PBTMember, decided_hparams, exploit_record
from rlkube.run.progress import Progress
from rlkube.run.resume import check_same_hparams, check_same_seed, pickled_envs, record_hparams_changes
from rlkube.run.signals import StopRequested, StopSignals
from rlkube.run.tracking import Outcome, TrackingSettings, open_tracked_log
from rlkube.run.viewer import Viewer
from rlkube.run.workers import OFF_POLICY_CHUNK, ActorPool, Actors, ActorSpec
from rlkube.rundir import checkpoint, layout, pickles
from rlkube.rundir.hparams_record import hparams_record_text
from rlkube.rundir.progress_record import evaluation_line
from rlkube.rundir.run_log import RunLog
from rlkube.storage import ownership, sync

# Logs reach a remote run directory at least this often, besides every checkpoint and evaluation.
SYNC_INTERVAL_S = 60.0


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
    actors: str = "processes"  # --actors: what the workers are, processes or Ray actors (rlkube.run.ray_actors)
    tracking: TrackingSettings | None = None  # --track: MLflow or W&B too (rlkube.run.tracking)
    pbt_interval: int | None = None  # --pbt-interval: wait at every multiple for the PBT controller's decision
    test_policy: str = "best"  # --test-policy: the final test runs the best evaluation's weights, or the last
    allow_pickle: bool = False  # --allow-pickle: --no-training may read a pickled policy (rlkube.rundir.pickles)
    experiment_id: str | None = None  # whose copy this is (rlkube.storage.ownership); None: a run trained by hand
    copy_index: int = 0


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

    def counters(self) -> dict[str, Any]:
        """What a test reports of the loop (the summary, the test's seeds), as JSON: a checkpoint's policy file
        keeps it, so that --no-training need not unpickle the state."""
        return {"step": self.step, "episodes": self.episodes, "evaluations": self.evaluations,
                "wall_seconds": self.wall_seconds, "last_eval": self.last_eval}

    @classmethod
    def from_counters(cls, counters: dict[str, Any]) -> "LoopState":
        last_eval = counters["last_eval"]
        return cls(**{**counters, "last_eval": tuple(last_eval) if last_eval is not None else None})


class Runner:
    def __init__(self, hp: HParams, copy_dir: Path, options: RunOptions) -> None:
        self.hp = hp
        self.copy_dir = copy_dir
        self.options = options
        # The copy's directory is this runner's from here on, where its writers meet (its bucket, if it has one); a
        # PBT member's controller writes there too. A bucket's newest complete checkpoint comes down first. A local
        # directory that this rlkube cannot resume is refused before it is taken (checkpoint.latest says why).
        if not options.remote_dir:
            checkpoint.latest(layout.checkpoints_dir(copy_dir))
        # The strategy comes before anything is written (a missing --device is refused here) and before TensorFlow's
        # runtime starts, which fixes its thread pool: one thread per op makes a small dense CPU learner ~20% faster
        # (see one_thread_per_op).
        strategy = devices.strategy_for(options.device, inline_ops=one_thread_per_op(hp))
        co_writers = (ownership.PBT_CONTROLLER,) if options.pbt_interval else ()
        self.writer = ownership.claim(options.remote_dir or copy_dir, options.experiment_id, options.copy_index,
                                      co_writers)
        if options.remote_dir:
            sync.pull_latest_checkpoint(options.remote_dir, copy_dir, self.writer.generation)
        self.pbt = PBTMember(copy_dir, options.remote_dir, options.pbt_interval) if options.pbt_interval else None
        if self.pbt:
            self.hp = hp = self.pbt.hparams_at_restart(hp)
        render_mode = "rgb_array" if options.render or options.record_video else None
        # Everything that can reject the user's input happens before anything is written.
        eval_env = make_env(hp.env, render_mode=render_mode)
        self.agent = make_agent(hp, eval_env.observation_space, eval_env.action_space, options.seed, strategy)
        self.evaluation = Evaluation(hp.env, eval_env, self.agent, copy_dir, options.seed, options.record_video)
        # With workers, the actors own the training environments.
        self.envs = make_vector_env(hp.env, hp.num_envs, hp.vector_mode) if not options.num_workers else None
        self.hparams_changes = check_same_hparams(copy_dir, hp)
        check_same_seed(copy_dir, options.seed)
        self.checkpoint_dir = layout.checkpoints_dir(copy_dir)
        self.state = LoopState()
        self.obs: Any = None
        self.stop = StopSignals()
        self.last_sync = time.monotonic()

    # -- the experiment -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train (or resume) to hp.train_steps, then test; or only test with --no-training."""
        latest = checkpoint.latest(self.checkpoint_dir)
        if not self.options.training and latest is None:
            raise UserError(f"--no-training needs a checkpoint, and {self.checkpoint_dir} has none; "
                            f"train first or point --output-dir at a trained run")
        self.copy_dir.mkdir(parents=True, exist_ok=True)
        self.progress = Progress(self.hp.train_steps, self.options.log_prefix, live=self.options.live_progress,
                                 copy_dir=self.copy_dir)
        if latest is None:
            restored = None
        elif self.options.training:
            restored = self._load(latest)
        else:
            restored = self._load_to_test(latest)
        exploit = exploit_record(self.copy_dir, restored["loop"].step) if restored else None
        if exploit:  # the checkpoint is another member's; the logs are this one's, as long as they were then
            restored["logs"] = exploit["logs"]
        self.log = self._open_log(restored)
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
            self.evaluation.close()
            if self.viewer:
                self.viewer.close()

    def _start(self) -> None:
        layout.write_atomically(self.copy_dir / layout.HPARAMS_FILE,
                                hparams_record_text(to_dict(self.hp), self.options.seed))
        self.log.hparams({**to_dict(self.hp), "seed": self.options.seed})
        if self.envs is not None:
            self.obs, _ = self.envs.reset(seed=self.options.seed)
        self.state.episode_returns = np.zeros(self.hp.num_envs)
        self.state.episode_lengths = np.zeros(self.hp.num_envs, np.int64)

    # -- the loop -------------------------------------------------------------------------------

    def _train(self) -> None:
        with self.stop.caught():
            self.last_log_time = time.perf_counter()
            self.started = time.perf_counter() - self.state.wall_seconds
            step = self.state.step
            if self._at_pbt_boundary(step - 1, step) and self.pbt.undecided(step):
                self._follow_pbt_decision(step)  # restarted while waiting there
            if self.options.num_workers:
                self._train_with_workers()
            else:
                self._train_in_process()

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
        """The same observe and update, fed by actors' rollouts (rlkube.run.workers)."""
        hp, state, agent = self.hp, self.state, self.agent
        if state.step >= hp.train_steps:
            return  # a finished run, rerun: its first rollout would learn nothing yet evaluate the last step again
        observation_space = self.evaluation.envs[0].observation_space
        spec = ActorSpec(hp.env, hp.num_envs, hp.vector_mode, observation_space.shape, observation_space.dtype,
                         agent.policy, agent.rollout_steps or OFF_POLICY_CHUNK, agent.pacing)
        pool = self._start_actors(spec)
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

    def _start_actors(self, spec: ActorSpec) -> Actors:
        # Actors restart with seeds of their own on resume: from the step, so that no two starts share one.
        seed, workers = self.options.seed + self.state.step, self.options.num_workers
        if self.options.actors == "ray":
            from rlkube.run.ray_actors import RayActorPool  # noqa: PLC0415  (Ray: only a run with --actors ray)

            return RayActorPool(spec, workers, seed, self.progress.message)
        return ActorPool(spec, workers, seed, self.progress.message)

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
            self._evaluate("eval", self.options.eval_episodes)
            self._sync()
        if multiples_between(before, state.step, hp.checkpoint_every) or finished or boundary:
            self._save()
        if self.stop.received is not None:
            self._save()
            raise StopRequested(self.stop.received, state.step)
        if boundary:
            self._follow_pbt_decision(state.step)
        self.progress.update(state.step, state.recent_returns[-1] if state.recent_returns else None, state.wall_seconds)


    def _mutable_hparams(self) -> dict[str, float]:
        """The values of the hparams a resume (or PBT) may change, as scalars: TensorBoard shows their schedule."""
        values = {name: getattr(self.hp, name) for name in sorted(self.hp.mutable_on_resume())}
        return {f"hparams/{name}": float(value) for name, value in values.items()
                if isinstance(value, int | float) and not isinstance(value, bool)}

    # -- evaluation and test (rlkube.run.evaluation) --------------------------------------------

    def _evaluate(self, kind: Kind, episodes: int) -> tuple[float, float] | None:
        """`episodes` greedy episodes with frozen weights on the separate evaluation env, logged."""
        if episodes <= 0:
            return None
        state = self.state
        returns, lengths, videos = self.evaluation.run(kind, episodes, state.step, state.evaluations, self.viewer)
        self._track_files(videos)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        if kind == "eval":
            state.evaluations += 1
            state.last_eval = (mean, std)
            self.log.metrics({"step": state.step, "wall_seconds": round(state.wall_seconds, 3),
                              "mean_return": mean, "std_return": std})
            self.evaluation.keep_if_best(state.step, mean, std)
        self.log.scalars(state.step, {f"{kind}/mean_return": mean, f"{kind}/std_return": std,
                                      f"{kind}/mean_length": float(np.mean(lengths))})
        self.progress.message(evaluation_line(kind, state.step, mean, std))
        return mean, std

    def _test(self) -> tuple[float, float] | None:
        """The final test: of the best evaluation's policy, unless --test-policy last or no evaluation kept one."""
        best = self.evaluation.best
        self.tested_policy = "best" if self.options.test_policy == "best" and best else "last"
        if self.tested_policy != self.options.test_policy and self.options.test_episodes:
            self.progress.message("no evaluation has kept a best policy (no evaluation ran); testing the last")
        if self.tested_policy == "last":
            return self._evaluate("test", self.options.test_episodes)
        self.progress.message(f"testing the best policy: evaluated {best['mean_return']:.2f} at step {best['step']}")
        with self.evaluation.acting_with_best():
            return self._evaluate("test", self.options.test_episodes)

    def _summarise(self, test: tuple[float, float] | None) -> dict[str, Any]:
        state, best = self.state, self.evaluation.best
        summary = {
            "hparams": self.hp.__class__.__name__, "env": self.hp.env, "seed": self.options.seed,
            "total_steps": state.step, "episodes": state.episodes,
            "wall_seconds": round(state.wall_seconds, 3),
            "sps": round(state.step / state.wall_seconds, 1) if state.wall_seconds else None,
            "eval_mean_return": state.last_eval[0] if state.last_eval else None,
            "eval_std_return": state.last_eval[1] if state.last_eval else None,
            "best_eval_mean_return": best["mean_return"] if best else None,
            "best_eval_std_return": best["std_return"] if best else None,
            "best_eval_step": best["step"] if best else None,
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

    # -- PBT boundaries (rlkube.run.pbt_member) ---------------------------------------------------

    def _at_pbt_boundary(self, before: int, after: int) -> bool:
        return self.pbt is not None and self.pbt.at_boundary(before, after, self.hp.train_steps)

    def _follow_pbt_decision(self, step: int) -> None:
        """At a PBT boundary, evaluated and checkpointed: wait for the controller's decision, then go on with it.
        An exploited member takes the checkpoint the controller put in place of its own (the donor's), the new
        hparams and its own random streams, exactly as it would after a restart there."""
        decision = self.pbt.wait_for_decision(step, self.stop, self.progress)
        if decision["exploit"] is None:
            return
        donor_checkpoint = self.pbt.donor_checkpoint(step, self.writer.generation)
        hp = decided_hparams(self.hp, decision)
        self.hparams_changes = check_same_hparams(self.copy_dir, hp)
        self.hp = hp
        self._restore(self._load(donor_checkpoint))
        self._take_own_random_streams(exploit_record(self.copy_dir, step))

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

    # -- checkpoints (rlkube.run.resume) --------------------------------------------------------

    def _save(self) -> None:
        self.writer.check()
        logs = self.log.lengths()
        checkpoint.save(self.checkpoint_dir, self.state.step, {
            "agent": self.agent.state_dict(),
            "loop": self.state,
            "obs": self.obs,
            "envs": pickled_envs(self.envs),
            "logs": logs,
            "best": self.evaluation.best,
        }, checkpoint.Policies(self.agent.policy.params, {"loop": self.state.counters(), "logs": logs},
                               self.evaluation.best), self.writer.generation)
        self._sync()

    def _load(self, path: Path) -> dict[str, Any]:
        """The checkpoint at `path` as this rlkube saves it: one of format 1 gets its agent state upgraded. It is
        unpickled only while this runner holds the copy's directory: a pickle runs code as it loads."""
        self.writer.check()
        saved = checkpoint.load(path)
        if layout.checkpoint_format(path) == 1:
            saved["agent"] = self.agent.upgrade_state(saved["agent"])
        return saved

    def _load_to_test(self, path: Path) -> dict[str, Any]:
        """What --no-training needs of the checkpoint at `path`: its acting and best params with the loop's counters,
        read from its array files (format 4 on). An older checkpoint holds them only in its pickled state, which is
        read as rlkube.rundir.pickles allows (a run directory this writer owns, or --allow-pickle)."""
        if checkpoint.policies_pickled(path):
            if notice := pickles.pickle_notice(path / layout.STATE_FILE, self.options.allow_pickle,
                                               owned=self.writer.inherited):
                self.progress.message(notice)
            return self._load(path)
        policies = checkpoint.load_policies(path)
        own = self.agent.policy.params
        best = None if policies.best is None else {**policies.best,
                                                    "params": _params_like(own, policies.best["params"], path)}
        return {"acting": _params_like(own, policies.params, path), "best": best,
                "loop": LoopState.from_counters(policies.metadata["loop"]), "logs": policies.metadata["logs"]}

    def _restore(self, saved: dict[str, Any]) -> None:
        only_to_test = "acting" in saved  # --no-training from the checkpoint's array files (_load_to_test)
        if only_to_test:
            self.agent.policy.params = saved["acting"]
        else:
            self.agent.load_state_dict(saved["agent"])
            # The checkpoint holds the saved run's values of the hparams a resume may change (Adam's learning rate).
            self.agent.set_hparams(self.hp)
        self.state = saved["loop"]
        self.evaluation.restore_best(saved.get("best"))
        if self.hparams_changes:
            self.progress.message(record_hparams_changes(self.copy_dir, self.hp, self.hparams_changes,
                                                         self.state.step))
        if only_to_test:
            return  # a test runs on the evaluation envs alone
        self.obs = saved["obs"]
        if self.envs is None:
            return  # the actors start new episodes
        if saved["envs"] is not None:
            self.envs.close()
            self.envs = pickle.loads(saved["envs"])
        else:
            # Async envs live in their processes, envpool's in C++, and neither can be saved: the resumed run starts
            # new episodes.
            self.obs, _ = self.envs.reset(seed=self.options.seed + self.state.step)
            self.state.episode_returns[:] = 0.0
            self.state.episode_lengths[:] = 0

    # -- logs, --track and the bucket -----------------------------------------------------------

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

    def _sync(self) -> None:
        """Mirror the copy's directory to its bucket; only complete checkpoints become visible there."""
        if self.options.remote_dir:
            self.log.lengths()  # flushes the event file
            sync.sync_up(self.copy_dir, self.options.remote_dir, self.writer)
            self.last_sync = time.monotonic()


def _params_like(own: Params, loaded: Params, source: Path) -> Params:
    """`loaded`, read from `source`, in the order of the agent's `own` params (which actor processes and optimizers
    take them in), if it has their names, shapes and dtypes; one line otherwise."""

    def like(mine: Any, theirs: Any, name: str) -> Any:
        if isinstance(mine, dict) and isinstance(theirs, dict) and mine.keys() == theirs.keys():
            return {key: like(value, theirs[key], f"{name}/{key}") for key, value in mine.items()}
        if not isinstance(mine, dict) and not isinstance(theirs, dict) and (
                np.shape(mine), np.asarray(mine).dtype) == (theirs.shape, theirs.dtype):
            return theirs
        raise UserError(f"{source} holds a policy that does not fit this run's network (at {name or 'its top'}); "
                        f"test it with the hparams it was trained with")

    return like(own, loaded, "")
