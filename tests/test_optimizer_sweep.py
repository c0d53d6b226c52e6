"""A space file that searches the optimizer: each trial trains with its own, the export rebuilds
it in torch, the report compares them, and a bad optimizer list is one line."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from conftest import opened_storage, run_sweeps, space_file
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import load_config, load_dataset
from lrsweep.trainer.training import split_tensors, train

pytestmark = pytest.mark.slow

SPACE = """\
schedulers = ["constant", "cosine"]
optimizers = ["sgd", "adam", "adamw"]
[ranges]
lr = {low = 0.001, high = 0.05, log = true}
beta2 = {low = 0.9, high = 0.999}
"""


def test_a_sweep_over_optimizers_trains_exports_and_reports_each(
    tmp_path: Path, data_path: Path
) -> None:
    space = space_file(tmp_path, SPACE)
    common = ("--study", "opt", "--storage", str(tmp_path / "opt.db"))
    worker = run_sweeps(
        "worker", *common, "--data", str(data_path), "--space", str(space), "--trials", "12",
        "--epochs", "3", "--folds", "1", "--no-baselines", "--seed", "1", "--quiet",
        "--trials-per-batch", "6", "--pruner", "none", cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'opt.db'}") as storage:
        study = optuna.load_study(study_name="opt", storage=storage)
        settings, trials = StudySettings.of_study(study), study.trials
    assert {trial.params["optimizer"] for trial in trials} == {"sgd", "adam", "adamw"}
    for trial in trials:  # each optimizer has its own parameters, and only those
        adaptive = trial.params["optimizer"] != "sgd"
        assert ("beta2" in trial.params) is adaptive
        assert ("momentum" in trial.params) is not adaptive

    tensors = split_tensors(load_dataset(data_path), settings.validation_rows, "cpu")
    for trial in trials:  # a batch of 6 trains in the order of its first trial's number
        config = settings.train_config(trial.params)
        alone = train(
            config, tensors, seed=trial.number, order_seed=trial.number - trial.number % 6
        )
        one_row = 1 / len(tensors.y_val) + 1e-9
        accuracy = trial.user_attrs["validation_accuracy"]
        assert abs(alone.history[-1].validation_accuracy - accuracy) <= one_row

    exported = run_sweeps("export", *common, "--out", "best.json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    best = trials[document["source"]["trial_number"]]
    config = load_config(tmp_path / "best.json")
    assert config == settings.train_config(best.params)
    optimizer = config.make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    torch_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    assert type(optimizer) is torch_class[best.params["optimizer"]]
    assert document["optimizer"]["class"] == f"torch.optim.{type(optimizer).__name__}"

    report = run_sweeps("report", *common, "--out", "report", "--top", "3", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "accuracy_by_optimizer.png").stat().st_size > 0
    assert (
        "Final validation accuracy by optimizer" in (tmp_path / "report/report.html").read_text()
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('optimizers = ["rmsprop"]\n', "optimizers must be distinct names among sgd, adam, adamw"),
        ("[ranges]\nbeta1 = [0.8, 0.9]\n", "range 'beta1' belongs to adam and adamw"),
        (
            'optimizers = ["adam"]\n[ranges]\neps = [0, 1e-6]\n',
            "range.eps must be a number in (0, inf)",
        ),
    ],
)
def test_a_bad_optimizer_space_is_one_line_and_writes_nothing(
    text: str, message: str, tmp_path: Path, data_path: Path
) -> None:
    space = space_file(tmp_path, text)
    result = run_sweeps(
        "worker", "--study", "s", "--storage", str(tmp_path / "s.db"), "--data", str(data_path),
        "--space", str(space), "--trials", "2", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "s.db").exists()
