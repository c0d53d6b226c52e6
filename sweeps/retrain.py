"""Retrain configs from scratch over several seeds and score them on held-out data.

This is the check that a sweep's winner is not one lucky seed on a small validation split:
`sweeps train` scores one exported config, `sweeps export --top K` picks among the study's best
K by their mean over seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer import TrainConfig, validation_rows
from trainer.data import cached_dataset
from trainer.training import RunStatus, Tensors, resolve_device, split_tensors
from trainer.vectorized import BatchMember, train_batch


@dataclass(frozen=True)
class SeedRun:
    seed: int
    status: RunStatus
    accuracy: float | None


@dataclass(frozen=True)
class SeedScores:
    """One config's runs, one per seed. A run that diverged scores 0 in the mean: a schedule
    that blows up on some seeds is not one to ship."""

    runs: tuple[SeedRun, ...]

    @property
    def scores(self) -> list[float]:
        return [
            run.accuracy if run.accuracy is not None and run.status != RunStatus.DIVERGED else 0.0
            for run in self.runs
        ]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.scores)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "per_seed": [
                {"seed": run.seed, "status": run.status.value, "accuracy": run.accuracy}
                for run in self.runs
            ],
            "mean_accuracy": self.mean,
            "std_accuracy": self.std,
        }


def score_over_seeds(
    configs: Sequence[TrainConfig], tensors: Tensors, seeds: int
) -> list[SeedScores]:
    """Train every config once per seed 0..seeds-1; the seed sets both the initial weights and
    the mini-batch order. The configs of one seed train together in one batch."""
    by_seed = [
        train_batch([BatchMember(config, seed) for config in configs], tensors, order_seed=seed)
        for seed in range(seeds)
    ]
    return [
        SeedScores(
            tuple(
                SeedRun(seed, results[index].status, results[index].final_accuracy)
                for seed, results in enumerate(by_seed)
            )
        )
        for index in range(len(configs))
    ]


def evaluation_tensors(
    data: str | None, test_csv: str | None, device: str | None
) -> tuple[Tensors, str]:
    """With `test_csv`: all of `data` to train, the test file to score. Without: the study's
    default train/validation split of `data`. Returns the tensors and what is scored."""
    train_set = cached_dataset(data)
    torch_device = resolve_device(device)
    if test_csv is not None:
        return Tensors.from_arrays(train_set, cached_dataset(test_csv), torch_device), test_csv
    tensors = split_tensors(train_set, validation_rows(train_set), str(torch_device))
    return tensors, "validation split"


def retrain(
    config: TrainConfig,
    *,
    data: str | None,
    test_csv: str | None,
    seeds: int,
    device: str | None = None,
) -> dict[str, Any]:
    """`sweeps train`: one config over `seeds` seeds, as a JSON-ready report."""
    tensors, evaluated_on = evaluation_tensors(data, test_csv, device)
    (scores,) = score_over_seeds([config], tensors, seeds)
    return {
        "config": config.to_json_dict(),
        "evaluated_on": evaluated_on,
        "train_rows": len(tensors.y_train),
        "test_rows": len(tensors.y_val),
        **scores.to_json_dict(),
    }
