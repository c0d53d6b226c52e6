"""`sweeps report` on a real study: a self-contained HTML page and PNG charts, and charts that
draw what the torch schedulers really do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_real_image, run_sweeps, study_trials, torch_lrs
from lrsweep.storage import StorageSettings
from lrsweep.sweeps.results import figures
from lrsweep.sweeps.results.ranking import top_trials, trial_config
from lrsweep.sweeps.study.open import OpenStudy, create_or_join, open_existing
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import load_dataset

pytestmark = pytest.mark.slow

CHART_FILES = (
    "history.png",
    "importances.png",
    "intermediate_values.png",
    "accuracy_by_scheduler.png",
    "lr_curves.png",
)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, data_path: Path) -> Path:
    """A folder holding lrsweep.db with a 14-trial study `charted`, every trial completed."""
    folder = tmp_path_factory.mktemp("report")
    made = run_sweeps(
        "worker",
        *("--study", "charted", "--data", str(data_path), "--trials", "14"),
        *("--epochs", "8", "--pruner", "none", "--quiet"),
        cwd=folder,
    )
    assert made.returncode == 0, made.stderr
    return folder


def _open(folder: Path) -> OpenStudy:
    return open_existing(StorageSettings(url=f"sqlite:///{folder / 'lrsweep.db'}"), "charted")


def test_report_writes_html_and_real_pngs(swept: Path, disposing: Callable[[Any], Any]) -> None:
    result = run_sweeps("report", "--study", "charted", "--out", "rep", "--top", "3", cwd=swept)
    assert result.returncode == 0, result.stderr
    out = swept / "rep"
    for name in CHART_FILES:
        assert_real_image(out / name)
    page = (out / "report.html").read_text()
    assert "<script src=" not in page  # self-contained: plotly.js is inlined, opens offline
    assert page.count("Plotly.newPlot") == len(CHART_FILES)
    opened = disposing(_open(swept))
    for trial in top_trials(opened, 3):
        kind = trial.params["scheduler"]
        assert f"#{trial.number} {kind} ({trial.value:.3f})" in page


def test_lr_chart_draws_the_real_torch_schedules(
    swept: Path, disposing: Callable[[Any], Any]
) -> None:
    opened = disposing(_open(swept))
    top = top_trials(opened, 4)
    chart = figures.top_lr_schedules(opened, top)
    assert len(chart.interactive.data) == len(top)
    for trace, trial in zip(chart.interactive.data, top, strict=True):
        config = trial_config(opened, trial)
        expected = torch_lrs(config.schedule, config.lr, config.epochs)
        assert list(trace.y) == pytest.approx(expected, rel=1e-6)
        assert trace.name.startswith(f"#{trial.number} ")


def test_learning_curves_are_the_stored_epoch_accuracies(
    swept: Path, disposing: Callable[[Any], Any]
) -> None:
    opened = disposing(_open(swept))
    top = top_trials(opened, 2)
    chart = figures.top_learning_curves(opened, top)
    for trace, trial in zip(chart.interactive.data, top, strict=True):
        stored = [trial.intermediate_values[epoch] for epoch in range(8)]
        assert list(trace.y) == pytest.approx(stored)


def test_report_on_a_study_without_completed_trials_is_refused(
    tmp_path: Path, data_path: Path, disposing: Callable[[Any], Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'lrsweep.db'}"
    dataset = load_dataset(data_path)
    disposing(
        create_or_join(
            StorageSettings(url=url),
            "empty",
            StudySettings(data_sha256=dataset.sha256),
            dataset,
            explicit=frozenset(),
            enqueue_baselines=False,
        )
    )
    assert study_trials(url, "empty") == []
    result = run_sweeps("report", "--study", "empty", "--out", "rep", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: study 'empty' has no completed trial yet"
    assert not (tmp_path / "rep").exists()


def test_the_report_shows_the_chosen_trial_even_outside_its_top(
    swept: Path, tmp_path: Path, disposing: Callable[[Any], Any]
) -> None:
    import shutil

    from lrsweep.sweeps.results.selection import SELECTION_ATTR

    shutil.copy(swept / "lrsweep.db", tmp_path / "lrsweep.db")
    opened = disposing(_open(tmp_path))
    ranked = top_trials(opened, 14)
    chosen = ranked[-1]  # the study's lowest-ranked completed trial
    opened.study.set_user_attr(SELECTION_ATTR, {"chosen_trial": chosen.number})
    result = run_sweeps("report", "--study", "charted", "--out", "rep", "--top", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert f"<td>{chosen.number} (chosen)</td>" in page
    assert f"#{chosen.number} " in page  # drawn in the learning-curve and lr charts too
