"""The hparams types, the registry of named sets, and override parsing.

A set is a frozen dataclass. Each field may carry a range or a choice list in its metadata, which
both the named sets and the user's overrides are checked against. `HParams.domain(name)` answers what
values a field may take, for everything that asks: overrides, sweeps, PBT and shell completion.
"""

import dataclasses
import decimal
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym

from rlkube.errors import UserError, unknown_name
from rlkube.rl.registry import Registry

# The precision of a learner's matmuls and convolutions (rlkube.rl.agents.compiled); acting always runs float32.
MATMUL_PRECISIONS = ("auto", "float32", "bfloat16")
CONVOLUTION_PRECISION_DOC = ("model=nature_cnn: the convolutions' precision when learning; auto: bfloat16 on a CPU "
                             "with bfloat16 dot products (AVX512-BF16 or AMX), else float32. Dense layers, losses "
                             "and the optimizer stay float32")


def param(default: Any, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] | None = None, doc: str = "") -> Any:
    """A dataclass field with an allowed range (inclusive) or a list of choices."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc})


@dataclass(frozen=True)
class Domain:
    """What values one hparam may take: its type, an inclusive range or a list of choices, and whether None is one.

    The one answer that overrides, validation, sweep spaces, PBT's mutations and shell completion all read. A
    tuple-valued hparam (hidden_sizes) has the range or choices of each item; its override text separates the
    items with ';' (64;64).
    """

    name: str
    type: type  # of the value, or of each item of a tuple: int, float, bool or str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False  # None is a value too (override text: none or null)
    sequence: bool = False  # a tuple of `type`
    doc: str = ""

    @property
    def range_text(self) -> str:
        """The allowed range as errors write it: [lo, hi], an open end as -inf or inf."""
        return f"[{self.lo if self.lo is not None else '-inf'}, {self.hi if self.hi is not None else 'inf'}]"

    def parse(self, text: str) -> Any:
        """An override's text as a value of this type (range and choices unchecked), or say what was expected."""
        if self.optional and text.lower() in ("none", "null"):
            return None
        if self.sequence:
            parts = [p for p in text.replace("[", "").replace("]", "").replace(" ", "").split(";") if p]
            return tuple(self._parse_one(part) for part in parts)
        return self._parse_one(text)

    def _parse_one(self, text: str) -> Any:
        try:
            if self.type is bool:
                lowered = text.lower()
                if lowered in ("true", "1", "yes", "on"):
                    return True
                if lowered in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if self.type is int:
                return _whole_number(text)
            if self.type is float:
                return float(text)
            if self.type is str:
                return text
        except ValueError:
            pass
        example = {int: "; a whole number, e.g. 64, 1e3 or 1.5e3", float: "; a finite number, e.g. 3e-4"}
        raise UserError(f"hparam '{self.name}' must be {self.type.__name__}, got '{text}'{example.get(self.type, '')}")

    def check(self, value: Any) -> None:
        """A UserError unless `value` (each item, for a tuple) is among the choices and within the range."""
        for item in value if isinstance(value, tuple) else (value,):
            if item is None or (isinstance(item, str) and self.choices is None):
                continue
            if isinstance(item, float) and not math.isfinite(item):
                raise UserError(f"hparam '{self.name}' must be a finite number, got {item}")
            if self.choices is not None and item not in self.choices:
                raise UserError(f"hparam '{self.name}' must be one of {', '.join(self.choices)}, got '{item}'")
            if (self.lo is not None and item < self.lo) or (self.hi is not None and item > self.hi):
                raise UserError(f"hparam '{self.name}' must be within {self.range_text}, got {item}")

    def clamp(self, number: float) -> float:
        """The allowed number nearest to `number`."""
        number = max(number, self.lo) if self.lo is not None else number
        return min(number, self.hi) if self.hi is not None else number

    def completions(self) -> tuple[str, ...]:
        """The override texts a shell offers: the choices, or a bool's two; none for a number or free text."""
        if self.choices is not None:
            return self.choices
        return ("true", "false") if self.type is bool else ()


# The largest whole number an hparam may be: the learners and environments read them as int64.
_INT64_END = 2**63


def _whole_number(text: str) -> int:
    """An int hparam's text, exactly: digits (1000) or e-notation whose value is whole (1e3, 1.5e3); never through a
    float, which would round 20-digit numbers and take 1e3 only by luck. A ValueError for anything else."""
    try:
        number = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ValueError(text) from None
    # adjusted() first: int() of 1e999999999 would build a billion digits.
    if not number.is_finite() or number.adjusted() > 18 or number != number.to_integral_value():
        raise ValueError(text)
    if not -_INT64_END <= number < _INT64_END:
        raise ValueError(text)
    return int(number)


# Hparams of the run loop, not of the agent: how often a run saves changes nothing that it learns, so every resume may
# change them (a long run's checkpoints made more frequent for nodes that are preempted more often). A resume records
# the change in hparams.yaml as it records an agent's mutable_on_resume() ones.
RUN_LOOP_MUTABLE = frozenset({"checkpoint_every"})


@dataclass(frozen=True)
class HParams:
    """What every agent shares: the environment, the budget, evaluation and checkpointing."""

    # The gymnasium action spaces this type's agents can drive (empty: undeclared, nothing is refused). Declared
    # with the hparams rather than the agents so that an env that does not fit is refused before TensorFlow loads
    # (rlkube.rl.envs.check_action_space).
    action_spaces: ClassVar[tuple[type[gym.Space], ...]] = ()
    # What each family of agents owns beside its fields (SB3 keeps an algorithm's defaults with the algorithm), so
    # that a new agent needs no entry in tables elsewhere:
    # - the sweep's search space when no --space file is given, written as a space file writes it
    #   (rlkube.launch.sweep.space); empty: the sweep asks for --space;
    # - overrides that make any of the family's sets learn within a few hundred steps on a small network, for
    #   tests and smoke runs, written as --hparam-override takes them; empty: the sets as they are.
    sweep_space: ClassVar[dict[str, dict[str, Any]]] = {}
    smoke_overrides: ClassVar[str] = ""

    agent: str = param("dqn", doc="agent registry name")
    env: str = param("CartPole-v1", doc="environment registry name")
    model: str = param("mlp", doc="network registry name")
    hidden_sizes: tuple[int, ...] = param((256, 256), lo=1, doc="widths of the hidden layers")
    lr: float = param(1e-3, lo=0.0, hi=1.0, doc="learning rate")
    gamma: float = param(0.99, lo=0.0, hi=1.0, doc="discount")
    batch_size: int = param(64, lo=1)
    max_grad_norm: float = param(10.0, lo=0.0, doc="global gradient-norm clip; 0 disables")
    num_envs: int = param(1, lo=1, doc="environments stepped together, with one batched forward pass")
    vector_mode: str = param("sync", choices=("sync", "async", "envpool"),
                             doc="async steps each env in its own process; envpool steps Atari in C++ threads")
    train_steps: int = param(50_000, lo=1, doc="environment steps to train for (summed over environments)")
    eval_every: int = param(5_000, lo=1, doc="environment steps between evaluations")
    checkpoint_every: int = param(10_000, lo=1, doc="environment steps between checkpoints")
    log_every: int = param(1_000, lo=1, doc="environment steps between scalar logs")
    target_return: float | None = param(None, doc="the published return this set should reach")

    def mutable_on_resume(self) -> frozenset[str]:
        """The hparams a resumed run may change (see Agent.set_hparams); each agent's set says which and why.

        Its learner reads them from variables or graph inputs, or acting reads them on every step, so the
        new values take effect without a retrace. Everything else is built into the agent: none by default.
        """
        return frozenset()

    @classmethod
    def domains(cls) -> Mapping[str, Domain]:
        """Every hparam's domain, by name, in the order the fields are declared."""
        return _domains(cls)

    @classmethod
    def domain(cls, name: str) -> Domain:
        """What values hparam `name` may take; a UserError naming the close matches if it has no such hparam."""
        domains = cls.domains()
        if name not in domains:
            raise unknown_name("hparam", name, domains)
        return domains[name]


def _domain(declared: dataclasses.Field, hint: Any) -> Domain:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    sequence = typing.get_origin(hint) is tuple
    meta = declared.metadata
    return Domain(declared.name, typing.get_args(hint)[0] if sequence else hint, meta.get("lo"), meta.get("hi"),
                  meta.get("choices"), optional, sequence, meta.get("doc", ""))


@functools.cache
def _domains(cls: type) -> Mapping[str, Domain]:
    hints = typing.get_type_hints(cls)
    return types.MappingProxyType({f.name: _domain(f, hints[f.name]) for f in dataclasses.fields(cls)})


def validate(hp: HParams) -> HParams:
    """Check every field against its declared range and choices."""
    for name, domain in hp.domains().items():
        domain.check(getattr(hp, name))
    return hp


def parse_overrides(text: str) -> dict[str, str]:
    """Split "lr=1e-3,batch_size=64" into raw key/value strings (tuples use ';': hidden_sizes=64;64)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"bad override '{item}'; write key=value, e.g. lr=1e-3,batch_size=64")
        if key.strip() in pairs:  # else the last would silently win
            raise UserError(f"override '{key.strip()}' is given twice ({key.strip()}={pairs[key.strip()]} and "
                            f"{item}); give each hparam once")
        pairs[key.strip()] = value.strip()
    return pairs


def _check_agent_fits(hp: HParams, agent: str) -> None:
    """A UserError unless `agent` is one that `hp`'s type declares: each agent reads its own type's fields.

    Without this, the agent would fail on a missing field (an AttributeError) once TensorFlow had loaded.
    A type that declares no agents (HParams itself) accepts any name, as validate does.
    """
    fitting = hp.domain("agent").choices
    if fitting is None or agent in fitting:
        return
    sets_by_agent: dict[str, list[str]] = {}
    for name in hparams_registry:
        sets_by_agent.setdefault(hparams_registry[name]().agent, []).append(name)
    if agent not in sets_by_agent:
        raise unknown_name("agent", agent, sets_by_agent)
    raise UserError(f"hparam 'agent' cannot be '{agent}' for this set: its {type(hp).__name__} are for agent "
                    f"{' or '.join(fitting)}; the {agent} sets are {', '.join(sets_by_agent[agent])}")


def apply_overrides(hp: HParams, overrides: dict[str, str]) -> HParams:
    """A copy of `hp` with the overrides parsed to each field's type and checked."""
    changes = {key: hp.domain(key).parse(text) for key, text in overrides.items()}
    if "agent" in changes:
        _check_agent_fits(hp, changes["agent"])
    return validate(dataclasses.replace(hp, **changes))


hparams_registry: Registry[Callable[[], HParams]] = Registry("hparams set")


def get_hparams(name: str, overrides: str | dict[str, str] = "") -> HParams:
    """The named set with the overrides applied."""
    hp = hparams_registry[name]()
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    return apply_overrides(validate(hp), overrides)


def to_dict(hp: HParams) -> dict[str, Any]:
    """Plain types only (tuples become lists), for YAML and TensorBoard; the type is kept under _type."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hp).items()}
    return {"_type": type(hp).__name__, **data}


def changed_hparams(saved: HParams, hp: HParams) -> dict[str, tuple[Any, Any]]:
    """Each hparam whose value differs between two sets, as (saved value, new value) in saved form (see to_dict).

    A different type shows as `_type`, so sets of different agents never compare equal.
    """
    before, after = to_dict(saved), to_dict(hp)
    return {key: (before.get(key), after.get(key)) for key in {**before, **after}
            if before.get(key) != after.get(key)}


def from_dict(data: dict[str, Any]) -> HParams:
    """Rebuild a saved set (see to_dict)."""
    data = dict(data)
    cls = _hparams_types()[data.pop("_type")]
    domains = cls.domains()
    kwargs = {k: tuple(v) if domains[k].sequence else v for k, v in data.items()}
    return validate(cls(**kwargs))


def _hparams_types() -> dict[str, type[HParams]]:
    found: dict[str, type[HParams]] = {}
    pending = [HParams]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found
