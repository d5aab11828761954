"""Named sets, typed overrides and the registries' unknown-name errors."""

import dataclasses

import pytest

from rlkube.errors import UserError
from rlkube.rl.envs import check_env_name
from rlkube.rl.hparams import (
    Domain,
    HParams,
    changed_hparams,
    from_dict,
    get_hparams,
    hparams_registry,
    parse_overrides,
    to_dict,
)
from rlkube.rl.hparams.dqn import DQNHParams
from rlkube.rl.hparams.policy_gradient import PPOHParams
from rlkube.rl.replay import memory_registry

DQN_FAMILY = ["dqn_cartpole", "double_dqn_cartpole", "dueling_dqn_cartpole", "noisy_dqn_cartpole",
              "prioritized_dqn_cartpole", "rainbow_cartpole", "c51_cartpole", "qrdqn_cartpole", "dqn_acrobot",
              "dqn_mountaincar", "qrdqn_pong"]


def test_every_promised_dqn_set_is_registered() -> None:
    assert set(DQN_FAMILY) <= set(hparams_registry.names())


@pytest.mark.parametrize("name", sorted(hparams_registry.names()))
def test_every_set_round_trips_through_its_saved_form(name: str) -> None:
    hp = get_hparams(name)
    assert from_dict(to_dict(hp)) == hp


def test_overrides_are_parsed_to_each_fields_type() -> None:
    hp = get_hparams("dqn_cartpole", "lr=1e-3,batch_size=32,double_q=true,hidden_sizes=64;32,"
                                     "target_return=none")
    assert hp.lr == 1e-3
    assert hp.batch_size == 32
    assert hp.double_q is True
    assert hp.hidden_sizes == (64, 32)
    assert hp.target_return is None


def test_rainbow_combines_every_dqn_extension() -> None:
    hp = get_hparams("rainbow_cartpole")
    assert (hp.double_q, hp.dueling, hp.noisy, hp.n_step, hp.memory) == (True, True, True, 3, "prioritized")


@pytest.mark.parametrize(("override", "message"), [
    ("lr=abc", "hparam 'lr' must be float, got 'abc'"),
    ("lr=2", "hparam 'lr' must be within [0.0, 1.0], got 2.0"),
    ("batch_size=1.5", "hparam 'batch_size' must be int, got '1.5'"),
    ("batch_size=0", "hparam 'batch_size' must be within"),
    ("double_q=maybe", "hparam 'double_q' must be bool"),
    ("memory=fifo", "hparam 'memory' must be one of uniform, prioritized, got 'fifo'"),
    ("lrr=1e-3", "unknown hparam 'lrr'; did you mean lr?"),
    ("lr", "bad override 'lr'; write key=value"),
])
def test_bad_overrides_say_what_is_wrong_and_what_would_be_right(override: str, message: str) -> None:
    with pytest.raises(UserError, match=None) as caught:
        get_hparams("dqn_cartpole", override)
    assert message in str(caught.value)


@pytest.mark.parametrize(("hparams", "name", "domain"), [
    (DQNHParams, "lr", Domain("lr", float, 0.0, 1.0, doc="learning rate")),
    (DQNHParams, "memory", Domain("memory", str, choices=("uniform", "prioritized"))),
    (DQNHParams, "hidden_sizes", Domain("hidden_sizes", int, lo=1, sequence=True, doc="widths of the hidden layers")),
    (PPOHParams, "clip_range_vf", Domain("clip_range_vf", float, lo=0.0, optional=True,
                                         doc="clips value updates around the old values; None: off")),
])
def test_a_fields_domain_is_its_type_range_choices_and_doc(hparams: type[HParams], name: str, domain: Domain) -> None:
    assert hparams.domain(name) == domain
    assert hparams().domain(name) == domain  # a set answers for its type


@pytest.mark.parametrize(("name", "text", "value"), [
    ("lr", "1e-3", 1e-3), ("batch_size", "32.0", 32), ("double_q", "on", True), ("hidden_sizes", "[64; 32]", (64, 32)),
    ("target_return", "null", None), ("memory", "prioritized", "prioritized"),
])
def test_a_domain_parses_override_text_as_an_override_would(name: str, text: str, value: object) -> None:
    assert DQNHParams.domain(name).parse(text) == value
    assert getattr(get_hparams("dqn_cartpole", {name: text}), name) == value


def test_a_domain_clamps_into_its_range_and_offers_what_a_shell_completes() -> None:
    assert (DQNHParams.domain("lr").clamp(1.5), DQNHParams.domain("lr").clamp(-1.0)) == (1.0, 0.0)
    assert (DQNHParams.domain("per_epsilon").clamp(9.0), DQNHParams.domain("per_epsilon").clamp(-1.0)) == (9.0, 0.0)
    assert DQNHParams.domain("distributional").completions() == ("none", "c51", "qr")
    assert DQNHParams.domain("double_q").completions() == ("true", "false")
    assert DQNHParams.domain("lr").completions() == ()


def test_asking_for_an_unknown_fields_domain_names_the_close_ones() -> None:
    with pytest.raises(UserError, match=r"^unknown hparam 'lrr'; did you mean lr\?$"):
        DQNHParams.domain("lrr")


@pytest.mark.parametrize("name", sorted(hparams_registry.names()))
def test_every_sets_type_has_smoke_overrides_that_fit_it(name: str) -> None:
    hp = get_hparams(name)
    assert type(hp).smoke_overrides, f"{type(hp).__name__} has no smoke_overrides"
    get_hparams(name, type(hp).smoke_overrides)


@pytest.mark.parametrize(("name", "agent", "message"), [
    ("dqn_cartpole", "ppo", "hparam 'agent' cannot be 'ppo' for this set: its DQNHParams are for agent dqn; "
                            "the ppo sets are ppo_cartpole, ppo_pendulum, ppo_pong"),
    ("ppo_cartpole", "vpg", "its PPOHParams are for agent ppo; the vpg sets are vpg_cartpole"),
    ("sac_pendulum", "ddpg", "its SACHParams are for agent sac; the ddpg sets are ddpg_mountaincar_continuous, "
                             "ddpg_pendulum, td3_halfcheetah, td3_pendulum"),
    ("dqn_cartpole", "dqm", "unknown agent 'dqm'; did you mean dqn?"),
])
def test_an_agent_override_must_fit_the_sets_hparams_type(name: str, agent: str, message: str) -> None:
    with pytest.raises(UserError) as caught:
        get_hparams(name, f"agent={agent}")
    assert message in str(caught.value)


def test_an_agent_override_naming_the_sets_own_agent_is_accepted() -> None:
    assert get_hparams("td3_pendulum", "agent=ddpg") == get_hparams("td3_pendulum")


def test_parse_overrides_splits_pairs_and_trims() -> None:
    assert parse_overrides(" lr = 1e-3 , batch_size=64,") == {"lr": "1e-3", "batch_size": "64"}


@pytest.mark.parametrize(("lookup", "name", "suggestion"), [
    (get_hparams, "dqn_cartpol", "dqn_cartpole"),
    (check_env_name, "CartPole-v2", "CartPole-v1"),
    (lambda n: memory_registry[n], "prioritised", "prioritized"),
])
def test_unknown_names_suggest_close_matches(lookup, name: str, suggestion: str) -> None:
    with pytest.raises(UserError, match=f"unknown .*'{name}'; did you mean .*{suggestion}"):
        lookup(name)


@pytest.mark.parametrize("name", sorted(hparams_registry.names()))
def test_every_set_may_change_its_learning_rate_on_resume_and_names_only_its_own_fields(name: str) -> None:
    hp = get_hparams(name)
    assert "lr" in hp.mutable_on_resume()
    assert hp.mutable_on_resume() <= {f.name for f in dataclasses.fields(hp)}


def test_sacs_mutable_temperature_is_the_one_it_uses() -> None:
    learned = get_hparams("sac_pendulum")
    fixed = get_hparams("sac_pendulum", "auto_entropy=false")
    assert {"target_entropy"} == learned.mutable_on_resume() - fixed.mutable_on_resume()
    assert {"init_ent_coef"} == fixed.mutable_on_resume() - learned.mutable_on_resume()


def test_changed_hparams_gives_each_difference_in_saved_form() -> None:
    saved = get_hparams("dqn_cartpole")
    assert changed_hparams(saved, dataclasses.replace(saved, lr=0.01, hidden_sizes=(64, 64))) == {
        "lr": (0.0023, 0.01), "hidden_sizes": ([256, 256], [64, 64])}
    assert changed_hparams(saved, saved) == {}
    assert changed_hparams(saved, get_hparams("ppo_cartpole"))["_type"] == ("DQNHParams", "PPOHParams")
