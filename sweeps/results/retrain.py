"""Retrain configs from scratch over several seeds and score them on held-out data.

This is the check that a sweep's winner is not one lucky seed on a small validation split:
`sweeps train` scores one exported config, `sweeps export --top K` picks among the study's best
K by their mean over seeds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lrsweep.errors import InvalidInputError, require_positive
from lrsweep.sweeps.study.objective import EpochScores, objective
from lrsweep.sweeps.study.options import DataOptions
from lrsweep.sweeps.worker.progress import phase_bar
from lrsweep.trainer import TrainConfig, validation_rows
from lrsweep.trainer.config import Export
from lrsweep.trainer.data import DataSource
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.training import (
    EpochResult,
    RunStatus,
    Tensors,
    resolve_device,
    split_tensors,
    torch_threads,
)
from lrsweep.trainer.vectorized import BatchMember, train_batch


@dataclass(frozen=True)
class SeedRun:
    """One seed's run (over every fold: the fold means), or its divergence."""

    seed: int
    status: RunStatus
    accuracy: float | None
    loss: float | None = None


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
    def mean_objective(self) -> float:
        """What candidates are ranked by: the objective (`study.objective`) of each run, a
        diverged run scoring 0, averaged over seeds."""
        return statistics.fmean(
            objective(run.accuracy, run.loss)
            if run.accuracy is not None
            and run.loss is not None
            and run.status != RunStatus.DIVERGED
            else 0.0
            for run in self.runs
        )

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
    configs: Sequence[TrainConfig],
    folds: Sequence[Tensors],
    seeds: int,
    model_spec: ModelSpec | None = None,
    *,
    budget_s: float | None = None,
    first_seed_in_budget: bool = True,
    on_seed: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[], None] | None = None,
) -> list[SeedScores]:
    """Train every config once per seed 0..seeds-1 on every fold; the seed sets both the
    initial weights and the mini-batch order. A seed's score is the mean over folds, and a
    divergence on any fold is a divergence. The configs of one seed train together, one
    batch for all folds. With `budget_s`, no seed starts that would end past it at the pace
    of those before, and (with `first_seed_in_budget`) the first stops after two epochs,
    raising `OverBudget`, when its epochs would not fit; `on_seed(seed, seconds so far)` after
    each, `on_epoch()` after each epoch of each seed (a progress bar)."""
    with torch_threads(1):  # as workers train: the engine's small ops are slower on more threads
        scores: list[list[SeedRun]] = [[] for _ in configs]
        n_folds = len(folds)
        started = time.perf_counter()
        for seed in range(seeds):
            elapsed = time.perf_counter() - started
            if seed and budget_s is not None and elapsed * (seed + 1) / seed > budget_s:
                break
            members = [
                BatchMember(config, seed, fold) for config in configs for fold in range(n_folds)
            ]
            pilot = (
                _FirstSeedPace(budget_s, started, len(members), configs[0].epochs)
                if seed == 0 and budget_s is not None and first_seed_in_budget
                else None
            )

            def after_epoch(results: Mapping[int, EpochResult], pilot: Any = pilot) -> set[int]:
                if on_epoch is not None:
                    on_epoch()
                return set() if pilot is None else pilot(results)

            results = train_batch(
                members, folds, order_seed=seed, model_spec=model_spec, on_epoch=after_epoch
            )
            if pilot is not None and pilot.predicted_s is not None:
                raise OverBudget(pilot.predicted_s)
            for index in range(len(configs)):
                runs = results[index * n_folds : (index + 1) * n_folds]
                if any(run.status == RunStatus.DIVERGED or not run.history for run in runs):
                    scores[index].append(SeedRun(seed, RunStatus.DIVERGED, None))
                    continue
                final = EpochScores.of([run.history[-1] for run in runs])
                scores[index].append(
                    SeedRun(seed, RunStatus.COMPLETED, final.accuracy, final.loss)
                )
            if on_seed is not None:
                on_seed(seed, time.perf_counter() - started)
    return [SeedScores(tuple(runs)) for runs in scores]


class OverBudget(Exception):
    """The first seed would not fit the budget: measured on its first two epochs."""

    def __init__(self, predicted_s: float) -> None:
        super().__init__(f"one seed would take about {predicted_s:.1f} s")
        self.predicted_s = predicted_s


@dataclass
class _FirstSeedPace:
    """After a seed's second epoch: stop every member when the rest of its epochs, at the
    second epoch's pace (the first one is slowed by warm-up), would end past the budget, and
    keep the prediction (None while it fits)."""

    budget_s: float
    started: float
    members: int
    epochs: int
    first_epoch_end: float = 0.0
    predicted_s: float | None = None

    def __call__(self, results: Mapping[int, EpochResult]) -> set[int]:
        epoch = max((result.epoch for result in results.values()), default=-1)
        now = time.perf_counter()
        if epoch == 0:
            self.first_epoch_end = now
        if epoch != 1 or self.epochs <= 2:
            return set()
        predicted = now - self.started + (self.epochs - 2) * (now - self.first_epoch_end)
        if predicted <= self.budget_s:
            return set()
        self.predicted_s = predicted
        return set(range(self.members))


def evaluation_tensors(
    data: DataSource, test_csv: str | None, device: str | None
) -> tuple[Tensors, str]:
    """With `test_csv`: all of `data` to train, the test file to score (read with the same
    label column, header, classes and preprocessing, its columns matched to the training
    data's by name). Without: the study's default train/validation split of `data`.
    Returns the tensors and what is scored."""
    train_set = data.load()
    torch_device = resolve_device(device)
    if test_csv is not None:
        schema = train_set.schema
        test_set = DataSource.scored_with(test_csv, schema).load()
        return Tensors.from_arrays(train_set, test_set.aligned_to(schema), torch_device), test_csv
    tensors = split_tensors(train_set, validation_rows(train_set), str(torch_device))
    return tensors, "validation split"


def training_data(exported: Export, data: DataOptions, config_path: str) -> DataSource:
    """What `sweeps train` trains on: `data`, else the file the export was swept on when it is
    here with the values it had, read as the export records (label column, header,
    preprocessing)."""
    source = data.source.as_recorded(exported.schema)
    if data.path is not None or exported.data_path is None:
        return source
    recorded = replace(source, path=exported.data_path)
    if not Path(exported.data_path).is_file():
        raise InvalidInputError(
            f"{config_path} was swept on {exported.data_path}, which is not here: give --data CSV"
        )
    digest = recorded.load().sha256
    steps = data.preprocessing  # other columns dropped or encoded are other values
    same_columns = steps is None or (steps.drop_columns, steps.categorical) == (None, None)
    if same_columns and exported.data_sha256 not in (None, digest):
        raise InvalidInputError(
            f"{exported.data_path}, which {config_path} was swept on, has changed since (sha256 "
            f"of values {digest[:12]} != {str(exported.data_sha256)[:12]}): give --data CSV"
        )
    return recorded


def retrain(
    config: TrainConfig,
    *,
    data: DataSource,
    test_csv: str | None,
    seeds: int,
    device: str | None = None,
    model_spec: ModelSpec | None = None,
) -> dict[str, Any]:
    """`sweeps train`: one config over `seeds` seeds (of the built-in MLP, or `model_spec`),
    as a JSON-ready report."""
    require_positive("--seeds", seeds)
    tensors, evaluated_on = evaluation_tensors(data, test_csv, device)
    with phase_bar("train", seeds * config.epochs, "epoch") as advance:
        (scores,) = score_over_seeds([config], [tensors], seeds, model_spec, on_epoch=advance)
    return {
        "config": config.to_json_dict(),
        "evaluated_on": evaluated_on,
        "train_rows": len(tensors.y_train),
        "test_rows": len(tensors.y_val),
        **scores.to_json_dict(),
    }
