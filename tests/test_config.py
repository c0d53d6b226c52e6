from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import torch_lrs
from lrsweep.trainer import (
    InvalidInputError,
    ScheduleConfig,
    TrainConfig,
    build,
    load_config,
    lr_curve,
)


def _config() -> TrainConfig:
    return TrainConfig(
        ScheduleConfig("cosine", {"T_max": 30, "eta_min": 0.001}),
        lr=0.05,
        momentum=0.9,
        epochs=40,
        batch_size=16,
        weight_decay=1e-4,
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip_rebuilds_the_same_config(tmp_path: Path, suffix: str) -> None:
    import yaml

    path = tmp_path / f"best{suffix}"
    document = _config().to_json_dict()
    path.write_text(json.dumps(document) if suffix == ".json" else yaml.safe_dump(document))
    loaded = load_config(path)
    assert loaded == _config()
    optimizer = loaded.make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert type(build(optimizer, loaded.schedule)).__name__ == "CosineAnnealingLR"
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_constant_schedule_keeps_torch_fixed_kwargs(tmp_path: Path) -> None:
    config = TrainConfig(ScheduleConfig("constant"), lr=0.1)
    document = config.to_json_dict()
    assert document["scheduler"]["kwargs"] == {"factor": 1.0, "total_iters": 0}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    assert load_config(path) == config
    document["scheduler"]["kwargs"]["factor"] = 0.5
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match="scheduler.kwargs disagree with scheduler.params"):
        load_config(path)
    del document["scheduler"]["params"]  # as exports before params were written
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match="factor of constant must be 1.0"):
        load_config(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["optimizer"].update(lr=-0.1), "lr must be > 0"),
        (lambda d: d["optimizer"].update(lr="fast"), "lr must be > 0"),
        (lambda d: d["optimizer"].update(momentum=1.0), "momentum must be in"),
        (lambda d: d["optimizer"].update(weight_decay=-1e-4), "weight_decay must be >= 0"),
        (lambda d: d["training"].update(epochs=0), "epochs must be an integer >= 1"),
        (lambda d: d["scheduler"].update(kind="warmup"), "unknown scheduler"),
        (lambda d: d["scheduler"]["params"].update(T_max=0), "T_max must be"),
        (lambda d: d["scheduler"]["kwargs"].update(T_max=3), "kwargs disagree with"),
        (lambda d: d["scheduler"].update(kwargs=[1, 2]), "scheduler.kwargs must be an object"),
        (lambda d: d.update(version=99), "not an lrsweep config"),
        (lambda d: d.pop("optimizer"), "optimizer must be an object"),
    ],
)
def test_hand_edited_nonsense_is_refused(tmp_path: Path, edit: object, message: str) -> None:
    document = _config().to_json_dict()
    edit(document)  # type: ignore[operator]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match=message) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_unparseable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInputError, match="does not parse"):
        load_config(path)


def test_exported_curve_equals_rebuilt_scheduler() -> None:
    config = _config()
    rebuilt = torch_lrs(config.schedule, config.lr, config.epochs)
    assert rebuilt == pytest.approx(lr_curve(config.schedule, config.lr, config.epochs), rel=1e-12)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 60)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    document=st.fixed_dictionaries(
        {},
        optional={
            "format": st.sampled_from(["lrsweep.train-config", "other"]) | json_values,
            "version": st.sampled_from([1, 2]) | json_values,
            "scheduler": st.fixed_dictionaries(
                {},
                optional={
                    "kind": st.sampled_from(["step", "cosine", "constant", "x"]),
                    "kwargs": st.dictionaries(
                        st.sampled_from(["step_size", "gamma", "T_max", "eta_min", "factor"]),
                        json_values,
                        max_size=3,
                    ),
                },
            )
            | json_values,
            "optimizer": st.fixed_dictionaries(
                {},
                optional={"lr": json_values, "momentum": json_values, "weight_decay": json_values},
            )
            | json_values,
            "training": st.fixed_dictionaries(
                {}, optional={"epochs": json_values, "batch_size": json_values}
            )
            | json_values,
        },
    )
)
def test_config_parser_accepts_or_refuses_with_one_clear_error(document: dict) -> None:
    try:
        config = TrainConfig.from_json_dict(document)
    except InvalidInputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert TrainConfig.from_json_dict(config.to_json_dict()) == config


def test_yaml_cannot_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "ran"
    path.write_text(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(InvalidInputError, match="does not parse"):
        load_config(path)
    assert not marker.exists()
