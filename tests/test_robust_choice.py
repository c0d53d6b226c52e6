"""What the robust choice retrains after a sweep: the candidates the data cannot tell from the
best, over the seeds that fit its time budget (issue 18)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from conftest import opened_storage, run_sweeps
from lrsweep.sweeps.results.retrain import OverBudget, score_over_seeds
from lrsweep.sweeps.results.selection import (
    SweepPace,
    affordable_candidates,
    not_told_apart,
    reevaluation_folds,
    robust_choice_budget,
)
from lrsweep.sweeps.study.settings import StudySettings, default_folds
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.sweeps.worker.proposals import propose
from lrsweep.trainer import (
    InvalidInputError,
    ScheduleConfig,
    TrainConfig,
    load_dataset,
    split_tensors,
    validation_rows,
)
from lrsweep.trainer.data import DataSchema, Dataset

SCHEMA = DataSchema(("x",), ("0", "1"), "1")


def _trial(number: int, accuracy: float) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(value=accuracy, user_attrs={"validation_accuracy": accuracy})
    trial.number = number
    return trial


@pytest.mark.parametrize(
    ("accuracies", "rows", "kept"),
    [
        # best 0.94 on 351 rows: se 0.0127; 0.895 (se 0.0164) differs by 0.045 > 1.96 x 0.0207
        ([0.94, 0.92, 0.905, 0.895], 351, 3),
        # 6,000 rows: se 0.0031 and 0.0034; 0.93 differs by 0.010 > 1.96 x 0.0046 = 0.0090
        ([0.94, 0.932, 0.93], 6_000, 2),
        ([0.95, 0.95, 0.95], 50, 3),  # ties are never told apart
        ([1.0, 0.99], 351, 2),  # a perfect score keeps an error of one row
        ([1.0, 0.90], 351, 1),
    ],
)
def test_candidates_are_the_trials_a_95_percent_test_cannot_tell_from_the_best(
    accuracies: list[float], rows: int, kept: int
) -> None:
    trials = [_trial(number, accuracy) for number, accuracy in enumerate(accuracies)]
    assert [t.number for t in not_told_apart(trials, rows)] == list(range(kept))


def test_every_seed_is_said_and_a_budget_of_nothing_trains_nothing(data_path: Path) -> None:
    dataset = load_dataset(data_path)
    tensors = split_tensors(dataset, validation_rows(dataset), "cpu")
    configs = [TrainConfig(ScheduleConfig("constant", {}), lr=0.1, epochs=3)]
    seen: list[int] = []
    with pytest.raises(OverBudget):  # measured after the second epoch
        score_over_seeds(
            configs, [tensors], 4, budget_s=0.0, on_seed=lambda seed, _: seen.append(seed)
        )
    assert seen == []
    scores = score_over_seeds(
        configs, [tensors], 3, budget_s=None, on_seed=lambda seed, _: seen.append(seed)
    )
    assert [run.seed for run in scores[0].runs] == [0, 1, 2] and seen == [0, 1, 2]


def test_seeds_run_while_the_next_would_end_within_the_budget(
    data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each epoch takes 1 s on a fake clock. One-epoch seeds: with 3.5 s, the fourth would end
    at 4 s. Five-epoch seeds: the first two epochs predict 5 s, so with 3.5 s the first seed
    stops there and nothing is ranked; with 5 s it fits, and so do seeds no longer checked
    when the first seed need not fit (an explicit --top)."""
    import types

    import lrsweep.sweeps.results.retrain

    clock = [0.0]
    real_train_batch = lrsweep.sweeps.results.retrain.train_batch
    epochs_trained: list[list[int]] = []

    def one_second_per_epoch(*args: Any, on_epoch: Any = None, **kwargs: Any) -> Any:
        def tick(results: Any) -> Any:
            clock[0] += 1.0
            return on_epoch(results) if on_epoch is not None else set()

        results = real_train_batch(*args, on_epoch=tick, **kwargs)
        epochs_trained.append([len(result.history) for result in results])
        return results

    monkeypatch.setattr(lrsweep.sweeps.results.retrain, "train_batch", one_second_per_epoch)
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0])
    monkeypatch.setattr(lrsweep.sweeps.results.retrain, "time", fake_time)
    dataset = load_dataset(data_path)
    tensors = split_tensors(dataset, validation_rows(dataset), "cpu")
    configs = [TrainConfig(ScheduleConfig("constant", {}), lr=0.1, epochs=1)]
    said: list[tuple[int, float]] = []
    scores = score_over_seeds(
        configs, [tensors], 5, budget_s=3.5, on_seed=lambda *seed_at: said.append(seed_at)
    )
    assert [run.seed for run in scores[0].runs] == [0, 1, 2]
    assert said == [(0, 1.0), (1, 2.0), (2, 3.0)]
    clock[0], five_epochs = 0.0, [TrainConfig(ScheduleConfig("constant", {}), lr=0.1, epochs=5)]
    epochs_trained.clear()
    with pytest.raises(OverBudget) as over:
        score_over_seeds(five_epochs * 2, [tensors], 5, budget_s=3.5)
    assert over.value.predicted_s == 5.0
    assert epochs_trained == [[2, 2]]  # both members stopped after the second epoch
    clock[0] = 0.0
    assert len(score_over_seeds(five_epochs, [tensors], 5, budget_s=5.0)[0].runs) == 1
    clock[0] = 0.0
    unchecked = score_over_seeds(
        five_epochs, [tensors], 5, budget_s=3.5, first_seed_in_budget=False
    )
    assert len(unchecked[0].runs) == 1  # the first seed ran whole; a second would end at 10 s


def test_the_choice_affords_what_one_seed_retrains_in_a_quarter_of_the_sweep() -> None:
    assert robust_choice_budget(5.0) == 1.25
    assert robust_choice_budget(400.0) == 100.0
    # 10 s on 2 workers for 1,000 model-epochs: 0.02 s per model-epoch in one process
    pace = SweepPace(seconds=10.0, workers=2, model_epochs=1000)
    each_s = pace.seconds_per_candidate(folds=5, epochs=50)
    assert each_s == pytest.approx(5.0)
    trials = [_trial(number, 0.9) for number in range(10)]
    assert affordable_candidates(trials, each_s, budget_s=500.0) == trials
    assert affordable_candidates(trials, each_s, budget_s=12.0) == trials[:2]
    assert affordable_candidates(trials, each_s, budget_s=4.9) == []


def test_after_a_sweep_the_candidates_are_what_one_seed_retrains_in_its_budget(
    tmp_path: Path, data_path: Path
) -> None:
    """The note says how many candidates one seed retrains in a quarter of the sweep at its
    own pace; the export retrains exactly those, or, under 2, none, and says why."""
    result = run_sweeps(
        "run", "--trials", "30", "--epochs", "5", "--workers", "1", "--data", str(data_path),
        "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    note = re.search(
        r"note: robust choice among (\d+) of the top 10 trials \(those a 95% test on 351 "
        r"validation rows cannot tell from the best; (\d+) of them fit one seed in ([\d.]+) s at "
        r"the sweep's pace\)",
        result.stderr,
    )
    assert note is not None, result.stderr
    candidates, fit = int(note[1]), int(note[2])
    sweep_s = float(re.search(r"sweep wall time ([\d.]+)s", result.stdout)[1])  # type: ignore[index]
    assert float(note[3]) == pytest.approx(sweep_s / 4, abs=0.3)
    selection = json.loads((tmp_path / "best.json").read_text())["selection"]
    method = selection["method"]
    if fit < 2:  # the sweep's pace says no 2 fit
        assert candidates == 1 and selection["candidates"] == []
        assert method.startswith("no retraining: retraining 2 candidates once would take")
    elif "note: robust choice skipped" in result.stderr:  # its first epoch said so
        assert candidates == fit and selection["candidates"] == []
        assert method.startswith(f"no retraining: one seed of {fit} candidates would take")
    else:
        assert candidates == fit == len(selection["candidates"])
        assert 1 <= selection["seeds"] <= 5
        assert f"robust choice: seed 1 of up to 5 retrained ({fit} candidates)" in result.stderr


@pytest.mark.parametrize(("rows", "folds"), [(351, 5), (9000, 1)])
def test_a_study_of_one_split_is_re_ranked_on_the_folds_its_data_would_choose(
    rows: int, folds: int, data_path: Path, tmp_path: Path
) -> None:
    if rows == 351:
        dataset = load_dataset(data_path)
    else:
        import pandas as pd
        from sklearn.datasets import make_classification

        features, labels = make_classification(n_samples=rows, n_features=8, random_state=0)
        pd.DataFrame(features).assign(label=labels).to_csv(tmp_path / "big.csv", index=False)
        dataset = load_dataset(tmp_path / "big.csv")
    study = StudySettings(dataset.sha256, folds=1).fixed_at_creation(dataset)
    again = reevaluation_folds(study, dataset)
    assert again.folds == folds
    if folds == 1:  # one split, drawn anew: the same size, other rows
        assert len(again.validation_rows) == len(study.validation_rows)
        assert again.validation_rows != study.validation_rows
    else:
        assert sorted(row for fold in again.fold_rows for row in fold) == list(range(rows))


@pytest.mark.parametrize(
    ("trials", "folds", "device", "expected"),
    [
        (100, 5, "cpu", 6),  # ionosphere's default: 16 rounds, 30 models a batch
        (50, 5, "cpu", 4),  # 3 trials would be 15 models
        (50, 1, "cpu", 16),  # a large table's one split: 3 models would not fill a batch
        (10, 1, "cpu", 10),  # never more than the target
        (1000, 1, "cpu", 62),
        (5000, 1, "cpu", 64),  # the CPU's cap
        (100_000, 1, "cuda", 4096),
    ],
)
def test_a_batch_holds_16_rounds_of_the_study_but_at_least_16_models(
    trials: int, folds: int, device: str, expected: int
) -> None:
    import torch

    options = WorkerOptions(target_trials=trials)
    assert options.trials_per_batch_for(torch.device(device), folds) == expected
    explicit = WorkerOptions(target_trials=trials, trials_per_batch=3)
    assert explicit.trials_per_batch_for(torch.device(device), folds) == 3


@pytest.mark.parametrize(("rows", "folds"), [(8_330, 5), (8_331, 1)])
def test_one_split_from_2500_validation_rows_on(rows: int, folds: int) -> None:
    labels = np.arange(rows, dtype=np.float32) % 2
    dataset = Dataset(np.zeros((rows, 1), np.float32), labels, "x.csv", "0", SCHEMA)
    assert default_folds(dataset)[0] == folds


def test_settings_a_newer_release_wrote_are_refused_not_ignored() -> None:
    document = StudySettings("0").to_dict()
    with pytest.raises(
        InvalidInputError, match="settings name optimizer, which this lrsweep does not know"
    ):
        StudySettings.from_dict({**document, "optimizer": "adam"})


@pytest.mark.slow
def test_a_best_the_rows_tell_apart_is_exported_without_retraining(
    tmp_path: Path, data_path: Path
) -> None:
    common = ("--data", str(data_path), "--quiet")
    made = run_sweeps(
        "worker", "--study", "lrsweep", "--trials", "1", "--epochs", "2", "--folds", "1",
        "--no-baselines", *common, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with opened_storage(str(tmp_path / "lrsweep.db")) as storage:
        study = optuna.load_study(study_name="lrsweep", storage=storage)
        settings = StudySettings.of_study(study)
        for template, accuracy in zip(
            propose(settings, optuna.samplers.RandomSampler(seed=0), "x", [], 3),
            [0.999, 0.60, 0.55],
            strict=True,
        ):
            study.add_trial(
                optuna.trial.create_trial(
                    value=accuracy,
                    params=template.params,
                    distributions=template.distributions,
                    user_attrs={**template.user_attrs, "validation_accuracy": accuracy},
                )
            )
    result = run_sweeps("run", "--trials", "5", "--workers", "1", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "note: robust choice among 1 of the top 5 trials" in result.stderr
    assert "robust choice: seed" not in result.stderr  # nothing retrained
    selection = json.loads((tmp_path / "best.json").read_text())["selection"]
    assert selection["method"].startswith("no retraining")
    assert selection["chosen_trial"] == 1 and selection["candidates"] == []
    status = run_sweeps("status", "--study", "lrsweep", "--json", cwd=tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["best"]["trial_number"] == 1
    # Asked for seeds, the choice retrains even the lone candidate.
    seeded = run_sweeps(
        "run", "--trials", "5", "--workers", "1", "--seeds", "1", "--out", "s.json", *common,
        cwd=tmp_path,
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    assert "robust choice: seed 1 of 1 retrained (1 candidates)" in seeded.stderr
    # --top 1 names a lone candidate: exported as it is, the reason recorded.
    top_one = run_sweeps(
        "run", "--trials", "4", "--workers", "1", "--top", "1", "--out", "t.json", *common,
        cwd=tmp_path,
    )  # fmt: skip
    assert top_one.returncode == 0, top_one.stderr
    assert "robust choice: seed" not in top_one.stderr
    method = json.loads((tmp_path / "t.json").read_text())["selection"]["method"]
    assert method == "no retraining: --top 1 leaves one candidate, nothing to rank it against"


def test_a_class_of_one_row_is_not_folded_and_the_note_says_why() -> None:
    labels = np.zeros(300, dtype=np.float32)
    labels[0] = 1.0
    dataset = Dataset(np.zeros((300, 1), np.float32), labels, "x.csv", "0", SCHEMA)
    folds, why = default_folds(dataset)
    assert folds == 1
    assert why.endswith("but a class has 1 row: too few to fold")
