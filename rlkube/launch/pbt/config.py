"""What a PBT run is (its config) and every decision it makes, from its seed alone: pure, numpy only.

Population-based training (Jaderberg et al. 2017), synchronous: every member trains to the next boundary (a
multiple of --interval); the members are ranked by their recent evaluations; each member in the bottom quantile
copies a member of the top quantile whole (exploit) and then perturbs or resamples the hparams it mutates
(explore). Every random draw here comes from a generator seeded by (the run's seed, the generation), so the same
seed makes the same decisions, whichever process makes them and however often it is restarted.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlkube.errors import UserError
from rlkube.launch.spec import MAX_NAME_LENGTH, check_name
from rlkube.launch.sweep.config import OBJECTIVE, copy_value
from rlkube.launch.sweep.space import Dimension, SearchSpace, check_space
from rlkube.rl.hparams import Domain, HParams
from rlkube.run.options import MAX_COPIES, TrainOptions

DEFAULT_METRIC = "last:2"
Limits = dict[str, Domain]  # each mutated hparam's own domain, which a perturbed value is kept within
# The stream of generation g's decisions is (seed, g + 1); (seed, 0) draws the initial population.
INITIAL_STREAM = 0


@dataclass(frozen=True)
class PBTConfig:
    name: str
    cluster: str
    train: TrainOptions  # the base of every member: the set, --train-steps, --seed (member i's seed is seed+i)
    mutations: dict[str, Any]  # the mutated hparams' distributions, as a space file writes them
    population: int
    interval: int
    quantile: float = 0.25
    resample_prob: float = 0.25
    perturb: tuple[float, float] = (0.8, 1.2)
    ready_after: int = 0  # no member is exploited before this step
    metric: str = DEFAULT_METRIC  # a member's score: final, best or last:N of its evaluations so far
    retries: int = 2  # times a generation is resubmitted after a member failed (each resumes from its checkpoint)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PBTConfig":
        """Read a run's config back, also one an older rlkube wrote: settings since removed are dropped (a run
        started before `poll_seconds` became the target's own resumes)."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{**{key: value for key, value in data.items() if key in known},
                      "train": TrainOptions(**data["train"]), "perturb": tuple(data["perturb"])})

    @property
    def seed(self) -> int:
        return self.train.seed

    def boundaries(self, train_steps: int) -> list[int]:
        """Where each generation ends: every multiple of the interval, then the end of training."""
        return [*range(self.interval, train_steps, self.interval), train_steps]


@dataclass(frozen=True)
class Exploit:
    """One member copying another at a generation's boundary, and the hparams it explores to."""

    generation: int
    step: int
    member: int
    donor: int
    score: float
    donor_score: float
    old: dict[str, Any]
    new: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def member_seed(config: PBTConfig, member: int) -> int:
    return config.seed + member


def stream_seed(config: PBTConfig, member: int, generation: int) -> int:
    """The seed of a member's own random streams after it exploited at `generation` (rlkube.run.runner reseeds the
    agent and its envs from it): drawn from (the member's seed, the generation), so a replay gets the same."""
    return int(np.random.SeedSequence([member_seed(config, member), generation]).generate_state(1)[0])


def parse_mutation(text: str) -> tuple[str, dict[str, Any]]:
    """`--mutate lr=log_uniform:1e-5:1e-2`, `gamma=choice:0.98,0.99`, `n=int:1:8` as a space file's entry."""
    name, _, distribution = text.partition("=")
    kind, _, args = distribution.partition(":")
    shapes = {"uniform": 2, "log_uniform": 2, "int": 2}
    parts = args.split(":") if kind in shapes else args.split(",")
    if not name or not args or (kind in shapes and len(parts) != shapes[kind]) or (
            kind not in shapes and kind != "choice"):
        raise UserError(f"bad --mutate '{text}': write NAME=log_uniform:LOW:HIGH, NAME=uniform:LOW:HIGH, "
                        f"NAME=int:LOW:HIGH or NAME=choice:A,B,C (e.g. lr=log_uniform:1e-5:1e-2)")
    if kind == "choice":
        return name, {"choice": [_number_or_text(p) for p in parts]}
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"bad --mutate '{text}': {kind} takes two numbers, LOW:HIGH") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"bad --mutate '{text}': {kind} takes two finite numbers, LOW:HIGH")
    return name, {kind: [low, high]}


def _number_or_text(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def check_mutations(raw: dict[str, Any], hp: HParams, source: str) -> SearchSpace:
    """The distributions checked as a sweep's space is, and each hparam one its agent can change mid-run."""
    mutable = hp.mutable_on_resume()
    fixed = [name for name in raw if name not in mutable]
    if fixed:
        raise UserError(f"{source}: {', '.join(fixed)} cannot change mid-run, so PBT cannot mutate "
                        f"{'it' if len(fixed) == 1 else 'them'}; {hp.agent} can mutate {', '.join(sorted(mutable))}")
    return check_space(raw, hp, source)


def check_pbt_flags(name: str, population: int, interval: int, quantile: float, resample_prob: float,
                    perturb: tuple[float, float], metric: str, hp: HParams, num_workers: int) -> None:
    """The flags' own mistakes, each one line, before anything is started."""
    check_name(name)
    if num_workers:
        raise UserError("PBT members act in their own process: leave out --num-workers")
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(f"PBT name '{name}' is too long: use at most {MAX_NAME_LENGTH} characters")
    if not 2 <= population <= MAX_COPIES:  # the members are one experiment's copies
        raise UserError(f"--population must be at least 2 (members exploit each other) and at most {MAX_COPIES}, "
                        f"got {population}")
    if interval < 1:
        raise UserError(f"--interval must be at least 1 step, got {interval}")
    if not 0 < quantile <= 0.5:
        raise UserError(f"--quantile must be in (0, 0.5] (the bottom and top quantiles must not overlap), "
                        f"got {quantile}")
    if int(population * quantile) < 1:
        raise UserError(f"--quantile {quantile} of --population {population} is no member: use a population of at "
                        f"least {math.ceil(1 / quantile)} or a larger quantile")
    if not 0 <= resample_prob <= 1:
        raise UserError(f"--resample-prob must be in [0, 1], got {resample_prob}")
    if len(perturb) != 2 or not all(math.isfinite(factor) and factor > 0 for factor in perturb):
        raise UserError(f"--perturb takes two positive factors, e.g. 0.8,1.2, got {perturb}")
    if not OBJECTIVE.fullmatch(metric):
        raise UserError(f"bad --metric '{metric}'; use final, best, or last:N (the mean of the last N evaluations)")
    if interval % hp.eval_every:
        raise UserError(f"--interval {interval} must be a multiple of the set's eval_every ({hp.eval_every}), so "
                        f"that every boundary is an evaluation; e.g. --interval {hp.eval_every * 5}")
    if interval % hp.num_envs:
        raise UserError(f"--interval {interval} must be a multiple of num_envs ({hp.num_envs})")
    if interval >= hp.train_steps:
        raise UserError(f"--interval {interval} leaves one generation of train_steps {hp.train_steps}; use a "
                        f"smaller interval or more --train-steps")


def _sample(dimension: Dimension, rng: np.random.Generator) -> Any:
    if dimension.kind == "choice":
        return dimension.choices[int(rng.integers(len(dimension.choices)))]
    low, high = float(dimension.low), float(dimension.high)
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if dimension.log else rng.uniform(low, high)
    return _kept(dimension, value)


def _explore(dimension: Dimension, value: Any, config: PBTConfig, limits: Limits,
             rng: np.random.Generator) -> Any:
    """Resample with the resample probability; else a choice moves to a neighbour and a number is multiplied by one
    of the perturb factors. A perturbed number may leave the range it was first drawn from (that is how PBT escapes
    a poor one), but not the range the hparam itself allows."""
    if rng.random() < config.resample_prob:
        return _sample(dimension, rng)
    if dimension.kind == "choice":
        index = dimension.choices.index(value)
        neighbours = [i for i in (index - 1, index + 1) if 0 <= i < len(dimension.choices)]
        return dimension.choices[neighbours[int(rng.integers(len(neighbours)))]]
    return _kept(dimension, limits[dimension.name].clamp(value * config.perturb[int(rng.integers(2))]))


def _kept(dimension: Dimension, value: float) -> int | float:
    """An int range's value rounded; a float to 4 significant digits, which reads well in overrides and logs and
    is finer than any perturb step."""
    return round(float(value)) if dimension.kind == "int" else float(f"{value:.4g}")


def hparam_limits(hp: HParams, space: SearchSpace) -> Limits:
    """Each mutated hparam's own domain: the range a perturbed value is kept within."""
    return {name: hp.domain(name) for name in space}


def initial_params(config: PBTConfig, space: SearchSpace) -> list[dict[str, Any]]:
    """Every member's starting hparams, drawn from the distributions."""
    rng = np.random.default_rng([config.seed, INITIAL_STREAM])
    return [{name: _sample(space[name], rng) for name in sorted(space)} for _ in range(config.population)]


def scores(evaluations: dict[int, list[dict[str, float]]], config: PBTConfig, step: int) -> list[float | None]:
    """Each member's score from its evaluations up to `step` (None: it has none yet)."""
    return [copy_value([e for e in evaluations.get(member, []) if e["step"] <= step], config.metric)
            for member in range(config.population)]


def decide(config: PBTConfig, space: SearchSpace, limits: Limits, generation: int, step: int,
           member_scores: list[float | None], params: list[dict[str, Any]]) -> list[Exploit]:
    """Generation `generation`'s exploits at `step`: the bottom quantile copies the top (ties go to the lower
    member number), each receiver drawing its donor and its new hparams from the generation's stream."""
    if step < config.ready_after:
        return []
    if None in member_scores:
        missing = [member for member, score in enumerate(member_scores) if score is None]
        raise UserError(f"members {missing} have no evaluation by step {step}; PBT ranks members by them")
    rng = np.random.default_rng([config.seed, generation + 1])
    ranked = sorted(range(config.population), key=lambda member: (member_scores[member], member))
    count = int(config.population * config.quantile)
    bottom, top = sorted(ranked[:count]), ranked[-count:]
    exploits = []
    for member in bottom:
        donor = top[int(rng.integers(count))]
        new = {name: _explore(space[name], params[donor][name], config, limits, rng) for name in sorted(space)}
        exploits.append(Exploit(generation, step, member, donor, member_scores[member], member_scores[donor],
                                params[member], new))
    return exploits
