"""Cross-validated trials, the objective's tie-break, and the robust choice `sweeps run` makes:
through the real CLI, on the real ionosphere data."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import opened_storage, run_sweeps, study_trials
from lrsweep.sweeps.study.objective import EpochScores, objective
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import load_dataset
from lrsweep.trainer.training import EpochResult

pytestmark = pytest.mark.slow


def test_cross_validated_trials_report_fold_means_on_folds_fixed_at_creation(
    tmp_path: Path, data_path: Path
) -> None:
    common = ("--study", "cv", "--epochs", "5", "--pruner", "none", "--data", str(data_path))
    first = run_sweeps("worker", *common, "--folds", "3", "--trials", "6", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # A second worker joins with no --folds: it takes the study's folds, not the default.
    joined = run_sweeps("worker", *common, "--trials", "10", "--quiet", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    status = json.loads(run_sweeps("status", "--study", "cv", "--json", cwd=tmp_path).stdout)
    assert status["settings"]["folds"] == 3

    with opened_storage(str(tmp_path / "lrsweep.db")) as storage:
        settings = StudySettings.of_study(optuna.load_study(study_name="cv", storage=storage))
    folds = [set(rows) for rows in settings.fold_rows]
    dataset = load_dataset(data_path)
    assert len(folds) == 3 and set().union(*folds) == set(range(len(dataset)))
    assert sum(len(rows) for rows in folds) == len(dataset)  # disjoint
    share = dataset.labels.mean()
    for rows in folds:  # stratified: each fold keeps the class balance
        assert abs(dataset.labels[sorted(rows)].mean() - share) < 0.02

    trials = study_trials(str(tmp_path / "lrsweep.db"), "cv")
    assert len(trials) == 10
    for trial in trials:
        accuracies = trial.user_attrs["fold_accuracies"]
        assert len(accuracies) == 3
        assert trial.user_attrs["validation_accuracy"] == pytest.approx(
            statistics.fmean(accuracies)
        )
        expected = objective(
            trial.user_attrs["validation_accuracy"], trial.user_attrs["validation_loss"]
        )
        assert trial.value == pytest.approx(expected, abs=1e-12)
        assert trial.intermediate_values[4] == trial.value


@given(
    rows=st.integers(1, 1000),
    hits=st.tuples(st.integers(0, 1000), st.integers(0, 1000)),
    losses=st.tuples(
        st.floats(0, 1e6) | st.just(math.inf) | st.just(math.nan),
        st.floats(0, 1e6) | st.just(math.inf) | st.just(math.nan),
    ),
)
def test_the_tie_break_orders_equal_accuracies_by_loss_and_nothing_else(
    rows: int, hits: tuple[int, int], losses: tuple[float, float]
) -> None:
    (a, b), (loss_a, loss_b) = (min(h, rows) / rows for h in hits), losses
    if a != b:
        assert (objective(a, loss_a) > objective(b, loss_b)) == (a > b)
    elif min(loss_a, 10) < min(loss_b, 10) and math.isfinite(loss_a) and math.isfinite(loss_b):
        assert objective(a, loss_a) > objective(b, loss_b)


def test_run_exports_the_robust_choice_and_status_shows_both(
    tmp_path: Path, data_path: Path
) -> None:
    result = run_sweeps(
        "run",
        *("--data", str(data_path), "--trials", "12", "--epochs", "8", "--workers", "1"),
        *("--top", "4", "--seeds", "2", "--quiet"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    selection = document["selection"]
    status = json.loads(run_sweeps("status", "--study", "lrsweep", "--json", cwd=tmp_path).stdout)
    choice = status["choice"]
    assert choice["chosen"]["trial_number"] == selection["chosen_trial"]
    assert document["source"]["trial_number"] == selection["chosen_trial"]
    chosen_trial = next(
        t
        for t in study_trials(str(tmp_path / "lrsweep.db"), "lrsweep")
        if t.number == selection["chosen_trial"]
    )
    assert (
        document["source"]["validation_accuracy"] == chosen_trial.user_attrs["validation_accuracy"]
    )
    assert document["source"]["objective"] == chosen_trial.value
    assert document["source"]["folds"] == 5
    assert choice["raw_best"]["trial_number"] == status["best"]["trial_number"]
    assert len(selection["candidates"]) == 4
    means = {c["trial_number"]: c["mean_accuracy"] for c in selection["candidates"]}
    assert choice["chosen"]["mean_accuracy"] == max(means.values())
    assert "chosen: trial" in result.stdout and "the raw best trial" in result.stdout
    report = run_sweeps("report", "--study", "lrsweep", "--out", "rep", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    chosen = choice["chosen"]
    assert f"chosen: trial {chosen['trial_number']} {chosen['mean_accuracy']:.4f}" in page


def test_equal_fold_means_split_differently_still_rank_by_loss() -> None:
    """Accuracies are exact counts, so two trials with the same mean over unequal folds are
    equal and the lower validation loss wins (float32 means used to decide such ties)."""
    sizes = (71, 70, 70, 70, 70)

    def scores(hits: tuple[int, ...], loss: float) -> EpochScores:
        return EpochScores.of(
            [EpochResult(4, k / n, 0.3, 0.1, loss) for k, n in zip(hits, sizes, strict=True)]
        )

    lower_loss = scores((66, 65, 65, 64, 66), 0.20)
    higher_loss = scores((66, 66, 64, 64, 66), 0.30)
    assert lower_loss.objective > higher_loss.objective


def test_a_validation_fraction_asks_for_one_split(tmp_path: Path, data_path: Path) -> None:
    made = run_sweeps(
        "worker",
        *("--study", "split", "--validation-fraction", "0.2", "--trials", "2", "--epochs", "2"),
        *("--data", str(data_path), "--quiet"),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    status = json.loads(run_sweeps("status", "--study", "split", "--json", cwd=tmp_path).stdout)
    assert status["settings"]["folds"] == 1
