"""On a GPU the vectorized engine computes what it computes on the CPU, for every schedule kind,
folds, several classes and a user's model, and a real sweep on cuda ends exact with every epoch
stored. Skipped, with the reason, where CUDA is not available: `bench/gpu.sh` runs them on a
GPU machine."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_batched import SCHEDULES

from conftest import REPO, run_sweeps
from lrsweep.trainer import (
    Tensors,
    TrainConfig,
    TrainResult,
    load_dataset,
    split_tensors,
)
from lrsweep.trainer.data import stratified_folds
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.vectorized import BatchMember, train_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA: run bench/gpu.sh on a GPU machine"
    ),
]


def _folds(path: Path, device: str, count: int = 3) -> list[Tensors]:
    dataset = load_dataset(path)
    return [split_tensors(dataset, rows, device) for rows in stratified_folds(dataset, count, 0)]


def _members(folds: int, scale: float = 1.0) -> list[BatchMember]:
    """Every schedule kind, two optimizer settings each, spread over the folds."""
    settings = ((0.05 * scale, 0.9, 0.0), (0.3 * scale, 0.0, 0.01))
    return [
        BatchMember(
            TrainConfig(kind, lr=lr, momentum=momentum, epochs=8, weight_decay=decay),
            seed=20 + index,
            fold=index % folds,
        )
        for index, (kind, (lr, momentum, decay)) in enumerate(
            (kind, setting) for kind in SCHEDULES for setting in settings
        )
    ]


def _assert_equal(cpu: list[TrainResult], cuda: list[TrainResult], validation_rows: int) -> None:
    """Equal to float32 tolerance: a validation row may flip on a rounding tie."""
    for ours, theirs in zip(cuda, cpu, strict=True):
        assert ours.status is theirs.status
        assert [r.lr for r in ours.history] == pytest.approx([r.lr for r in theirs.history])
        assert [r.train_loss for r in ours.history] == pytest.approx(
            [r.train_loss for r in theirs.history], rel=1e-3, abs=1e-5
        )
        for mine, other in zip(ours.history, theirs.history, strict=True):
            assert abs(mine.validation_accuracy - other.validation_accuracy) <= (
                1.5 / validation_rows
            )
        for mine_w, other_w in zip(ours.weights, theirs.weights, strict=True):
            torch.testing.assert_close(mine_w.cpu(), other_w.cpu(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dataset", ["ionosphere", "wine"])
def test_the_engine_on_cuda_equals_the_cpu_for_every_schedule_kind_and_fold(
    dataset: str, data_path: Path, sklearn_csv: Callable[[str], Path]
) -> None:
    """Ionosphere (one logit) and wine (three classes, raw features up to 1680), three folds."""
    path = data_path if dataset == "ionosphere" else sklearn_csv("wine")
    scale = 1.0 if dataset == "ionosphere" else 1e-3
    members = _members(3, scale)
    cpu_folds, cuda_folds = _folds(path, "cpu"), _folds(path, "cuda")
    cpu = train_batch(members, cpu_folds, order_seed=7)
    cuda = train_batch(members, cuda_folds, order_seed=7)
    _assert_equal(cpu, cuda, len(cpu_folds[0].y_val))


def test_a_user_model_on_cuda_equals_the_cpu(
    data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchNorm's running statistics too, stacked per member on the device."""
    monkeypatch.chdir(REPO)  # `tests.user_models` imports from the repository root
    spec = ModelSpec("tests.user_models:batchnorm_net")
    members = _members(1)[:8]
    cpu_folds, cuda_folds = _folds(data_path, "cpu", 1), _folds(data_path, "cuda", 1)
    cpu = train_batch(members, cpu_folds, order_seed=3, model_spec=spec)
    cuda = train_batch(members, cuda_folds, order_seed=3, model_spec=spec)
    _assert_equal(cpu, cuda, len(cpu_folds[0].y_val))


def test_a_sweep_on_cuda_ends_exact_with_every_epoch_stored(
    tmp_path: Path, data_path: Path
) -> None:
    database = tmp_path / "cuda.db"
    result = run_sweeps(
        "run", "--study", "cuda", "--trials", "300", "--device", "cuda", "--seed", "0",
        "--data", str(data_path), "--storage", f"sqlite:///{database}",
        "--out", str(tmp_path / "best.json"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as connection:
        states = dict(connection.execute("SELECT state, COUNT(*) FROM trials GROUP BY state"))
        epochs = connection.execute(
            "SELECT trials.trial_id, trials.state, COUNT(step), MIN(step), MAX(step) "
            "FROM trials LEFT JOIN trial_intermediate_values USING (trial_id) "
            "GROUP BY trials.trial_id"
        ).fetchall()
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 300, states
    assert set(states) <= {"COMPLETE", "PRUNED"}, states
    for trial_id, state, count, first, last in epochs:
        assert first == 0 and count == last + 1, (trial_id, state, count, first, last)
        if state == "COMPLETE":
            assert count == 50, (trial_id, count)
    assert (tmp_path / "best.json").exists()
