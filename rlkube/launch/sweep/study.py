"""Optuna underneath a sweep: the study in its storage, and the sampler and pruner a config names.

rlkube owns the loop (driver.py) and talks to Optuna through ask and tell; Optuna proposes params and decides
pruning. Every sampler and pruner that rlkube.launch.sweep.methods names is built here, and only here.
Only `rlkube sweep` imports this module.
"""

import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage

from rlkube.errors import UserError
from rlkube.launch.sweep.config import SweepConfig
from rlkube.launch.sweep.space import Dimension, SearchSpace
from rlkube.rl.registry import Registry

CONFIG_ATTR = "rlkube_config"
# Optuna logs every trial it is told about; the driver says what matters in its own words.
optuna.logging.set_verbosity(logging.WARNING)


def distribution(dim: Dimension) -> BaseDistribution:
    if dim.kind == "choice":
        return CategoricalDistribution(list(dim.choices))
    if dim.kind == "int":
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return FloatDistribution(float(dim.low), float(dim.high), log=dim.log)


SamplerFactory = Callable[[SweepConfig, SearchSpace], optuna.samplers.BaseSampler]
PrunerFactory = Callable[[SweepConfig, int, int], optuna.pruners.BasePruner]
# Each name of rlkube.launch.sweep.methods, built as Optuna takes it (tests/test_sweep.py builds every one).
sampler_factories: Registry[SamplerFactory] = Registry("sampler")
pruner_factories: Registry[PrunerFactory] = Registry("pruner")


def sampler_for(config: SweepConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The config's sampler, seeded by the sweep's seed so a sweep's proposals can be replayed."""
    return sampler_factories[config.sampler](config, space)


def pruner_for(config: SweepConfig, train_steps: int, eval_every: int) -> optuna.pruners.BasePruner:
    """The config's pruner, with its warm-up in environment steps (the steps trials report at)."""
    return pruner_factories[config.pruner](config, train_steps, eval_every)


def _startup_trials(config: SweepConfig) -> int:
    return max(2, min(10, config.trials // 3))  # random trials first; TPE's default 10 is most of a small sweep


@sampler_factories.register("tpe")
def _tpe(config: SweepConfig, _space: SearchSpace) -> optuna.samplers.BaseSampler:
    # multivariate: models the params jointly; constant liar: running trials count as bad, so parallel asks
    # spread out instead of proposing the same point.
    return optuna.samplers.TPESampler(seed=config.train.seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=_startup_trials(config))


@sampler_factories.register("gp")
def _gp(config: SweepConfig, _space: SearchSpace) -> optuna.samplers.BaseSampler:
    if importlib.util.find_spec("torch") is None:
        raise UserError("--sampler gp is Optuna's GPSampler, which is built on PyTorch, and rlkube does not "
                        "install PyTorch (see docs/sweeps.md); pip install torch, or use tpe")
    return optuna.samplers.GPSampler(seed=config.train.seed, n_startup_trials=_startup_trials(config))


@sampler_factories.register("cmaes")
def _cmaes(config: SweepConfig, _space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=config.train.seed, n_startup_trials=_startup_trials(config))


@sampler_factories.register("random")
def _random(config: SweepConfig, _space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=config.train.seed)


@sampler_factories.register("grid")
def _grid(config: SweepConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    grid = {}
    for dim in space.values():
        if dim.kind == "choice":
            grid[dim.name] = list(dim.choices)
        elif dim.kind == "int":
            grid[dim.name] = list(range(int(dim.low), int(dim.high) + 1))
        else:
            raise UserError(f"--sampler grid needs every dimension as choice or int, and '{dim.name}' is a float "
                            f"range; list its values with choice: [...]")
    return optuna.samplers.GridSampler(grid, seed=config.train.seed)


def _pruner_startup_trials(config: SweepConfig) -> int:
    return max(2, min(5, config.trials // 4))


@pruner_factories.register("median")
def _median(config: SweepConfig, train_steps: int, _eval_every: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=_pruner_startup_trials(config),
                                       n_warmup_steps=train_steps // 3)


@pruner_factories.register("halving")
def _halving(_config: SweepConfig, _train_steps: int, eval_every: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=eval_every)


@pruner_factories.register("hyperband")
def _hyperband(_config: SweepConfig, train_steps: int, eval_every: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=train_steps)


@pruner_factories.register("wilcoxon")
def _wilcoxon(config: SweepConfig, _train_steps: int, _eval_every: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2 * config.seeds)


@pruner_factories.register("none")
def _none(_config: SweepConfig, _train_steps: int, _eval_every: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


def storage(url_or_path: str) -> optuna.storages.BaseStorage:
    """A database URL as Optuna takes it (postgresql://, mysql://, sqlite:///), or a journal file's path."""
    try:
        if "://" in url_or_path:
            return optuna.storages.RDBStorage(url_or_path)
        Path(url_or_path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url_or_path))
    except UserError:
        raise
    except Exception as error:  # sqlalchemy and drivers raise their own kinds; each becomes one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot open the study storage {url_or_path}: {first_line}") from None


def create(config: SweepConfig, where: str) -> optuna.Study:
    """A new study holding the config; refused in one line if the storage already has one of that name."""
    backend = storage(where)
    try:
        study = optuna.create_study(storage=backend, study_name=config.name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"a sweep named '{config.name}' already exists in {where}; choose another --name, or "
                        f"rlkube sweep resume {config.name}") from None
    study.set_user_attr(CONFIG_ATTR, json.dumps(config.to_dict()))
    return study


def load(name: str, where: str) -> tuple[optuna.Study, SweepConfig]:
    backend = storage(where)
    try:
        study = optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        raise UserError(f"no sweep named '{name}' in {where}") from None
    return study, SweepConfig.from_dict(json.loads(study.user_attrs[CONFIG_ATTR]))


def drive(study: optuna.Study, config: SweepConfig, space: SearchSpace, train_steps: int,
          eval_every: int) -> optuna.Study:
    """The study as the driver uses it: with the config's sampler and pruner (Optuna keeps neither in storage)."""
    study.sampler = sampler_for(config, space)
    study.pruner = pruner_for(config, train_steps, eval_every)
    return study
