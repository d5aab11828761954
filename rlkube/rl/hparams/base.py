"""The hparams types, the registry of named sets, and override parsing.

A set is a frozen dataclass. Each field may carry a range or a choice list in its metadata, which
both the named sets and the user's overrides are checked against.
"""

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym

from rlkube.errors import UserError, unknown_name
from rlkube.rl.registry import Registry


def param(default: Any, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] | None = None, doc: str = "") -> Any:
    """A dataclass field with an allowed range (inclusive) or a list of choices."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc})


@dataclass(frozen=True)
class HParams:
    """What every agent shares: the environment, the budget, evaluation and checkpointing."""

    # The gymnasium action spaces this type's agents can drive (empty: undeclared, nothing is refused). Declared
    # with the hparams rather than the agents so that an env that does not fit is refused before TensorFlow loads
    # (rlkube.rl.envs.check_action_space).
    action_spaces: ClassVar[tuple[type[gym.Space], ...]] = ()

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


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _parse_value(key: str, text: str, hint: Any) -> Any:
    """Parse an override's text into the field's type, or say what was expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _parse_value(key, text, inner[0])
    if origin is tuple:
        item = typing.get_args(hint)[0]
        parts = [p for p in text.replace("[", "").replace("]", "").replace(" ", "").split(";") if p]
        return tuple(_parse_value(key, p, item) for p in parts)
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if hint is float:
            return float(text)
        if hint is str:
            return text
    except ValueError:
        pass
    name = getattr(hint, "__name__", str(hint))
    raise UserError(f"hparam '{key}' must be {name}, got '{text}'")


def validate(hp: HParams) -> HParams:
    """Check every field against its declared range and choices."""
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v is None or (isinstance(v, str) and choices is None):
                continue
            if choices is not None and v not in choices:
                raise UserError(f"hparam '{f.name}' must be one of {', '.join(choices)}, got '{v}'")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise UserError(f"hparam '{f.name}' must be within {bounds}, got {v}")
    return hp


def parse_overrides(text: str) -> dict[str, str]:
    """Split "lr=1e-3,batch_size=64" into raw key/value strings (tuples use ';': hidden_sizes=64;64)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"bad override '{item}'; write key=value, e.g. lr=1e-3,batch_size=64")
        pairs[key.strip()] = value.strip()
    return pairs


def _check_agent_fits(hp: HParams, agent: str) -> None:
    """A UserError unless `agent` is one that `hp`'s type declares: each agent reads its own type's fields.

    Without this, the agent would fail on a missing field (an AttributeError) once TensorFlow had loaded.
    A type that declares no agents (HParams itself) accepts any name, as validate does.
    """
    fitting = {f.name: f for f in dataclasses.fields(hp)}["agent"].metadata["choices"]
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
    fields = {f.name: f for f in dataclasses.fields(hp)}
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            raise unknown_name("hparam", key, fields)
        changes[key] = _parse_value(key, text, _field_type(type(hp), key))
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
    hints = typing.get_type_hints(cls)
    kwargs = {k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in data.items()}
    return validate(cls(**kwargs))


def _hparams_types() -> dict[str, type[HParams]]:
    found: dict[str, type[HParams]] = {}
    pending = [HParams]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found
