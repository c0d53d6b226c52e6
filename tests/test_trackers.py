"""--log mlflow / tensorboard (issue 23): one run per trial with its params and per-epoch
accuracy, read back with each tracker's own API."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from conftest import assert_refused, opened_storage, run_sweeps
from lrsweep.trainer import TrainConfig, lr_curve

pytestmark = pytest.mark.slow  # whole sweeps, and the trackers' own readers

STUDY = "../lr sweep"  # a name no folder may be made of as it is
FOLDER = "_lr_sweep"


SWEEPS = {
    "workers": (
        "--trials",
        "8",
        "--folds",
        "1",
        "--pruner",
        "successive_halving",
        "--workers",
        "2",
    ),
    "population": ("--population", "8", "--exploit-every", "2"),
}


@pytest.fixture(scope="module", params=sorted(SWEEPS))
def logged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_path: Path
) -> tuple[Path, list]:
    """A `sweeps run` logging to both trackers (two launched workers, or a population); its
    folder and trials."""
    folder = tmp_path_factory.mktemp("logged")
    run = run_sweeps(
        "run", "--study", STUDY, "--data", str(data_path), "--epochs", "4",
        *SWEEPS[request.param], "--log", "mlflow,tensorboard=tb", "--quiet", cwd=folder,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with opened_storage(f"sqlite:///{folder / 'lrsweep.db'}") as storage:
        trials = optuna.load_study(study_name=STUDY, storage=storage).trials
    assert len(trials) == 8
    return folder, trials


def _trained(trial: optuna.trial.FrozenTrial) -> dict[str, object]:
    """What a trial trained with: its params; a population member, its lineage's settings
    (read back through the config `sweeps export` writes from them)."""
    if "recipe" not in trial.user_attrs:
        return dict(trial.params)
    config = TrainConfig.from_json_dict(trial.user_attrs["recipe"])
    return {
        "scheduler": "recorded",
        "optimizer": "SGD",
        "lr_first": config.lr,
        "lr_last": lr_curve(config.schedule, config.lr, config.epochs)[-1],
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
    }


def test_an_exploited_member_is_logged_with_what_it_trained_not_its_first_draw(
    logged: tuple[Path, list],
) -> None:
    _, trials = logged
    exploited = [t for t in trials if t.user_attrs.get("exploits")]
    assert bool(exploited) == ("recipe" in trials[0].user_attrs)  # only a population exploits
    for trial in exploited:
        assert _trained(trial)["momentum"] != trial.params["momentum"]


def test_each_trial_is_an_mlflow_run_with_its_params_and_accuracy_per_epoch(
    logged: tuple[Path, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    folder, trials = logged
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(folder / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_number = {int(run.data.tags["optuna.trial_number"]): run for run in runs}
    assert sorted(by_number) == [t.number for t in trials]  # one run each, none twice
    for trial in trials:
        run = by_number[trial.number]
        assert run.info.run_name == f"trial {trial.number}"
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[trial.state.name]
        assert run.data.params == {key: str(value) for key, value in _trained(trial).items()}
        history = client.get_metric_history(run.info.run_id, "validation accuracy")
        assert sorted((m.step, m.value) for m in history) == sorted(
            trial.intermediate_values.items()
        )
        final = run.data.metrics["validation_accuracy"]
        assert final == pytest.approx(trial.user_attrs["validation_accuracy"])


def test_each_trial_is_a_tensorboard_run_with_its_hparams_and_accuracy_per_epoch(
    logged: tuple[Path, list],
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    folder, trials = logged
    assert os.listdir(folder / "tb") == [FOLDER]
    runs = sorted(os.listdir(folder / "tb" / FOLDER))
    assert runs == [f"trial-{t.number:05d}" for t in trials]
    for trial in trials:
        events = EventAccumulator(str(folder / "tb" / FOLDER / f"trial-{trial.number:05d}"))
        events.Reload()
        scalars = [(e.step, e.value) for e in events.Scalars("validation accuracy")]
        expected = sorted(trial.intermediate_values.items())
        assert [step for step, _ in scalars] == [step for step, _ in expected]
        assert [value for _, value in scalars] == pytest.approx(
            [value for _, value in expected], rel=1e-6
        )
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(
            content[metadata.SESSION_START_INFO_TAG]
        )
        hparams = {
            key: value.string_value or value.number_value for key, value in start.hparams.items()
        }
        assert hparams == pytest.approx(_trained(trial))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("wandb", "unknown tracker 'wandb' in --log; choose from mlflow, tensorboard"),
        (",", "--log names no tracker; choose from mlflow, tensorboard"),
    ],
)
def test_an_unknown_tracker_is_refused_before_anything_runs(
    tmp_path: Path, data_path: Path, value: str, message: str
) -> None:
    result = run_sweeps("run", "--data", str(data_path), "--log", value, cwd=tmp_path)
    assert_refused(result, message)
    assert not (tmp_path / "lrsweep.db").exists()


@pytest.mark.parametrize("command", [("run",), ("worker", "--study", "lrsweep")], ids=str)
def test_a_tracker_that_cannot_be_set_up_is_refused_before_the_study(
    tmp_path: Path, data_path: Path, command: tuple[str, ...]
) -> None:
    result = run_sweeps(
        *command, "--data", str(data_path), "--log", "mlflow=/proc/lrsweep-mlruns", cwd=tmp_path
    )
    assert_refused(result, "--log mlflow: ")
    assert not (tmp_path / "lrsweep.db").exists()
