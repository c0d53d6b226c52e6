"""Population mode: exploits copy a member exactly, a population run leaves an Optuna study
whose export rebuilds the schedule the best lineage followed, and bad requests are one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from conftest import REPO, opened_storage, run_sweeps, space_file
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import (
    ScheduleConfig,
    Tensors,
    TrainConfig,
    build,
    load_config,
    load_dataset,
    lr_curve,
    split_tensors,
    validation_rows,
)
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.vectorized import BatchMember, BatchTraining, train_batch


@pytest.fixture(scope="module")
def tensors(data_path: Path) -> Tensors:
    torch.set_num_threads(1)
    data = load_dataset(data_path)
    return split_tensors(data, validation_rows(data), "cpu")


@pytest.mark.parametrize(
    ("model", "optimizer"),
    [
        (None, "sgd"),
        (None, "adamw"),
        (None, "sgd_schedulefree"),
        ("batchnorm_net", "sgd"),  # its running statistics are copied too
        ("batchnorm_net", "sgd_schedulefree"),
        # Not AdamW with BatchNorm: the bias before the norm has no gradient but rounding,
        # which Adam scales up to full steps, so it drifts apart in any two runs.
        ("tanh_net", "adamw"),
    ],
)
def test_an_exploited_member_trains_on_as_its_source_would_at_the_new_lr(
    tensors: Tensors, model: str | None, optimizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After epoch 2, member 1 takes member 0's weights, buffers, optimizer state and
    settings at lr 0.05: it ends where member 0's seed ends when trained alone with that
    schedule (lr0 for three epochs, then 0.05), and member 0 is untouched."""
    monkeypatch.chdir(REPO)
    spec = None if model is None else ModelSpec(f"tests.user_models:{model}")
    momentum = 0.0 if optimizer == "adamw" else 0.9
    lr0 = 0.01 if optimizer == "adamw" else 0.2

    def config(lr: float, schedule: ScheduleConfig = ScheduleConfig("constant")) -> TrainConfig:
        return TrainConfig(schedule, lr=lr, momentum=momentum, epochs=6, optimizer=optimizer)

    members = [BatchMember(config(lr0), seed=0), BatchMember(config(lr0 * 3), seed=1)]
    training = BatchTraining(members, [tensors], order_seed=4, model_spec=spec)
    for results in training.epochs():
        if next(iter(results.values())).epoch == 2:
            training.exploit(1, 0, 0.05)
    source, exploited = training.results()
    recorded = ScheduleConfig("recorded", {"factors": [1.0] * 3 + [0.05 / lr0] * 3})
    alone = train_batch(
        [BatchMember(config(lr0, recorded), seed=0)], [tensors], order_seed=4, model_spec=spec
    )[0]
    unexploited = train_batch([members[0]], [tensors], order_seed=4, model_spec=spec)[0]
    assert [r.lr for r in exploited.history] == [lr0 * 3] * 3 + [0.05] * 3
    for ours, theirs in zip(exploited.weights, alone.weights, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(source.weights, unexploited.weights, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def _recipe_lrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    config = TrainConfig.from_json_dict(trial.user_attrs["recipe"])
    return lr_curve(config.schedule, config.lr, config.epochs)


@pytest.mark.slow
def test_a_population_run_is_a_study_whose_export_rebuilds_the_best_lineage(
    tmp_path: Path, data_path: Path
) -> None:
    common = ("--storage", str(tmp_path / "pbt.db"))
    run = run_sweeps(
        "run", *common, "--data", str(data_path), "--population", "8", "--exploit-every", "2",
        "--epochs", "6", "--folds", "1", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'pbt.db'}") as storage:
        study = optuna.load_study(study_name="lrsweep", storage=storage)
        trials, settings = study.trials, StudySettings.of_study(study)
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(sorted(t.intermediate_values) == list(range(6)) for t in trials)
    # Exploits after epochs 1 and 3 (not after the last): the bottom quarter (2) each time.
    events = [event for t in trials for event in t.user_attrs["exploits"]]
    assert sorted(event["epoch"] for event in events) == [1, 1, 3, 3]
    lr_range = settings.space.ranges["lr"]
    for trial in trials:
        lrs = _recipe_lrs(trial)
        for event in trial.user_attrs["exploits"]:
            assert lr_range.low <= event["lr"] <= lr_range.high
            assert lrs[event["epoch"] + 1] == pytest.approx(event["lr"])
        if not trial.user_attrs["exploits"]:  # never exploited: its own constant lr
            assert lrs == pytest.approx([trial.params["lr"]] * 6)

    best = json.loads((tmp_path / "best.json").read_text())
    exported = trials[best["source"]["trial_number"]]
    assert best["scheduler"]["class"] == "torch.optim.lr_scheduler.LambdaLR"
    config = load_config(tmp_path / "best.json")
    assert lr_curve(config.schedule, config.lr, 6) == pytest.approx(_recipe_lrs(exported))
    optimizer = config.make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    scheduler = build(optimizer, config.schedule)
    rebuilt = []
    for _ in range(6):  # the torch scheduler steps through the recorded lrs
        rebuilt.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rebuilt == pytest.approx(_recipe_lrs(exported))
    trained = run_sweeps("train", "--config", "best.json", "--data", str(data_path), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    report = run_sweeps("report", *common, "--study", "lrsweep", "--out", "report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "lr_curves.png").stat().st_size > 0  # the recorded schedules


@pytest.mark.slow
def test_members_that_learned_nothing_are_marked_at_chance(
    tmp_path: Path, sklearn_csv: Callable[[str], Path]
) -> None:
    """On raw digits, members at high lr and momentum answer one class: marked `at_chance`
    (validation accuracy no better than the most common class's share), counted by status."""
    digits = sklearn_csv("digits")
    hot = space_file(tmp_path, "[ranges]\nlr = {low = 0.01, high = 1.0, log = true}\n"
                     "momentum = {low = 0.9, high = 0.99}\n")  # fmt: skip
    common = ("--storage", str(tmp_path / "p.db"))
    run = run_sweeps(
        "run",
        *common,
        "--data",
        str(digits),
        "--space",
        str(hot),
        "--population",
        "8",
        "--exploit-every",
        "2",
        "--epochs",
        "3",
        "--seed",
        "0",
        "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'p.db'}") as storage:
        study = optuna.load_study(study_name="lrsweep", storage=storage)
        trials, settings = study.trials, StudySettings.of_study(study)
    labels = load_dataset(digits).labels[list(settings.validation_splits()[0])]
    chance = max(np.bincount(labels.astype(int))) / len(labels)
    marked = [bool(t.user_attrs.get("at_chance")) for t in trials]
    accuracies = [t.user_attrs.get("validation_accuracy") for t in trials]  # none: no epoch
    assert marked == [a is not None and a <= chance + 1e-9 for a in accuracies]
    assert any(marked) and not all(marked)
    status = run_sweeps("status", *common, "--study", "lrsweep", cwd=tmp_path)
    assert f"{sum(marked)} at chance, no better than the most common class" in status.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--population", "2"), "--population must be >= 4"),
        (("--population", "8", "--trials", "5"), "--trials or --workers with --population"),
        (("--population", "8", "--workers", "2"), "--trials or --workers with --population"),
        (("--population", "8", "--baselines"), "--baselines: a population trains its members"),
        (("--population", "8", "--exploit-every", "0"), "--exploit-every must be >= 1"),
    ],
)
def test_a_bad_population_request_is_one_line_and_writes_nothing(
    flags: tuple[str, ...], message: str, tmp_path: Path, data_path: Path
) -> None:
    result = run_sweeps(
        "run", "--storage", str(tmp_path / "p.db"), "--data", str(data_path), *flags, cwd=tmp_path
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize(
    ("flags", "space", "message"),
    [
        (("--exploit-every", "6"), None, "--exploit-every must be below the study's 6 epochs"),
        ((), 'optimizers = ["sgd", "adam"]\n', "population mode trains one optimizer"),
    ],
)
def test_a_population_the_study_cannot_train_is_refused_before_any_trial(
    flags: tuple[str, ...], space: str | None, message: str, tmp_path: Path, data_path: Path
) -> None:
    space_flags = ("--space", str(space_file(tmp_path, space))) if space else ()
    result = run_sweeps(
        "run", "--storage", str(tmp_path / "p.db"), "--data", str(data_path), "--epochs", "6",
        "--population", "8", *flags, *space_flags, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'p.db'}") as storage:
        assert optuna.get_all_study_names(storage) == []  # the new study went with the refusal


@pytest.mark.slow
def test_a_schedule_free_population_reruns_with_new_draws_and_keeps_out_of_a_tpe_study(
    tmp_path: Path, data_path: Path
) -> None:
    """A population of another optimizer runs (its space has no SGD momentum); a second run
    in the same study adds members drawn anew; a TPE study is refused without a trial."""
    space = space_file(tmp_path, 'optimizers = ["adamw_schedulefree"]\n')
    flags = (
        "--data", str(data_path), "--population", "4", "--exploit-every", "1", "--epochs", "3",
        "--space", str(space), "--quiet",
    )  # fmt: skip
    for _ in range(2):
        run = run_sweeps("run", "--storage", str(tmp_path / "sf.db"), *flags, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    assert document["optimizer"]["class"] == "schedulefree.AdamWScheduleFree"
    with opened_storage(f"sqlite:///{tmp_path / 'sf.db'}") as storage:
        trials = optuna.load_study(study_name="lrsweep", storage=storage).trials
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.params["lr"] for t in trials}) == 8  # the second run's draws are new

    tpe = ("--storage", str(tmp_path / "tpe.db"), "--data", str(data_path), "--folds", "1")
    swept = run_sweeps("run", *tpe, "--trials", "4", "--epochs", "3", "--quiet", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    refused = run_sweeps("run", *tpe, "--population", "4", "--exploit-every", "1", cwd=tmp_path)
    assert refused.returncode == 2
    assert "holds trials that are not a population's" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    with opened_storage(f"sqlite:///{tmp_path / 'tpe.db'}") as storage:
        assert len(optuna.load_study(study_name="lrsweep", storage=storage).trials) == 4
