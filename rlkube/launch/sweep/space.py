"""A sweep's search space: hparam names mapped to distributions, checked against the set's typed hparams.

A space file is YAML, one hparam a key:
    lr: {log_uniform: [1e-5, 1e-2]}
    batch_size: {choice: [32, 64, 128]}
    gamma: {uniform: [0.9, 0.9999]}
    n_steps: {int: [16, 256], log: true}
    hidden_sizes: {choice: [[64, 64], [256, 256]]}

Every mistake is found before anything is submitted, each reported on its own line. Without a file, each agent's
hparams type has a default space (its `sweep_space`), as rl-baselines3-zoo's samplers do. Each hparam's type, range
and choices are the hparams' own answer (HParams.domain). Pure: Optuna's distributions are made in study.py.
"""

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkube.errors import UserError, UserErrors, unknown_name
from rlkube.rl.hparams import Domain, HParams
from rlkube.rl.hparams.base import validate
from rlkube.run.options import override_text, read_yaml

KINDS = ("uniform", "log_uniform", "int", "choice")
# What identifies a run or its budget is the sweep's, not a trial's: --hparams, --env and --train-steps.
NOT_SEARCHABLE = ("agent", "env", "train_steps")


@dataclass(frozen=True)
class Dimension:
    """One searched hparam: a float range (uniform or log), an int range, or a choice among values."""

    name: str
    kind: str  # one of KINDS
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()  # override texts for tuple-valued hparams ("64;64"), plain values otherwise


SearchSpace = dict[str, Dimension]


def overrides_of(params: dict[str, Any]) -> str:
    """A trial's params as one `--hparam-override` string."""
    return ",".join(f"{name}={override_text(value)}" for name, value in sorted(params.items()))


def _number(value: Any) -> bool:
    """A finite int or float: NaN compares false with every bound, so it would pass every range check."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_number(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads 1e-5 as a string, since it wants a dot (1.0e-5); take it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _dimension(name: str, entry: Any, hp: HParams) -> Dimension:
    """One entry of a space file, checked against the hparam's type, range and choices."""
    domains = hp.domains()
    if name not in domains:
        raise unknown_name(f"{type(hp).__name__} hparam", name, [n for n in domains if n not in NOT_SEARCHABLE])
    if name in NOT_SEARCHABLE:
        raise UserError(f"'{name}' is fixed for the whole sweep (use --hparams, --env or --train-steps), not searched")
    kinds = [k for k in KINDS if isinstance(entry, dict) and k in entry]
    extra = set(entry) - {*KINDS, "log"} if isinstance(entry, dict) else set()
    if len(kinds) != 1 or extra:
        raise UserError(f"'{name}': write one of {{uniform: [lo, hi]}}, {{log_uniform: [lo, hi]}}, "
                        f"{{int: [lo, hi], log: true|false}} or {{choice: [a, b, ...]}}")
    kind, bounds = kinds[0], entry[kinds[0]]
    if kind != "choice" and isinstance(bounds, list):
        bounds = [_as_number(bound) for bound in bounds]
    domain = domains[name]
    if kind == "choice":
        return _choice(domain, bounds, hp)
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds)):
        raise UserError(f"'{name}': {kind} takes two finite numbers [low, high], got {bounds!r}")
    low, high = bounds
    if domain.sequence or domain.type not in (int, float) or (domain.type is int and kind != "int"):
        want = "int or choice" if domain.type is int and not domain.sequence else "choice"
        raise UserError(f"'{name}' is {'tuple' if domain.sequence else domain.type.__name__}, so it takes {want}, "
                        f"not {kind}")
    if kind == "int" and not all(float(b).is_integer() for b in bounds):
        raise UserError(f"'{name}': int takes whole numbers, got {bounds!r}")
    if low >= high:
        raise UserError(f"'{name}': low must be below high, got [{low}, {high}]")
    log = kind == "log_uniform" or bool(entry.get("log", False))
    if log and low <= 0:
        raise UserError(f"'{name}': a log scale needs low > 0, got {low}")
    if domain.clamp(low) != low or domain.clamp(high) != high:
        raise UserError(f"'{name}': [{low}, {high}] leaves its allowed range {domain.range_text}")
    if kind == "int":
        return Dimension(name, kind, int(low), int(high), log)
    return Dimension(name, "uniform", float(low), float(high), log)


def _choice(domain: Domain, values: Any, hp: HParams) -> Dimension:
    name = domain.name
    if not isinstance(values, list) or not values:
        raise UserError(f"'{name}': choice takes a non-empty list, got {values!r}")
    texts = []
    for value in values:
        text = override_text(value)
        try:  # parsed and checked exactly as an override would be
            validate(dataclasses.replace(hp, **{name: domain.parse(text)}))
        except UserError as error:
            raise UserError(f"'{name}': choice {value!r}: {error}") from None
        texts.append(text)
    if len(set(texts)) != len(texts):
        raise UserError(f"'{name}': choice lists a value twice: {values!r}")
    return Dimension(name, "choice", choices=tuple(texts if domain.sequence else (
        domain.parse(text) for text in texts)))


def check_space(raw: Any, hp: HParams, source: str) -> SearchSpace:
    """Every dimension checked; all the mistakes at once, one line each, naming `source`."""
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{source}: write a mapping of hparam names to distributions, e.g. "
                        f"lr: {{log_uniform: [1e-5, 1e-2]}}")
    space, mistakes = {}, []
    for name, entry in raw.items():
        try:
            space[str(name)] = _dimension(str(name), entry, hp)
        except UserError as error:
            mistakes.append(f"{source}: {error}")
    if mistakes:
        raise UserErrors(mistakes)
    return space


def read_space(path: Path, hp: HParams) -> SearchSpace:
    shape = "write hparam names mapped to distributions, e.g. lr: {log_uniform: [1e-5, 1e-2]}"
    return check_space(read_yaml(path, "--space", shape), hp, f"--space {path}")


def default_space(hp: HParams) -> SearchSpace:
    """The space of `hp`'s type (its sweep_space), checked as a file's is; a UserError if its type has none."""
    if not type(hp).sweep_space:
        raise UserError(f"{type(hp).__name__} ({hp.agent}) has no default search space: give one with --space FILE, "
                        f"e.g. lr: {{log_uniform: [1e-5, 1e-2]}}")
    return check_space(type(hp).sweep_space, hp, f"the default {hp.agent} space")


def space_to_yaml(space: SearchSpace) -> dict[str, Any]:
    """A space as its file would write it (kept in the sweep's record)."""
    out: dict[str, Any] = {}
    for dim in space.values():
        if dim.kind == "choice":
            out[dim.name] = {"choice": list(dim.choices)}
        elif dim.kind == "int":
            out[dim.name] = {"int": [dim.low, dim.high], "log": dim.log}
        else:
            out[dim.name] = {"log_uniform" if dim.log else "uniform": [dim.low, dim.high]}
    return out


def grid_size(space: SearchSpace) -> int:
    """How many points a grid over the space has; only choices and int ranges form a grid."""
    sizes = [len(d.choices) if d.kind == "choice" else int(d.high - d.low + 1) if d.kind == "int" else math.inf
             for d in space.values()]
    return math.prod(sizes) if all(s != math.inf for s in sizes) else 0
