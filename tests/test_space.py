from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import torch_lrs
from lrsweep.sweeps.study.space import (
    DEFAULT_SCHEDULERS,
    DIMENSIONS,
    SEARCHABLE_SCHEDULERS,
    SearchSpace,
    config_from_params,
    load_space,
)
from lrsweep.trainer import InvalidInputError, build


def _sample(space: SearchSpace, n: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: space.suggest(t, epochs=50, batch_size=24).lr, n_trials=n)
    return study.trials


def test_space_is_conditional_on_the_scheduler() -> None:
    for trial in _sample(SearchSpace(), 60):
        kind = trial.params["scheduler"]
        own = {name for name in trial.params if "." in name}
        assert own == {name for name in DIMENSIONS if name.startswith(f"{kind}.")}
        assert 1e-3 <= trial.params["lr"] <= 1.0


def test_the_default_space_samples_the_seven_classic_kinds() -> None:
    kinds = set()
    for trial in _sample(SearchSpace(), 80):
        config = config_from_params(trial.params, epochs=50, batch_size=24)
        kinds.add(config.schedule.kind)
    assert kinds == set(DEFAULT_SCHEDULERS)


@pytest.mark.parametrize("epochs", [3, 10, 50])
def test_a_space_listing_every_kind_samples_each_into_a_torch_scheduler(epochs: int) -> None:
    kinds = set()
    for trial in _sample(SearchSpace(schedulers=SEARCHABLE_SCHEDULERS), 150):
        config = config_from_params(trial.params, epochs=epochs, batch_size=24)
        kinds.add(config.schedule.kind)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
        assert type(build(optimizer, config.schedule)).__name__ == (
            config.schedule.torch_class_name
        )
        # Stepped for every epoch it trains, as the single-trial loop steps it.
        assert torch_lrs(config.schedule, config.lr, epochs)[0] > 0
    assert kinds == set(SEARCHABLE_SCHEDULERS)


def test_weight_decay_is_searched_only_when_a_space_file_names_it(tmp_path: Path) -> None:
    for trial in _sample(SearchSpace(), 20):
        assert "weight_decay" not in trial.params
        assert config_from_params(trial.params, epochs=50, batch_size=24).weight_decay == 0.0
    path = tmp_path / "space.toml"
    path.write_text("[ranges]\nweight_decay = {low = 1e-4, high = 1e-3, log = true}\n")
    decays = [
        config_from_params(trial.params, epochs=50, batch_size=24).weight_decay
        for trial in _sample(load_space(path), 20)
    ]
    assert all(1e-4 <= decay <= 1e-3 for decay in decays)
    assert len(set(decays)) == len(decays)


@pytest.mark.parametrize(
    ("low", "high", "sizes"),
    [(16, 256, {16, 32, 64, 128, 256}), (24, 200, {24, 48, 96, 192}), (32, 32, {32})],
)
def test_a_searched_batch_size_doubles_from_low_to_high(
    low: int, high: int, sizes: set[int]
) -> None:
    """A few sizes, not every integer: each size is one vectorized group of a batch."""
    space = SearchSpace.from_dict({"ranges": {"batch_size": {"low": low, "high": high}}})
    drawn = {
        config_from_params(trial.params, epochs=50, batch_size=24).batch_size
        for trial in _sample(space, 60)
    }
    assert drawn == sizes
    for trial in _sample(SearchSpace(), 10):
        assert config_from_params(trial.params, epochs=50, batch_size=24).batch_size == 24


def test_cosine_floor_is_relative_to_lr() -> None:
    params = {
        "scheduler": "cosine",
        "lr": 0.2,
        "momentum": 0.5,
        "cosine.T_max": 10,
        "cosine.eta_min_factor": 0.1,
    }
    config = config_from_params(params, epochs=50, batch_size=24)
    assert config.schedule.params["eta_min"] == pytest.approx(0.02)


def test_toml_and_yaml_files_override_ranges(tmp_path: Path) -> None:
    toml = tmp_path / "space.toml"
    toml.write_text(
        'schedulers = ["step"]\n[ranges]\nlr = {low = 0.05, high = 0.06}\n'
        "[ranges.step]\ngamma = [0.2, 0.3]\n"
    )
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "schedulers: [step]\nranges:\n  lr: {low: 0.05, high: 0.06}\n  step.gamma: [0.2, 0.3]\n"
    )
    for path in (toml, yaml_file):
        space = load_space(path)
        assert space.schedulers == ("step",)
        for trial in _sample(space, 10):
            assert 0.05 <= trial.params["lr"] <= 0.06
            assert 0.2 <= trial.params["step.gamma"] <= 0.3


def test_space_survives_its_json_form() -> None:
    space = SearchSpace(schedulers=("cosine",), ranges={"lr": _range(0.01, 0.1, log=True)})
    assert SearchSpace.from_dict(space.to_dict()) == space


def _range(low: float, high: float, log: bool = False):  # type: ignore[no-untyped-def]
    from lrsweep.sweeps.study.space import Range

    return Range(low, high, log)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('schedulers = ["warmup"]', "unknown scheduler 'warmup'"),
        ("[ranges]\nbeta = [0, 1]", "unknown search-space key 'beta'"),
        ("colour = 1", "unknown key 'colour'"),
        ("[ranges]\nlr = [0.5, 0.1]", "inverted"),
        ("[ranges]\nlr = [0.0, 0.1]", "lr must be a number in \\(0"),
        ('[ranges]\n"step.gamma" = [0.5, 2.0]', "step.gamma must be a number in \\(0, 1\\]"),
        ('[ranges]\n"step.step_size" = [0, 5]', "step_size must be an integer"),
        ('[ranges]\n"inverse_time.alpha" = {low = 0, high = 1, log = true}', "log scale"),
        ("[ranges]\nlr = {low = 0.1}", "must be \\{low, high"),
        ("schedulers = []", "lists no schedulers"),
        ("[ranges]\nbatch_size = [0, 64]", "batch_size must be an integer"),
        ("[ranges]\nbatch_size = [-4, 64]", "batch_size must be an integer"),
        ("[ranges]\nbatch_size = [16.5, 64]", "batch_size must be an integer"),
        ("this is not toml", "does not parse"),
    ],
)
def test_bad_space_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=message) as raised:
        load_space(path)
    assert str(path) in str(raised.value)


def test_unknown_space_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text("{}")
    with pytest.raises(InvalidInputError, match="must end in .toml"):
        load_space(path)


bounds = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 100),
    st.text(max_size=2),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(DIMENSIONS) + ["bogus"]),
    low=bounds,
    high=bounds,
    log=st.one_of(st.booleans(), st.integers(0, 2)),
)
def test_space_parser_accepts_valid_or_raises_one_clear_error(
    name: str, low: object, high: object, log: object
) -> None:
    try:
        space = SearchSpace.from_dict({"ranges": {name: {"low": low, "high": high, "log": log}}})
    except InvalidInputError as exc:
        assert "\n" not in str(exc)
        return
    chosen = space.ranges[name]
    assert chosen.low <= chosen.high
    _sample(space, 3)
