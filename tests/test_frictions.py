"""The everyday frictions a newcomer hit (issue 23), each through the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd

from conftest import opened_storage, run_sweeps


def test_a_mistyped_label_column_names_the_closest_columns(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    data = tmp_path / "digits.csv"
    frame = pd.read_csv(sklearn_csv("wine")).rename(columns={"target": "cultivar"})
    frame.to_csv(data, index=False)
    result = run_sweeps(
        "run", "--data", str(data), "--label-column", "cultivr", "--trials", "2", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data file {data} has no column 'cultivr' (did you mean 'cultivar'?)"
    ]
    assert not (tmp_path / "lrsweep.db").exists()


def test_a_new_study_names_its_metric_validation_accuracy(tmp_path: Path, data_path: Path) -> None:
    """Optuna's charts and the dashboard label the value with the study's metric name."""
    worker = run_sweeps(
        "worker", "--study", "m", "--storage", str(tmp_path / "m.db"), "--data", str(data_path),
        "--trials", "2", "--epochs", "2", "--folds", "1", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'm.db'}") as storage:
        study = optuna.load_study(study_name="m", storage=storage)
        assert study.metric_names == ["validation accuracy"]


def test_run_says_it_resumes_and_exports_a_finished_study_without_retraining(
    tmp_path: Path, data_path: Path
) -> None:
    flags = ("--data", str(data_path), "--epochs", "3", "--folds", "1", "--quiet")
    first = run_sweeps("run", *flags, "--trials", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "resuming" not in first.stderr
    resumed = run_sweeps("run", *flags, "--trials", "6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming study 'lrsweep' with 4 finished trials (target 6)" in resumed.stderr
    chosen = json.loads((tmp_path / "best.json").read_text())
    (tmp_path / "best.json").unlink()

    again = run_sweeps("run", *flags, "--trials", "6", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        "study 'lrsweep' already has 6 finished trials (target 6): nothing to train"
        in again.stderr
    )
    assert "robust choice" not in again.stderr  # nothing retrained
    assert "the study's recorded choice" in again.stdout
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["source"] == chosen["source"]
    assert exported["selection"] == chosen["selection"]
    with opened_storage(f"sqlite:///{tmp_path / 'lrsweep.db'}") as storage:
        assert len(optuna.load_study(study_name="lrsweep", storage=storage).trials) == 6


def test_train_reads_the_file_the_sweep_read_or_names_it_when_it_is_gone(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    """Without --data, `sweeps train` uses the export's `data.path`, not ionosphere."""
    data = tmp_path / "wine.csv"
    data.write_bytes(sklearn_csv("wine").read_bytes())
    swept = run_sweeps(
        "run", "--data", str(data), "--trials", "2", "--epochs", "2", "--folds", "1", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert json.loads((tmp_path / "best.json").read_text())["data"]["path"] == str(data)
    trained = run_sweeps("train", "--config", "best.json", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert report["train_rows"] + report["test_rows"] == 178  # wine's rows
    data.rename(tmp_path / "moved.csv")
    gone = run_sweeps("train", "--config", "best.json", cwd=tmp_path)
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines() == [
        f"error: best.json was swept on {data}, which is not here: give --data CSV"
    ]
