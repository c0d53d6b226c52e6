"""What the robust choice retrains after a sweep: the candidates the data cannot tell from the
best, over the seeds that fit its time budget (issue 18)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sweeps.retrain import score_over_seeds
from sweeps.selection import overlapping_the_best, reevaluation_folds, robust_choice_budget
from sweeps.settings import StudySettings
from trainer import ScheduleConfig, TrainConfig, load_dataset, split_tensors, validation_rows


def _trial(number: int, accuracy: float) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(value=accuracy, user_attrs={"validation_accuracy": accuracy})
    trial.number = number
    return trial


@given(
    accuracies=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10),
    rows=st.integers(10, 100_000),
)
def test_candidates_are_the_trials_whose_95_percent_interval_overlaps_the_best(
    accuracies: list[float], rows: int
) -> None:
    ranked = sorted(accuracies, reverse=True)
    trials = [_trial(number, accuracy) for number, accuracy in enumerate(ranked)]

    def half_width(accuracy: float) -> float:
        p = min(max(accuracy, 1 / rows), 1 - 1 / rows)
        return 1.96 * math.sqrt(p * (1 - p) / rows)

    lowest = ranked[0] - half_width(ranked[0])
    expected = [t.number for t in trials if t.value + half_width(t.value) >= lowest]
    chosen = [t.number for t in overlapping_the_best(trials, rows)]
    assert chosen == expected and chosen[0] == 0  # the best is always a candidate


def test_more_validation_rows_leave_fewer_candidates() -> None:
    trials = [_trial(n, accuracy) for n, accuracy in enumerate([0.93, 0.925, 0.92, 0.90])]
    # Ionosphere's 351 rows cannot tell these apart; 6,000 rows of a larger table can.
    assert len(overlapping_the_best(trials, 351)) == 4
    assert [t.number for t in overlapping_the_best(trials, 6_000)] == [0, 1, 2]
    assert [t.number for t in overlapping_the_best(trials, 1_000_000)] == [0]


def test_seeds_stop_at_the_budget_and_each_is_said(data_path: Path) -> None:
    dataset = load_dataset(data_path)
    tensors = split_tensors(dataset, validation_rows(dataset), "cpu")
    configs = [TrainConfig(ScheduleConfig("constant", {}), lr=0.1, epochs=2)]
    seen: list[int] = []
    scores = score_over_seeds(
        configs, [tensors], 4, budget_s=0.0, on_seed=lambda seed, _: seen.append(seed)
    )
    assert len(scores[0].runs) == 1 and seen == [0]  # the first seed always runs
    seen.clear()
    scores = score_over_seeds(
        configs, [tensors], 3, budget_s=None, on_seed=lambda seed, _: seen.append(seed)
    )
    assert [run.seed for run in scores[0].runs] == [0, 1, 2] and seen == [0, 1, 2]


def test_the_budget_is_a_quarter_of_the_sweep_or_15_seconds() -> None:
    assert robust_choice_budget(5.0) == 15.0
    assert robust_choice_budget(400.0) == 100.0


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
