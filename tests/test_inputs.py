"""The set-ups a new user tries first, through the CLI: each works, or is refused with one
`error:` line and exit 2 with nothing half-written (issue 17)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import (
    Completed,
    assert_refused,
    opened_storage,
    run_sweeps,
    space_file,
    study_trials,
)
from lrsweep.sweeps.study.open import NewStudy
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.study.space import SearchSpace
from lrsweep.trainer import ScheduleConfig, TrainConfig, load_dataset

pytestmark = pytest.mark.slow

QUICK_RUN = ("--trials", "4", "--epochs", "3", "--workers", "1", "--quiet", "--top", "2")


def test_a_space_that_excludes_the_baselines_skips_them_and_says_so(
    tmp_path: Path, data_path: Path
) -> None:
    space = space_file(tmp_path, "[ranges]\nlr = {low = 0.2, high = 0.5}\n")
    result = run_sweeps(
        "run", "--data", str(data_path), "--space", str(space), *QUICK_RUN, "--seeds", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "baseline" in line]
    assert len(skipped) == 2, result.stderr  # each of the two said once, nothing more
    assert all("lr 0.1 is outside the space's 0.2 to 0.5" in line for line in skipped)
    trials = study_trials(str(tmp_path / "lrsweep.db"), "lrsweep")
    assert len(trials) == 4 and all(0.2 <= t.params["lr"] <= 0.5 for t in trials)
    assert (tmp_path / "best.json").is_file()


def test_a_baseline_inside_the_space_still_runs_first(tmp_path: Path, data_path: Path) -> None:
    space = space_file(
        tmp_path, 'schedulers = ["step", "cosine"]\n[ranges]\nmomentum = [0.85, 0.95]\n'
    )
    result = run_sweeps(
        "worker", "--study", "s", "--data", str(data_path), "--space", str(space),
        "--baselines", "--trials", "3", "--epochs", "2", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "baseline" in line]
    assert notes == [
        "note: tutorial baseline inverse_time skipped: scheduler 'inverse_time' is not in "
        "the search space"
    ]
    first = study_trials(str(tmp_path / "lrsweep.db"), "s")[0]
    assert first.params == {
        "scheduler": "step", "lr": 0.1, "momentum": 0.9, "step.step_size": 10,
        "step.gamma": 0.5,
    }  # fmt: skip


def _rare_class_csv(tmp_path: Path, data_path: Path, rare_rows: int) -> Path:
    """Ionosphere with only `rare_rows` rows of class b: 5 folds cannot hold it."""
    lines = data_path.read_text().splitlines()
    bad = [line for line in lines if line.endswith(",b")][:rare_rows]
    path = tmp_path / "rare.csv"
    path.write_text("\n".join([line for line in lines if line.endswith(",g")] + bad) + "\n")
    return path


@pytest.mark.parametrize("split", [("--folds", "1"), ("--validation-fraction", "0.3")])
def test_one_split_on_a_rare_class_sweeps_and_re_ranks_on_the_folds_it_allows(
    split: tuple[str, str], tmp_path: Path, data_path: Path
) -> None:
    rare = _rare_class_csv(tmp_path, data_path, rare_rows=3)
    result = run_sweeps(
        "run", "--data", str(rare), *split, *QUICK_RUN, "--seeds", "1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    selection = json.loads((tmp_path / "best.json").read_text())["selection"]
    assert selection["folds"] == 3  # the smallest class's rows, not the default 5
    with opened_storage(str(tmp_path / "lrsweep.db")) as storage:
        study = optuna.load_study(study_name="lrsweep", storage=storage)
        assert study.user_attrs["lrsweep.selection"]["folds"] == 3
        states = {t.state for t in study.get_trials(deepcopy=False)}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


def test_five_folds_on_a_rare_class_are_refused_before_anything_is_written(
    tmp_path: Path, data_path: Path
) -> None:
    rare = _rare_class_csv(tmp_path, data_path, rare_rows=3)
    before = set(tmp_path.iterdir())
    result = run_sweeps("run", "--data", str(rare), "--folds", "5", *QUICK_RUN, cwd=tmp_path)
    assert_refused(result, "--folds must be 1, or between 2 and 3")
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("rows", "folds", "why"),
    [
        (351, 5, "5-fold cross-validation: one split would hold out 106 rows (accuracy "
         "standard error up to 4.86%); --folds 1 for one split"),
        (9000, 1, "one train/validation split: one split would hold out 2700 rows (accuracy "
         "standard error up to 0.96%); --folds F to cross-validate"),
    ],
)  # fmt: skip
def test_a_new_study_takes_its_folds_from_the_noise_of_one_split(
    rows: int, folds: int, why: str, tmp_path: Path, data_path: Path
) -> None:
    if rows == 351:
        data = data_path
    else:
        from sklearn.datasets import make_classification

        features, labels = make_classification(n_samples=rows, n_features=8, random_state=0)
        data = tmp_path / "big.csv"
        pd.DataFrame(features).assign(label=labels).to_csv(data, index=False)
    result = run_sweeps(
        "worker", "--study", "s", "--data", str(data), "--trials", "1", "--epochs", "1",
        "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"note: {why}" in result.stderr.splitlines()
    with opened_storage(str(tmp_path / "lrsweep.db")) as storage:
        settings = StudySettings.of_study(optuna.load_study(study_name="s", storage=storage))
    assert (settings.folds, settings.chosen_by_data) == (folds, why)


SPARE_HEAD = """
import torch
from torch import nn


class SpareHead(nn.Module):
    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.body = nn.Linear(n_features, n_outputs)
        self.spare = nn.Linear(n_features, 3)  # never used by forward

    def forward(self, x):
        return self.body(x)


def spare_head(n_features, n_outputs):
    return SpareHead(n_features, n_outputs)


class Detached(nn.Module):
    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.body = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.body(x).detach()


def detached(n_features, n_outputs):
    return Detached(n_features, n_outputs)
"""


def _user_package(folder: Path) -> None:
    (folder / "usernets").mkdir()
    (folder / "usernets" / "__init__.py").write_text("")
    (folder / "usernets" / "nets.py").write_text(SPARE_HEAD)


def test_a_model_with_a_parameter_forward_never_uses_sweeps_as_torch_trains_it(
    tmp_path: Path, data_path: Path
) -> None:
    _user_package(tmp_path)
    result = run_sweeps(
        "run", "--data", str(data_path), "--model", "usernets.nets:spare_head", *QUICK_RUN,
        "--seeds", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "handed back" not in result.stderr and "Traceback" not in result.stderr
    trials = study_trials(str(tmp_path / "lrsweep.db"), "lrsweep")
    assert len(trials) == 4
    assert {t.state for t in trials} <= {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    }


def test_a_model_whose_backward_fails_is_refused_before_any_study(
    tmp_path: Path, data_path: Path
) -> None:
    _user_package(tmp_path)
    before = set(tmp_path.iterdir())
    result = run_sweeps(
        "run", "--data", str(data_path), "--model", "usernets.nets:detached", *QUICK_RUN,
        cwd=tmp_path,
    )  # fmt: skip
    assert_refused(result, "--model usernets.nets:detached: a backward pass")
    assert set(tmp_path.iterdir()) == before


def _train(tmp_path: Path, data: Path, *extra: str) -> Completed:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(TrainConfig(ScheduleConfig("constant", {}), lr=0.01, epochs=2).to_json_dict())
    )
    return run_sweeps(
        "train", "--config", str(config), "--data", str(data), "--seeds", "1", *extra,
        cwd=tmp_path,
    )  # fmt: skip


def test_a_test_file_is_matched_to_the_training_columns_by_name(
    tmp_path: Path, sklearn_csv: Callable[[str], Path]
) -> None:
    cancer = pd.read_csv(sklearn_csv("breast_cancer"))
    cancer.to_csv(tmp_path / "train.csv", index=False)
    cancer.to_csv(tmp_path / "same.csv", index=False)
    columns = list(cancer.columns)
    cancer[columns[::-1]].to_csv(tmp_path / "reversed.csv", index=False)
    reports = [
        _train(tmp_path, tmp_path / "train.csv", "--test-csv", str(tmp_path / name))
        for name in ("same.csv", "reversed.csv")
    ]
    assert [r.returncode for r in reports] == [0, 0], reports[1].stderr
    same, reordered = (json.loads(r.stdout)["mean_accuracy"] for r in reports)
    assert reordered == same
    cancer.drop(columns=[columns[3]]).assign(extra=1.0).to_csv(
        tmp_path / "renamed.csv", index=False
    )
    renamed = _train(tmp_path, tmp_path / "train.csv", "--test-csv", str(tmp_path / "renamed.csv"))
    assert_refused(renamed, f"other columns than the training data: missing {columns[3]!r}; extra")


def test_a_header_of_numbers_is_read_as_a_header(tmp_path: Path, data_path: Path) -> None:
    frame = pd.read_csv(data_path, header=None)
    frame.to_csv(tmp_path / "numbered.csv", index=False)  # header 0,1,...,34
    years = frame.rename(columns={3: "2019"})
    years.columns = [f"f{c}" if c != "2019" else c for c in years.columns]
    years.to_csv(tmp_path / "years.csv", index=False)
    for name in ("numbered.csv", "years.csv"):
        result = _train(tmp_path, tmp_path / name)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["train_rows"] + report["test_rows"] == 351


def test_a_header_no_rule_can_tell_is_said_with_header_yes(
    tmp_path: Path, data_path: Path
) -> None:
    frame = pd.read_csv(data_path, header=None)
    frame[34] = (frame[34] == "g").astype(int)
    frame.columns = [str(1990 + c) for c in frame.columns]  # years, label included
    frame.to_csv(tmp_path / "years.csv", index=False)
    assert_refused(_train(tmp_path, tmp_path / "years.csv"), "--header yes")
    result = _train(tmp_path, tmp_path / "years.csv", "--header", "yes")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["train_rows"] + report["test_rows"] == 351


def test_a_worker_joins_a_study_read_with_header_yes(tmp_path: Path, data_path: Path) -> None:
    frame = pd.read_csv(data_path, header=None)
    frame[34] = (frame[34] == "g").astype(int)
    frame.columns = [str(1990 + c) for c in frame.columns]
    frame.to_csv(tmp_path / "years.csv", index=False)
    common = ("--study", "h", "--data", str(tmp_path / "years.csv"), "--epochs", "2", "--quiet")
    first = run_sweeps("worker", *common, "--header", "yes", "--trials", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    joined = run_sweeps("worker", *common, "--trials", "2", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    assert len(study_trials(str(tmp_path / "lrsweep.db"), "h")) == 2
    # The export records it too: `train` reads the data and a test file of the same format.
    exported = run_sweeps("export", "--study", "h", "--out", "best.json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    years = str(tmp_path / "years.csv")
    trained = run_sweeps(
        *("train", "--config", "best.json", "--data", years, "--test-csv", years),
        *("--seeds", "1"),
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert (report["train_rows"], report["test_rows"]) == (351, 351)


def test_a_label_first_file_without_label_column_is_refused_with_a_hint(
    tmp_path: Path, data_path: Path
) -> None:
    frame = pd.read_csv(data_path, header=None)
    first = frame[[34, *range(34)]]
    first.to_csv(tmp_path / "label_first.csv", index=False, header=False)
    assert_refused(
        _train(tmp_path, tmp_path / "label_first.csv"),
        "one that holds non-integer numbers, like a feature; name the label column: "
        "--label-column 0 looks like one (2 values)",
    )
    counts = first.assign(count=(frame[0] * 25 + frame[2] * 25).round().astype(int))
    counts.to_csv(tmp_path / "count_last.csv", index=False, header=False)
    assert_refused(_train(tmp_path, tmp_path / "count_last.csv"), "distinct values in 351 rows")
    named = _train(tmp_path, tmp_path / "label_first.csv", "--label-column", "0")
    assert named.returncode == 0, named.stderr


@pytest.mark.parametrize(
    ("weight_decay", "kept"),
    [({"low": 0.0, "high": 0.01}, True), ({"low": 1e-5, "high": 1e-2, "log": True}, False)],
)
def test_the_baselines_keep_the_tutorials_weight_decay_of_0(
    weight_decay: dict[str, object], kept: bool, data_path: Path
) -> None:
    """A space that searches weight decay gets the tutorial's recipe (no decay) as baselines,
    or skips them when 0 is outside its range; never a random decay."""
    space = SearchSpace.from_dict({"ranges": {"weight_decay": weight_decay}})
    dataset = load_dataset(data_path)
    requested = StudySettings(dataset.sha256, space=space, folds=5)
    new = NewStudy.prepare(requested, dataset, enqueue_baselines=True)
    if kept:
        assert [t.params["weight_decay"] for t in new.baselines] == [0.0, 0.0]
        assert not new.skipped_baselines
    else:
        assert not new.baselines
        assert new.skipped_baselines == tuple(
            f"tutorial baseline {kind} skipped: weight_decay 0 is outside the space's 1e-05 to "
            "0.01"
            for kind in ("inverse_time", "step")
        )


@pytest.mark.parametrize(
    ("batch_range", "study_batch_size", "kept"),
    [((24, 200), 24, True), ((16, 256), 64, True), ((16, 256), 24, False)],
)
def test_the_baselines_keep_the_studys_mini_batch_size(
    batch_range: tuple[int, int], study_batch_size: int, kept: bool, data_path: Path
) -> None:
    """A space that searches `batch_size` gets baselines at the study's own mini-batch size,
    or skips them when it is not one of the sizes searched (low, doubled up to high)."""
    low, high = batch_range
    space = SearchSpace.from_dict({"ranges": {"batch_size": {"low": low, "high": high}}})
    dataset = load_dataset(data_path)
    requested = StudySettings(dataset.sha256, space=space, batch_size=study_batch_size)
    new = NewStudy.prepare(requested, dataset, enqueue_baselines=True)
    if kept:
        assert [t.params["batch_size"] for t in new.baselines] == [study_batch_size] * 2
        assert [requested.train_config(t.params).batch_size for t in new.baselines] == [
            study_batch_size
        ] * 2
    else:
        assert new.skipped_baselines == tuple(
            f"tutorial baseline {kind} skipped: batch_size 24 is not one of the space's 16, 32, "
            "64, 128, 256"
            for kind in ("inverse_time", "step")
        )
