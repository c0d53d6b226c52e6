"""The `sweeps` command as users run it: real processes, real data, real databases."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import (
    assert_refused,
    opened_storage,
    run_sweeps,
    space_file,
    study_trials,
    torch_lrs,
    unique_study,
)
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import load_config, load_dataset
from lrsweep.trainer.data import stratified_folds
from lrsweep.trainer.training import split_tensors, train
from lrsweep.trainer.vectorized import fold_order_seed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, data_path: Path) -> Path:
    """A small study made by the one-command `sweeps run` in a fresh folder."""
    folder = tmp_path_factory.mktemp("run")
    result = run_sweeps(
        "run",
        "--data",
        str(data_path),
        "--trials",
        "10",
        "--workers",
        "2",
        "--epochs",
        "12",
        "--quiet",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    assert "best: trial" in result.stdout and "exported trial" in result.stdout
    # Every process closed its connections: the study is whole in lrsweep.db alone.
    assert (folder / "lrsweep.db").is_file() and not (folder / "lrsweep.db-wal").exists()
    return folder


def test_run_creates_default_sqlite_study_and_exports(finished_study: Path) -> None:
    assert (finished_study / "lrsweep.db").is_file()
    document = json.loads((finished_study / "best.json").read_text())
    assert document["source"]["study"] == "lrsweep"
    assert 0.5 < document["source"]["validation_accuracy"] <= 1.0
    assert document["training"]["epochs"] == 12
    assert document["scheduler"]["class"].startswith("torch.optim.lr_scheduler.")


def test_export_then_rebuild_gives_the_same_lr_curve(finished_study: Path) -> None:
    result = run_sweeps(
        "export",
        "--study",
        "lrsweep",
        "--out",
        "again.json",
        "--trials",
        "trials.csv",
        cwd=finished_study,
    )
    assert result.returncode == 0, result.stderr
    exported = json.loads((finished_study / "again.json").read_text())
    config = load_config(finished_study / "again.json")
    rebuilt = torch_lrs(config.schedule, config.lr, config.epochs)
    assert rebuilt == pytest.approx(exported["lr_curve"], rel=1e-12)
    import pandas as pd

    frame = pd.read_csv(finished_study / "trials.csv")
    assert len(frame) == 10 and "params_scheduler" in frame.columns


def test_export_as_yaml_loads_back_identically(finished_study: Path) -> None:
    result = run_sweeps("export", "--study", "lrsweep", "--format", "yaml", cwd=finished_study)
    assert result.returncode == 0, result.stderr
    as_json = run_sweeps(
        "export", "--study", "lrsweep", "--out", "single.json", cwd=finished_study
    )
    assert as_json.returncode == 0, as_json.stderr
    assert load_config(finished_study / "best.yaml") == load_config(finished_study / "single.json")
    mismatch = run_sweeps(
        "export", "--study", "lrsweep", "--format", "yaml", "--out", "b.json", cwd=finished_study
    )
    assert mismatch.returncode == 2 and "matching --format" in mismatch.stderr


def test_status_reports_states_and_best(finished_study: Path) -> None:
    result = run_sweeps("status", "--study", "lrsweep", "--json", cwd=finished_study)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["by_state"].get("COMPLETE", 0) + summary["by_state"].get("PRUNED", 0) == 10
    assert summary["best"]["value"] > 0.5
    # The pruner that ran, as a class and its constructor arguments: enough to rebuild it.
    assert summary["settings"]["pruner"] == {
        "class": "MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 5,
    }
    text = run_sweeps("status", "--study", "lrsweep", cwd=finished_study)
    assert "best: trial" in text.stdout
    assert "pruner MedianPruner(n_startup_trials=5, n_warmup_steps=5)" in text.stdout


def test_status_json_names_hyperband_with_its_arguments(tmp_path: Path, data_path: Path) -> None:
    made = run_sweeps(
        "worker",
        *("--study", "hb", "--pruner", "hyperband", "--epochs", "7", "--trials", "2"),
        *("--data", str(data_path), "--quiet"),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    result = run_sweeps("status", "--study", "hb", "--json", cwd=tmp_path)
    pruner = json.loads(result.stdout)["settings"]["pruner"]
    assert pruner == {
        "class": "HyperbandPruner",
        "min_resource": 1,
        "max_resource": 7,
        "reduction_factor": 3,
    }


def test_a_database_lost_for_good_is_exit_1_not_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Exhausting the outage retries is a failure of the run, not bad input."""
    from sqlalchemy.exc import OperationalError

    from lrsweep.storage.outage import retrying
    from lrsweep.sweeps import cli

    def database_away() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    def worker_that_loses_its_database(*_: object) -> None:
        retrying(database_away, "claiming trials", give_up_s=0.0)

    monkeypatch.setattr("lrsweep.sweeps.worker.loop.run_worker", worker_that_loses_its_database)
    monkeypatch.setattr("lrsweep.sweeps.study.open.open_for_sweep", lambda *_, **__: None)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["worker", "--study", "x"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "error: database unreachable for 0 s while claiming trials; giving up"


def test_run_resumes_the_same_study(finished_study: Path, data_path: Path) -> None:
    result = run_sweeps(
        "run",
        "--data",
        str(data_path),
        "--trials",
        "12",
        "--workers",
        "1",
        "--quiet",
        "--out",
        "resumed.json",
        cwd=finished_study,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(
        run_sweeps("status", "--study", "lrsweep", "--json", cwd=finished_study).stdout
    )
    assert summary["trials"] == 12


def test_train_retrains_over_seeds_on_a_test_csv(finished_study: Path, data_path: Path) -> None:
    result = run_sweeps(
        "train",
        "--config",
        "best.json",
        "--data",
        str(data_path),
        "--test-csv",
        str(data_path),
        "--seeds",
        "2",
        cwd=finished_study,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [run["seed"] for run in report["per_seed"]] == [0, 1]
    assert report["train_rows"] == 351 and report["test_rows"] == 351
    assert 0.5 < report["mean_accuracy"] <= 1.0


def test_export_top_picks_best_mean_over_seeds(finished_study: Path, data_path: Path) -> None:
    result = run_sweeps(
        *("export", "--study", "lrsweep", "--top", "3", "--seeds", "3"),
        *("--out", "robust.json", "--data", str(data_path)),
        cwd=finished_study,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((finished_study / "robust.json").read_text())
    selection = document["selection"]
    trials = study_trials(str(finished_study / "lrsweep.db"), "lrsweep")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    expected_top = sorted(complete, key=lambda t: (-t.value, t.number))[:3]
    candidates = selection["candidates"]
    assert {c["trial_number"] for c in candidates} == {t.number for t in expected_top}
    means = [c["mean_accuracy"] for c in candidates]
    assert means == sorted(means, reverse=True)
    assert selection["chosen_trial"] == candidates[0]["trial_number"]
    assert document["source"]["trial_number"] == selection["chosen_trial"]
    for candidate in candidates:
        scores = [run["accuracy"] for run in candidate["per_seed"]]
        assert [run["seed"] for run in candidate["per_seed"]] == [0, 1, 2]
        assert candidate["mean_accuracy"] == pytest.approx(statistics.fmean(scores))
        assert candidate["std_accuracy"] == pytest.approx(statistics.pstdev(scores))
    # The recorded scores are real retraining: one seed of the chosen config, trained alone on
    # each of 5 fresh folds (not the study's own, which chose the candidates), averaged.
    chosen = load_config(finished_study / "robust.json")
    dataset = load_dataset(data_path)
    with opened_storage(str(finished_study / "lrsweep.db")) as storage:
        settings = StudySettings.of_study(optuna.load_study(study_name="lrsweep", storage=storage))
    assert settings.folds == 5  # the default for a new study
    fresh = stratified_folds(dataset, 5, settings.split_seed + 1)
    assert fresh != settings.fold_rows
    alone = [
        train(chosen, fold, seed=2, order_seed=fold_order_seed(2, index)).final_accuracy
        for index, fold in enumerate(split_tensors(dataset, rows, "cpu") for rows in fresh)
    ]
    assert statistics.fmean(alone) == pytest.approx(candidates[0]["per_seed"][2]["accuracy"])


def test_export_top_zero_is_refused(finished_study: Path) -> None:
    result = run_sweeps("export", "--study", "lrsweep", "--top", "0", cwd=finished_study)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --top must be >= 1; got 0"


def test_export_from_study_without_completed_trial_is_an_error(
    tmp_path: Path, data_path: Path
) -> None:
    space = space_file(tmp_path, 'schedulers = ["constant"]\n[ranges]\nlr = [5000.0, 10000.0]\n')
    made = run_sweeps(
        "worker",
        "--study",
        "diverging",
        "--space",
        str(space),
        "--data",
        str(data_path),
        "--trials",
        "2",
        "--epochs",
        "5",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "diverged" in made.stderr
    result = run_sweeps("export", "--study", "diverging", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: study 'diverging' has no completed trial yet")
    assert not (tmp_path / "best.json").exists()


def _bad_csv(tmp_path: Path, data_path: Path) -> Path:
    bad = tmp_path / "bad.csv"
    lines = data_path.read_text().splitlines()
    bad.write_text("\n".join([lines[0].replace(",g", ",maybe")] + lines[1:]))
    return bad


def _edited_csv(tmp_path: Path, data_path: Path, row: int, edit: Callable[[str], str]) -> Path:
    """The real data with one row edited (row -1: every row)."""
    lines = data_path.read_text().splitlines()
    rows = range(len(lines)) if row == -1 else [row]
    for index in rows:
        lines[index] = edit(lines[index])
    bad = tmp_path / "edited.csv"
    bad.write_text("\n".join(lines))
    return bad


def _bad_config(tmp_path: Path) -> Path:
    bad = tmp_path / "neg.json"
    bad.write_text(
        json.dumps(
            {
                "format": "lrsweep.train-config",
                "version": 1,
                "scheduler": {"kind": "step", "kwargs": {"step_size": 5, "gamma": 0.5}},
                "optimizer": {"lr": -0.1, "momentum": 0.9},
                "training": {"epochs": 5},
            }
        )
    )
    return bad


def _unknown_scheduler_space(tmp_path: Path) -> Path:
    return space_file(tmp_path, 'schedulers = ["warmup"]\n')


def _storage_with_other_study(tmp_path: Path) -> Path:
    import optuna

    db = tmp_path / "other.db"
    with opened_storage(str(db)) as storage:
        optuna.create_study(storage=storage, study_name="other")
    return db


def _space(tmp_path: Path, text: str) -> Path:
    return space_file(tmp_path, text, "space.yaml")


def _empty_csv(tmp_path: Path) -> Path:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    return empty


def _worker_args(data: Path, *flags: str) -> list[str]:
    """`sweeps worker` on study x with `data` and the flags under test."""
    return ["worker", "--study", "x", "--data", str(data), *flags]


BAD_INPUTS = {
    "dashboard-missing-file": (
        lambda t, d: ["dashboard", "--storage", "typo.db"],
        "does not exist",
    ),
    "missing-study": (
        lambda t, d: ["export", "--study", "nope", "--storage", str(_storage_with_other_study(t))],
        "study 'nope' does not exist",
    ),
    "zero-epochs": (
        lambda t, d: _worker_args(d, "--epochs", "0"),
        "epochs must be an integer >= 1",
    ),
    "too-many-folds": (
        lambda t, d: _worker_args(d, "--folds", "500"),
        "--folds must be 1, or between 2 and 126",
    ),
    "tiny-validation-fraction": (
        lambda t, d: _worker_args(d, "--validation-fraction", "0.001"),
        "validation fraction must hold out between 2 and 349",
    ),
    "run-zero-seeds": (
        lambda t, d: ["run", "--data", str(d), "--seeds", "0"],
        "--seeds must be >= 1",
    ),
    "run-zero-top": (
        lambda t, d: ["run", "--data", str(d), "--top", "0"],
        "--top must be >= 1",
    ),
    "export-seeds-without-top": (
        lambda t, d: ["export", "--study", "x", "--seeds", "3"],
        "--seeds needs --top",
    ),
    "gamma-range": (
        lambda t, d: _worker_args(
            d, "--space", str(_space(t, "ranges:\n  step.gamma: [0.5, 1.5]\n"))
        ),
        "step.gamma must be a number in (0, 1]",
    ),
    "inverted-range": (
        lambda t, d: _worker_args(d, "--space", str(_space(t, "ranges:\n  lr: [0.5, 0.1]\n"))),
        "inverted",
    ),
    "empty-csv": (
        lambda t, d: ["worker", "--study", "x", "--data", str(_empty_csv(t))],
        "is empty",
    ),
    "malformed-url": (
        lambda t, d: ["status", "--study", "x", "--storage", "postgresql://u@h:x/db"],
        "malformed storage URL",
    ),
    "unsupported-url": (
        lambda t, d: ["status", "--study", "x", "--storage", "mysql://u@h/db"],
        "unsupported storage",
    ),
    "unreachable-db": (
        lambda t, d: [
            "status",
            "--study",
            "x",
            "--storage",
            "postgresql://u:topsecret@127.0.0.1:1/db",
        ],
        "cannot open storage",
    ),
    "missing-study-file": (
        lambda t, d: ["status", "--study", "x", "--storage", "none.db"],
        "does not exist",
    ),
    # The launcher finds the bad data after starting its workers: they exit without a word.
    "launch-bad-csv": (
        lambda t, d: ["launch", "--study", "x", "--workers", "2", "--data", str(_bad_csv(t, d))],
        "classes with a single row (e.g. 'maybe')",
    ),
    "bad-csv": (
        lambda t, d: ["worker", "--study", "x", "--trials", "1", "--data", str(_bad_csv(t, d))],
        "classes with a single row (e.g. 'maybe')",
    ),
    "unknown-scheduler": (
        lambda t, d: [
            "worker",
            "--study",
            "x",
            "--trials",
            "1",
            "--data",
            str(d),
            "--space",
            str(_unknown_scheduler_space(t)),
        ],
        "unknown scheduler 'warmup'",
    ),
    "non-numeric-cell": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--data"),
            str(_edited_csv(t, d, 4, lambda line: "abc," + line.split(",", 1)[1])),
        ],
        "line 5 column 1: feature 'abc' is not a finite number",
    ),
    "nan-cell": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--data"),
            str(_edited_csv(t, d, 9, lambda line: "1,nan," + line.split(",", 2)[2])),
        ],
        "line 10 column 2: feature 'nan' is not a finite number",
    ),
    "short-row": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--trials", "1", "--data"),
            str(_edited_csv(t, d, 6, lambda line: ",".join(line.split(",")[:20]))),
        ],
        "line 7 column 21: feature '' is empty",
    ),
    "one-class": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--data"),
            str(_edited_csv(t, d, -1, lambda line: line[:-1] + "g")),
        ],
        "has only one class",
    ),
    "missing-csv": (
        lambda t, d: ["worker", "--study", "x", "--data", str(t / "nowhere.csv")],
        "cannot read data file",
    ),
    "unparsable-space": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--data", str(d)),
            *("--space", str(_space(t, "ranges: [unclosed\n"))),
        ],
        "does not parse",
    ),
    "space-unknown-key": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--data", str(d)),
            *("--space", str(_space(t, "learning_rates: [0.1, 0.2]\n"))),
        ],
        "unknown key 'learning_rates'",
    ),
    "missing-space-file": (
        lambda t, d: [
            "worker",
            *("--study", "x", "--data", str(d), "--space", str(t / "nowhere.toml")),
        ],
        "cannot read search space",
    ),
    "unknown-pruner": (
        lambda t, d: _worker_args(d, "--pruner", "coinflip"),
        "unknown pruner",
    ),
    "zero-trials": (lambda t, d: ["run", "--data", str(d), "--trials", "0"], "--trials must be"),
    "negative-seed": (lambda t, d: _worker_args(d, "--seed", "-1"), "--seed must be between"),
    "no-sampler-history": (lambda t, d: _worker_args(d, "--sampler-history", "0"), ">= 10"),
    "negative-lr-config": (
        lambda t, d: ["train", "--config", str(_bad_config(t)), "--data", str(d)],
        "lr must be > 0",
    ),
    "usage": (lambda t, d: ["export"], "the following arguments are required: --study"),
    "unknown-command": (lambda t, d: ["sweep"], "invalid choice"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: str, tmp_path: Path, data_path: Path
) -> None:
    make_args, message = BAD_INPUTS[case]
    args = make_args(tmp_path, data_path)
    before = set(tmp_path.iterdir())
    result = run_sweeps(*args, cwd=tmp_path)
    assert_refused(result, message)
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr
    assert set(tmp_path.iterdir()) == before


def test_joining_with_conflicting_settings_is_refused(tmp_path: Path, data_path: Path) -> None:
    study = unique_study()
    first = run_sweeps(
        "worker",
        "--study",
        study,
        "--data",
        str(data_path),
        "--trials",
        "1",
        "--epochs",
        "3",
        "--quiet",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    second = run_sweeps(
        "worker",
        "--study",
        study,
        "--data",
        str(data_path),
        "--trials",
        "2",
        "--epochs",
        "4",
        cwd=tmp_path,
    )
    assert second.returncode == 2
    assert "already exists with epochs=3" in second.stderr


@pytest.mark.postgres
def test_password_never_appears_in_output_or_files(
    postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """The local server trusts any password, so a real sweep can run with one in its URL."""
    from sqlalchemy.engine import make_url

    secret = "hunter2-Secret"
    url = make_url(postgres_server_url).set(password=secret).render_as_string(hide_password=False)
    study = unique_study()
    common = ["--storage", url, "--study", study]
    results = [
        run_sweeps(
            "launch",
            *common,
            "--workers",
            "2",
            "--trials",
            "6",
            "--epochs",
            "3",
            "--data",
            str(data_path),
            cwd=tmp_path,
        ),
        run_sweeps("status", *common, cwd=tmp_path),
        run_sweeps("status", *common, "--json", cwd=tmp_path),
        run_sweeps("export", *common, "--out", "best.json", "--trials", "t.csv", cwd=tmp_path),
        run_sweeps(
            "export",
            "--storage",
            url.replace("127.0.0.1:5432", "127.0.0.1:1"),
            "--study",
            study,
            cwd=tmp_path,
        ),
    ]
    assert [r.returncode for r in results] == [0, 0, 0, 0, 2]
    assert "***" in results[0].stderr and "***" in results[-1].stderr
    for result in results:
        assert secret not in result.stdout + result.stderr
    for written in ("best.json", "t.csv"):
        assert secret not in (tmp_path / written).read_text()


@pytest.mark.parametrize(
    ("key", "bounds", "value_in"),
    [
        ("weight_decay", (1e-4, 1e-2), lambda document: document["optimizer"]["weight_decay"]),
        ("batch_size", (16, 64), lambda document: document["training"]["batch_size"]),
    ],
)
def test_a_space_file_with_an_opt_in_key_sweeps_it_and_exports_it(
    key: str,
    bounds: tuple[float, float],
    value_in: Callable[[dict[str, Any]], float],
    tmp_path: Path,
    data_path: Path,
) -> None:
    """Weight decay and the mini-batch size are searched when a space file names them, each
    trial trains with its own value (what `train` computes at the trial's config), and the
    export carries the best trial's."""
    low, high = bounds
    space = space_file(tmp_path, f"[ranges]\n{key} = {{low = {low}, high = {high}, log = true}}\n")
    common = ("--study", "wd", "--storage", str(tmp_path / "wd.db"))
    worker = run_sweeps(
        "worker", *common, "--data", str(data_path), "--space", str(space), "--trials", "4",
        "--epochs", "2", "--folds", "1", "--no-baselines", "--seed", "0", "--quiet",
        "--trials-per-batch", "2", cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    exported = run_sweeps("export", *common, "--out", "best.json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    trial_number = document["source"]["trial_number"]
    with opened_storage(f"sqlite:///{tmp_path / 'wd.db'}") as storage:
        study = optuna.load_study(study_name="wd", storage=storage)
        params = study.trials[trial_number].params
        settings = StudySettings.of_study(study)
        trials = study.trials
    searched = {trial.params[key] for trial in trials}
    assert all(low <= value <= high for value in searched)
    assert len(searched) > 1  # not the unsearched default for every trial
    if key == "batch_size":  # doubling from low: a few sizes, each one vectorized group
        assert searched <= {16, 32, 64}
    tensors = split_tensors(load_dataset(data_path), settings.validation_rows, "cpu")
    for trial in trials:  # a batch of 2 trains in the order of its first trial's number
        batch_order = trial.number - trial.number % 2
        alone = train(
            settings.train_config(trial.params), tensors, seed=trial.number, order_seed=batch_order
        )
        assert alone.history[-1].validation_accuracy == pytest.approx(
            trial.user_attrs["validation_accuracy"]
        )
        assert alone.history[-1].validation_loss == pytest.approx(
            trial.user_attrs["validation_loss"], rel=1e-4
        )
    assert value_in(document) == params[key]
    assert getattr(load_config(tmp_path / "best.json"), key) == params[key]
