"""Does the export hold up on rows the sweep never saw? A nested benchmark, run as a user would.

For each of several stratified outer splits of the data: write the outer-training and the
outer-test rows to CSV files; `sweeps run` with its defaults on the training file; then score,
with `sweeps train --seeds S --test-csv` (training on all outer-training rows, testing on the
outer-test rows, mean over seeds):

- the default export (what `sweeps run` wrote),
- the untuned tutorial recipe (constant lr 0.1, no momentum, 50 epochs),
- the study's raw best trial (`sweeps export` without `--top`),
- the raw best trial of a single-split study (`sweeps run --folds 1` on the same rows: one
  validation split, the best trial exported as is; the sweep that issue 10 set out to beat),
- the study's median completed trial, and its best one picked by the test rows (the ceiling
  of what the study could have chosen: no procedure that does not see the test rows can beat it).

    python -m bench.generalization [--splits 3] [--trials 100] [--seeds 5] [-- RUN FLAGS]

With `-- --population K --exploit-every E` both sweeps are population runs of K members.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import optuna
from sklearn.model_selection import train_test_split

from bench.commands import run_sweeps
from lrsweep.sweeps.results.ranking import trained_config
from lrsweep.sweeps.results.retrain import score_over_seeds
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import ScheduleConfig, TrainConfig, load_dataset
from lrsweep.trainer.data import Dataset
from lrsweep.trainer.training import Tensors

TUTORIAL = TrainConfig(ScheduleConfig("constant", {}), lr=0.1, momentum=0.0)
COLUMNS = (
    "default export",
    "untuned tutorial",
    "raw best trial",
    "single-split raw best",
    "median trial",
    "ceiling",
)


@dataclass(frozen=True)
class SplitResult:
    """Mean unseen-row accuracy of each candidate on one outer split, and the sweep's time."""

    scores: dict[str, float]
    sweep_s: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="ionosphere CSV (default $IONOSPHERE_CSV or OpenML)")
    parser.add_argument("--splits", type=int, default=3, help="outer splits (default 3)")
    parser.add_argument("--test-fraction", type=float, default=0.4, help="default 0.4")
    parser.add_argument("--trials", type=int, default=100, help="sweep trials (default 100)")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds (default 5)")
    parser.add_argument("run_flags", nargs="*", help="extra `sweeps run` flags, after --")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    results = [
        evaluate_split(dataset, split, args.test_fraction, args.trials, args.seeds, args.run_flags)
        for split in range(args.splits)
    ]
    print_table(results, args)


def evaluate_split(
    dataset: Dataset,
    split: int,
    test_fraction: float,
    trials: int,
    seeds: int,
    run_flags: list[str],
) -> SplitResult:
    train_rows, test_rows = train_test_split(
        np.arange(len(dataset)),
        test_size=test_fraction,
        random_state=1000 + split,
        stratify=dataset.labels,
    )
    train_set, test_set = dataset.take(np.sort(train_rows)), dataset.take(np.sort(test_rows))
    with TemporaryDirectory(prefix="lrsweep-nested-") as folder:
        work = Path(folder)
        train_csv, test_csv = (
            _write_csv(train_set, work / "train.csv"),
            _write_csv(test_set, work / "test.csv"),
        )
        # A population run trains its --population members instead of --trials.
        population = any(flag.split("=")[0] == "--population" for flag in run_flags)
        size = [] if population else ["--trials", str(trials)]
        started = time.perf_counter()
        run_sweeps(work, "run", "--data", train_csv, *size, "--quiet", *run_flags)
        sweep_s = time.perf_counter() - started
        run_sweeps(work, "export", "--study", "lrsweep", "--out", "raw.json")
        single = work / "single"
        single.mkdir()
        # Its own robust choice is not scored here: one candidate, one seed keeps it cheap.
        run_sweeps(
            single,
            "run",
            "--data",
            train_csv,
            *size,
            "--quiet",
            *run_flags,
            "--folds",
            "1",
            "--top",
            "1",
            "--seeds",
            "1",
        )
        run_sweeps(single, "export", "--study", "lrsweep", "--out", str(work / "single.json"))
        (work / "tutorial.json").write_text(json.dumps(TUTORIAL.to_json_dict()))
        scores = {
            name: _unseen_accuracy(work, config, train_csv, test_csv, seeds)
            for name, config in (
                ("default export", "best.json"),
                ("untuned tutorial", "tutorial.json"),
                ("raw best trial", "raw.json"),
                ("single-split raw best", "single.json"),
            )
        }
        tensors = Tensors.from_arrays(train_set, test_set, _cpu())
        scores.update(_study_spread(work / "lrsweep.db", tensors, seeds))
    line = ", ".join(f"{name} {scores[name]:.4f}" for name in COLUMNS)
    print(f"split {split}: {line} (sweep {sweep_s:.1f}s)", file=sys.stderr, flush=True)
    return SplitResult(scores, sweep_s)


def _study_spread(database: Path, tensors: Tensors, seeds: int) -> dict[str, float]:
    """Every completed trial of the study scored on the unseen rows: the median and the best."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{database}")
    try:
        study = optuna.load_study(study_name="lrsweep", storage=storage)
        settings = StudySettings.of_study(study)
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    finally:
        storage.engine.dispose()
    configs = [trained_config(settings, trial) for trial in complete]
    means = [scores.mean for scores in score_over_seeds(configs, [tensors], seeds)]
    return {"median trial": statistics.median(means), "ceiling": max(means)}


def _unseen_accuracy(work: Path, config: str, train_csv: str, test_csv: str, seeds: int) -> float:
    report = run_sweeps(
        work,
        "train",
        "--config",
        config,
        "--data",
        train_csv,
        "--test-csv",
        test_csv,
        "--seeds",
        str(seeds),
    )
    return float(json.loads(report)["mean_accuracy"])


def _write_csv(dataset: Dataset, path: Path) -> str:
    """The ionosphere layout: 34 features, then the g/b label, no header."""
    labels = np.where(dataset.labels > 0.5, "g", "b")
    rows = [
        ",".join([*(repr(float(v)) for v in features), label])
        for features, label in zip(dataset.features, labels, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _cpu():  # type: ignore[no-untyped-def]
    import torch

    return torch.device("cpu")


def print_table(results: list[SplitResult], args: argparse.Namespace) -> None:
    flags = " ".join(args.run_flags) or "defaults"
    print(
        f"nested benchmark: {args.splits} stratified outer splits, {args.test_fraction:.0%} of "
        f"rows unseen; `sweeps run --trials {args.trials}` ({flags}); mean of {args.seeds} "
        "training seeds on the unseen rows"
    )
    print("| split | " + " | ".join(COLUMNS) + " | sweep s |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    for index, result in enumerate(results):
        cells = " | ".join(f"{result.scores[name]:.4f}" for name in COLUMNS)
        print(f"| {index} | {cells} | {result.sweep_s:.1f} |")
    means = " | ".join(
        f"**{statistics.fmean(r.scores[name] for r in results):.4f}**" for name in COLUMNS
    )
    sweep = statistics.fmean(r.sweep_s for r in results)
    print(f"| mean | {means} | {sweep:.1f} |")


if __name__ == "__main__":
    main()
