from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import torch_lrs
from trainer import SCHEDULES, InvalidInputError, ScheduleConfig, build, lr_curve

EXAMPLES = {
    "constant": {},
    "step": {"step_size": 7, "gamma": 0.3},
    "exponential": {"gamma": 0.93},
    "linear": {"start_factor": 0.5, "end_factor": 0.05, "total_iters": 30},
    "inverse_time": {"alpha": 0.05},
    "cosine": {"T_max": 20, "eta_min": 0.001},
    "polynomial": {"total_iters": 40, "power": 2.0},
}


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(SCHEDULES)


def test_step_lr_gives_the_documented_sequence() -> None:
    config = ScheduleConfig("step", {"step_size": 5, "gamma": 0.1})
    expected = [0.1] * 5 + [0.010000000000000002] * 5 + [0.0010000000000000002] * 5
    assert torch_lrs(config, 0.1, 15) == expected
    assert lr_curve(config, 0.1, 15) == expected


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_curve_matches_torch_epoch_by_epoch(kind: str) -> None:
    config = ScheduleConfig(kind, EXAMPLES[kind])
    expected = torch_lrs(config, 0.2, 60)
    actual = lr_curve(config, 0.2, 60)
    assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (
        type(build(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2), config)).__name__
        == config.torch_class_name
    )


def test_inverse_time_is_the_tutorial_formula() -> None:
    curve = lr_curve(ScheduleConfig("inverse_time", {"alpha": 0.5}), 0.1, 4)
    assert curve == pytest.approx([0.1 / (1 + 0.5 * n) for n in range(4)])


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("warmup", {}, "unknown scheduler 'warmup'"),
        ("step", {"gamma": 0.1}, "missing: \\['step_size'\\]"),
        ("step", {"step_size": 5, "gamma": 0.1, "beta": 1}, "unknown: \\['beta'\\]"),
        ("step", {"step_size": 0, "gamma": 0.1}, "step_size must be an integer in \\[1"),
        ("step", {"step_size": 2.5, "gamma": 0.1}, "must be an integer"),
        ("step", {"step_size": 5, "gamma": 1.5}, "gamma must be a number in \\(0, 1\\]"),
        ("exponential", {"gamma": 0.0}, "gamma must be"),
        ("exponential", {"gamma": float("nan")}, "gamma must be"),
        ("exponential", {"gamma": "0.9"}, "must be a number"),
        ("inverse_time", {"alpha": -1}, "alpha must be"),
        ("cosine", {"T_max": 10, "eta_min": -0.1}, "eta_min must be"),
    ],
)
def test_invalid_configs_are_refused(kind: str, params: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ScheduleConfig(kind, params)


def test_config_is_frozen() -> None:
    config = ScheduleConfig("exponential", {"gamma": 0.9})
    with pytest.raises(AttributeError):
        config.kind = "step"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.params["gamma"] = 0.5  # type: ignore[index]


factors = st.floats(min_value=1e-3, max_value=1.0)
valid_configs = st.one_of(
    st.just(ScheduleConfig("constant")),
    st.builds(
        lambda s, g: ScheduleConfig("step", {"step_size": s, "gamma": g}),
        st.integers(1, 60),
        factors,
    ),
    st.builds(lambda g: ScheduleConfig("exponential", {"gamma": g}), factors),
    st.builds(
        lambda s, e, n: ScheduleConfig(
            "linear", {"start_factor": s, "end_factor": e, "total_iters": n}
        ),
        factors,
        st.floats(0.0, 1.0),
        st.integers(1, 60),
    ),
    st.builds(lambda a: ScheduleConfig("inverse_time", {"alpha": a}), st.floats(0.0, 10.0)),
    st.builds(
        lambda t, m: ScheduleConfig("cosine", {"T_max": t, "eta_min": m}),
        st.integers(1, 60),
        st.floats(0.0, 1e-3),
    ),
    st.builds(
        lambda n, p: ScheduleConfig("polynomial", {"total_iters": n, "power": p}),
        st.integers(1, 60),
        st.floats(0.1, 5.0),
    ),
)


@settings(max_examples=150, deadline=None)
@given(config=valid_configs, lr0=st.floats(1e-4, 1.0), epochs=st.integers(1, 60))
def test_any_valid_config_builds_and_matches_torch(
    config: ScheduleConfig, lr0: float, epochs: int
) -> None:
    expected = torch_lrs(config, lr0, epochs)
    actual = lr_curve(config, lr0, epochs)
    assert all(math.isfinite(lr) and lr >= 0 for lr in actual)
    assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(SCHEDULES) + ["bogus", ""]),
    params=st.dictionaries(
        st.sampled_from(["step_size", "gamma", "alpha", "T_max", "eta_min", "power", "x"]),
        st.one_of(st.floats(allow_nan=True), st.integers(-5, 100), st.text(max_size=3), st.none()),
        max_size=4,
    ),
)
def test_arbitrary_input_is_either_valid_or_a_clear_error(kind: str, params: dict) -> None:
    try:
        config = ScheduleConfig(kind, params)
    except InvalidInputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    lrs = lr_curve(config, 0.1, 10)
    assert all(math.isfinite(lr) for lr in lrs)
