from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import torch_lrs
from lrsweep.trainer import SCHEDULES, InvalidInputError, ScheduleConfig, build, lr_curve
from lrsweep.trainer.schedules import PlateauTracker

EXAMPLES = {
    "constant": {},
    "step": {"step_size": 7, "gamma": 0.3},
    "exponential": {"gamma": 0.93},
    "linear": {"start_factor": 0.5, "end_factor": 0.05, "total_iters": 30},
    "inverse_time": {"alpha": 0.05},
    "cosine": {"T_max": 20, "eta_min": 0.001},
    "polynomial": {"total_iters": 40, "power": 2.0},
    "multistep": {"milestones": [10, 25, 26], "gamma": 0.4},
    "onecycle": {"total_steps": 60, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
    "cosine_warm_restarts": {"T_0": 7, "T_mult": 2, "eta_min": 0.001},
    "cyclic": {"max_lr": 0.9, "step_size_up": 6},
    "warmup_cosine": {"warmup_iters": 5, "start_factor": 0.1, "T_max": 55, "eta_min": 0.0},
    "plateau": {"factor": 0.5, "patience": 2, "threshold": 1e-3, "min_lr": 0.01},
    "recorded": {"factors": [1.0, 0.5, 2.0, 0.25]},
}


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(SCHEDULES)


def test_step_lr_gives_the_documented_sequence() -> None:
    config = ScheduleConfig("step", {"step_size": 5, "gamma": 0.1})
    expected = [0.1] * 5 + [0.010000000000000002] * 5 + [0.0010000000000000002] * 5
    assert torch_lrs(config, 0.1, 15) == expected
    assert lr_curve(config, 0.1, 15) == expected


@pytest.mark.parametrize("kind", sorted(set(EXAMPLES) - {"plateau"}))  # its lr reads a metric
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
        lambda f: ScheduleConfig("recorded", {"factors": f}),
        st.lists(st.floats(1e-3, 10.0), min_size=1, max_size=70),
    ),
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
    st.builds(
        lambda m, g: ScheduleConfig("multistep", {"milestones": sorted(m), "gamma": g}),
        st.sets(st.integers(1, 60), min_size=1, max_size=5),
        factors,
    ),
    st.builds(
        lambda d, f: ScheduleConfig(
            "cosine_warm_restarts", {"T_0": d[0], "T_mult": d[1], "eta_min": f}
        ),
        st.tuples(st.integers(1, 30), st.integers(1, 3)),
        st.floats(0.0, 1e-4),
    ),
    st.builds(
        lambda f, n: ScheduleConfig("cyclic", {"max_lr": f, "step_size_up": n}),
        st.floats(1e-4, 2.0),
        st.integers(1, 20),
    ),
    st.builds(
        lambda w, s, t, m: ScheduleConfig(
            "warmup_cosine", {"warmup_iters": w, "start_factor": s, "T_max": t, "eta_min": m}
        ),
        st.integers(1, 20),
        factors,
        st.integers(1, 60),
        st.floats(0.0, 1e-4),
    ),
)


@st.composite
def one_cycles(draw: st.DrawFn) -> tuple[ScheduleConfig, int]:
    """OneCycleLR with total_steps = the epochs it is stepped for, as sweeps use it."""
    epochs = draw(st.integers(2, 60))
    pct = draw(st.floats(0.01, 0.99).filter(lambda p: p * epochs != 1.0))
    params = {"total_steps": epochs, "pct_start": pct}
    params |= {
        "div_factor": draw(st.floats(1.0, 100.0)),
        "final_div_factor": draw(st.floats(1.0, 1e4)),
    }
    return ScheduleConfig("onecycle", params), epochs


@settings(max_examples=150, deadline=None)
@given(cycle=one_cycles(), lr0=st.floats(1e-4, 1.0))
def test_any_one_cycle_matches_torch(cycle: tuple[ScheduleConfig, int], lr0: float) -> None:
    config, epochs = cycle
    assert lr_curve(config, lr0, epochs) == pytest.approx(
        torch_lrs(config, lr0, epochs), rel=1e-9, abs=1e-12
    )


@settings(max_examples=200, deadline=None)
@given(
    factor=st.floats(0.01, 0.99),
    patience=st.integers(0, 5),
    threshold=st.sampled_from([0.0, 1e-4, 1e-2, 0.1]),
    min_lr=st.sampled_from([0.0, 1e-3, 0.05]),
    lr0=st.floats(1e-3, 1.0),
    # Accuracies as a validation split gives them: hits / rows, often repeating.
    hits=st.lists(st.integers(0, 20), min_size=1, max_size=40),
)
def test_plateau_tracker_follows_reduce_lr_on_plateau(
    factor: float, patience: int, threshold: float, min_lr: float, lr0: float, hits: list[int]
) -> None:
    config = ScheduleConfig(
        "plateau",
        {"factor": factor, "patience": patience, "threshold": threshold, "min_lr": min_lr},
    )
    accuracies = [h / 20 for h in hits]
    expected = torch_lrs(config, lr0, len(hits), accuracies)
    tracker = PlateauTracker.of(config, lr0)
    ours = [lr0] + [tracker.step(accuracy) for accuracy in accuracies[:-1]]
    assert ours == expected  # the same float operations: equal, not close


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
