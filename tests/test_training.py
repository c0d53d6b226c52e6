from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lrsweep.trainer import (
    EpochResult,
    RunStatus,
    ScheduleConfig,
    TrainConfig,
    load_dataset,
    split_tensors,
    train,
    validation_rows,
)
from lrsweep.trainer.training import resolve_device

TUTORIAL_DROP = TrainConfig(
    ScheduleConfig("step", {"step_size": 10, "gamma": 0.5}), lr=0.1, momentum=0.9
)


@pytest.fixture(scope="module")
def tensors(data_path: Path):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    dataset = load_dataset(data_path)
    return split_tensors(dataset, validation_rows(dataset), "cpu")


def test_tutorial_schedule_learns_the_task(tensors) -> None:  # type: ignore[no-untyped-def]
    result = train(TUTORIAL_DROP, tensors, seed=0)
    assert result.status is RunStatus.COMPLETED
    assert len(result.history) == 50
    assert result.final_accuracy is not None and result.final_accuracy > 0.85
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert [r.lr for r in result.history[9:11]] == [0.1, 0.05]


def test_same_seed_same_run_other_seed_other_run(tensors) -> None:  # type: ignore[no-untyped-def]
    short = TrainConfig(TUTORIAL_DROP.schedule, lr=0.1, momentum=0.9, epochs=5)
    first, again, other = (train(short, tensors, seed=s) for s in (3, 3, 4))
    assert first.history == again.history
    assert first.history != other.history


def test_callback_sees_every_epoch_and_can_stop(tensors) -> None:  # type: ignore[no-untyped-def]
    seen: list[EpochResult] = []

    def stop_after_three(result: EpochResult) -> bool:
        seen.append(result)
        return result.epoch == 2

    result = train(TUTORIAL_DROP, tensors, seed=0, on_epoch=stop_after_three)
    assert result.status is RunStatus.STOPPED
    assert [r.epoch for r in seen] == [0, 1, 2]
    assert 0.0 <= seen[-1].validation_accuracy <= 1.0


def test_huge_lr_diverges_without_raising(tensors) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(ScheduleConfig("constant"), lr=1e6, momentum=0.99)
    result = train(config, tensors, seed=0)
    assert result.status is RunStatus.DIVERGED
    assert len(result.history) < 50


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
