import pytest

from rlkube.rl.schedules import ExponentialSchedule, LinearSchedule


def test_linear_schedule_interpolates_then_holds() -> None:
    schedule = LinearSchedule(1.0, 0.1, 100)
    assert [schedule(s) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_exponential_schedule_decays_towards_its_end() -> None:
    schedule = ExponentialSchedule(1.0, 0.1, 0.5)
    assert [schedule(s) for s in (0, 1, 2)] == pytest.approx([1.0, 0.55, 0.325])
    assert schedule(10_000) == pytest.approx(0.1)
