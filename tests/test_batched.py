"""The batched engine computes what K separate single-trial runs compute."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

import lrsweep.trainer.vectorized
from lrsweep.trainer import (
    EpochResult,
    RunStatus,
    ScheduleConfig,
    Tensors,
    TrainConfig,
    load_dataset,
    split_tensors,
    train,
    validation_rows,
)
from lrsweep.trainer.data import stratified_folds
from lrsweep.trainer.vectorized import BatchMember, fold_order_seed, train_batch

SCHEDULES = [
    ScheduleConfig("constant"),
    ScheduleConfig("step", {"step_size": 3, "gamma": 0.5}),
    ScheduleConfig("exponential", {"gamma": 0.8}),
    ScheduleConfig("linear", {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 6}),
    ScheduleConfig("inverse_time", {"alpha": 0.3}),
    ScheduleConfig("cosine", {"T_max": 5, "eta_min": 0.001}),
    ScheduleConfig("polynomial", {"total_iters": 8, "power": 2.0}),
    ScheduleConfig("multistep", {"milestones": [3, 6], "gamma": 0.5}),
    ScheduleConfig(
        "onecycle",
        {"total_steps": 10, "pct_start": 0.3, "div_factor": 10.0, "final_div_factor": 100.0},
    ),
    ScheduleConfig("cosine_warm_restarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.001}),
    ScheduleConfig("cyclic", {"max_lr": 0.5, "step_size_up": 2}),
    ScheduleConfig(
        "warmup_cosine", {"warmup_iters": 3, "start_factor": 0.1, "T_max": 7, "eta_min": 0.0}
    ),
    # Its lr follows each member's own accuracy: the engine's tracker against torch's.
    ScheduleConfig("plateau", {"factor": 0.5, "patience": 1, "threshold": 0.0, "min_lr": 0.0}),
]


@pytest.fixture(scope="module", params=["ionosphere", "wine", "breast_cancer"])
def tensors(
    request: pytest.FixtureRequest, data_path: Path, sklearn_csv: Callable[[str], Path]
) -> Tensors:
    """The validation split of ionosphere (one logit, BCE), wine (3 classes, cross-entropy)
    and breast cancer (string labels, 30 features)."""
    torch.set_num_threads(1)
    name = request.param
    dataset = load_dataset(data_path if name == "ionosphere" else sklearn_csv(name))
    return split_tensors(dataset, validation_rows(dataset), "cpu")


def _members(epochs: int) -> list[BatchMember]:
    members = []
    for index, schedule in enumerate(SCHEDULES):
        for lr, momentum, weight_decay in ((0.05, 0.9, 0.0), (0.3, 0.0, 0.01), (0.1, 0.5, 0.2)):
            config = TrainConfig(
                schedule, lr=lr, momentum=momentum, epochs=epochs, weight_decay=weight_decay
            )
            members.append(BatchMember(config, seed=100 + 3 * index + len(members) % 3))
    return members


@pytest.mark.parametrize("loss_chunk_steps", [64, 2])
def test_every_scheduler_kind_matches_separate_runs(
    tensors: Tensors, loss_chunk_steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with the train loss summed over chunks of 2 steps (several chunks an epoch, the
    last one short)."""
    monkeypatch.setattr(lrsweep.trainer.vectorized, "LOSS_CHUNK_STEPS", loss_chunk_steps)
    members = _members(epochs=10)
    batched = train_batch(members, [tensors], order_seed=11)
    for member, result in zip(members, batched, strict=True):
        alone = train(member.config, tensors, seed=member.seed, order_seed=11)
        assert result.status is alone.status is RunStatus.COMPLETED
        assert [r.lr for r in result.history] == pytest.approx([r.lr for r in alone.history])
        assert [r.train_loss for r in result.history] == pytest.approx(
            [r.train_loss for r in alone.history], rel=1e-4, abs=1e-6
        )
        for ours, theirs in zip(result.history, alone.history, strict=True):
            # At most one validation row may flip on a float32 rounding tie.
            one_row = 1 / len(tensors.y_val) + 1e-6
            assert abs(ours.validation_accuracy - theirs.validation_accuracy) <= one_row
            assert ours.validation_loss == pytest.approx(theirs.validation_loss, rel=1e-4)
        for ours, theirs in zip(result.weights, alone.weights, strict=True):
            assert ours.shape == theirs.shape
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_stopped_and_diverged_members_leave_without_disturbing_others(tensors: Tensors) -> None:
    members = _members(epochs=6)
    exploding = BatchMember(
        TrainConfig(ScheduleConfig("constant"), lr=1e30, momentum=0.99, epochs=6), seed=7
    )
    members.insert(3, exploding)
    stop_at = {0: 1, 5: 3}  # member index -> epoch after which the callback stops it

    def stop_some(results: Mapping[int, EpochResult]) -> set[int]:
        return {m for m, r in results.items() if stop_at.get(m) == r.epoch}

    batched = train_batch(members, [tensors], order_seed=5, on_epoch=stop_some)
    assert batched[3].status is RunStatus.DIVERGED
    for index in stop_at:
        assert batched[index].status is RunStatus.STOPPED
        assert len(batched[index].history) == stop_at[index] + 1
    solo = [m for i, m in enumerate(members) if i not in stop_at and i != 3]
    alone_results = train_batch(solo, [tensors], order_seed=5)
    kept = [r for i, r in enumerate(batched) if i not in stop_at and i != 3]
    for together, alone in zip(kept, alone_results, strict=True):
        assert together.status is RunStatus.COMPLETED
        for ours, theirs in zip(together.weights, alone.weights, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_members_must_share_loop_length(tensors: Tensors) -> None:
    members = [
        BatchMember(TrainConfig(ScheduleConfig("constant"), lr=0.1, epochs=e), 0) for e in (3, 4)
    ]
    with pytest.raises(ValueError, match="share epochs"):
        train_batch(members, [tensors], order_seed=0)


def test_members_on_different_folds_each_match_a_separate_run_on_their_fold(
    data_path: Path,
) -> None:
    """Cross-validated trials: the members of one batch train on different folds, each as
    `train` would on that fold's rows, with that fold's mini-batch order."""
    dataset = load_dataset(data_path)
    folds = [split_tensors(dataset, rows, "cpu") for rows in stratified_folds(dataset, 3, 0)]
    members = [
        BatchMember(TrainConfig(schedule, lr=0.1, momentum=0.9, epochs=6), seed=40 + i, fold=f)
        for i, schedule in enumerate(SCHEDULES[:3])
        for f in range(3)
    ]
    batched = train_batch(members, folds, order_seed=21)
    for member, result in zip(members, batched, strict=True):
        alone = train(
            member.config,
            folds[member.fold],
            seed=member.seed,
            order_seed=fold_order_seed(21, member.fold),
        )
        assert [r.validation_loss for r in result.history] == pytest.approx(
            [r.validation_loss for r in alone.history], rel=1e-4
        )
        for ours, theirs in zip(result.weights, alone.weights, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # Folds differ: the same config trained on two folds does not end with the same weights.
    assert not torch.allclose(batched[0].weights[0], batched[1].weights[0])


def test_a_member_on_a_fold_the_batch_lacks_is_refused(tensors: Tensors) -> None:
    member = BatchMember(TrainConfig(ScheduleConfig("constant"), lr=0.1, epochs=2), 0, fold=1)
    with pytest.raises(ValueError, match="outside the batch's 1 folds"):
        train_batch([member], [tensors], order_seed=0)


@pytest.mark.parametrize("batch_sizes", [(24,), (1000,), (16, 24, 1000)])
def test_members_stopped_on_several_folds_match_train_stopped_alike(
    data_path: Path, batch_sizes: tuple[int, ...]
) -> None:
    """Members leave mid-batch on some folds while another fold has no members at all; each
    one still equals `train` stopped at the same epoch (also with one mini-batch per epoch,
    and with mini-batch sizes that differ within a fold, as a searched `batch_size` makes)."""
    dataset = load_dataset(data_path)
    folds = [split_tensors(dataset, rows, "cpu") for rows in stratified_folds(dataset, 3, 0)]
    members = [
        BatchMember(
            TrainConfig(schedule, lr=0.2, momentum=0.5, epochs=5,
                        batch_size=batch_sizes[i % len(batch_sizes)], weight_decay=0.01 * i),
            seed=60 + i,
            fold=1 + i % 2,  # fold 0 trains nobody
        )
        for i, schedule in enumerate(SCHEDULES)
    ]  # fmt: skip
    stop_after = {member: member % 3 for member in range(0, len(members), 2)}

    def stop(results: Mapping[int, EpochResult]) -> set[int]:
        return {m for m, r in results.items() if stop_after.get(m) == r.epoch}

    batched = train_batch(members, folds, order_seed=3, on_epoch=stop)
    for index, (member, result) in enumerate(zip(members, batched, strict=True)):
        alone = train(
            member.config,
            folds[member.fold],
            seed=member.seed,
            order_seed=fold_order_seed(3, member.fold),
            on_epoch=lambda r, index=index: stop_after.get(index) == r.epoch,
        )
        assert result.status is alone.status
        assert len(result.history) == len(alone.history)
        for ours, theirs in zip(result.weights, alone.weights, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
