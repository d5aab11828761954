"""The samplers and pruners a sweep may name: one entry each, in the order `--help` offers them (the default first),
with what the driver must know of it.

Pure: `rlkube sweep start --help` and the flags' checks read these names without importing Optuna. Optuna builds
each one in rlkube.launch.sweep.study, under the same name.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from rlkube.errors import UserError, one_of


class Named(Protocol):
    @property
    def name(self) -> str: ...


Entry = TypeVar("Entry", bound=Named)


class Choices(Generic[Entry]):
    """Entries by name, kept in the order they are offered; an unknown name is refused with the whole list, which
    is short enough to read in one line."""

    def __init__(self, kind: str, *entries: Entry) -> None:
        self.kind = kind
        self._entries = {entry.name: entry for entry in entries}

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} '{name}'; use one of {', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def default(self) -> str:
        return next(iter(self._entries))

    def help_text(self) -> str:
        """'a, b or c.': the names as the flag's help lists them."""
        return f"{one_of(self.names())}."


@dataclass(frozen=True)
class Sampler:
    name: str


@dataclass(frozen=True)
class Pruner:
    name: str
    # Compares trials seed by seed at each step (Wilcoxon's signed-rank test), so it is told every seed's return
    # (config.per_seed_values) rather than their mean (config.intermediate_values).
    per_seed: bool = False


SAMPLERS: Choices[Sampler] = Choices(
    "sampler", Sampler("tpe"), Sampler("gp"), Sampler("cmaes"), Sampler("random"), Sampler("grid"))
PRUNERS: Choices[Pruner] = Choices(
    "pruner", Pruner("median"), Pruner("halving"), Pruner("hyperband"), Pruner("wilcoxon", per_seed=True),
    Pruner("none"))
