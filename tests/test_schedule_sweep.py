"""A space file listing the six schedules added after the classic seven sweeps all of them,
end to end through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from conftest import run_sweeps, study_trials
from lrsweep.sweeps.results.export import write_document
from lrsweep.trainer import InvalidInputError, ScheduleConfig, TrainConfig, build, load_config

NEW_KINDS = ("multistep", "onecycle", "cosine_warm_restarts", "cyclic", "warmup_cosine", "plateau")


def test_a_space_of_the_six_new_kinds_sweeps_each_of_them(data_path: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text(f"schedulers = {json.dumps(list(NEW_KINDS))}\n")
    result = run_sweeps(
        *("run", "--data", str(data_path), "--space", str(space), "--trials", "36"),
        *("--epochs", "8", "--workers", "1", "--quiet", "--top", "1", "--seeds", "1"),
        *("--folds", "2"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    trials = study_trials(str(tmp_path / "lrsweep.db"), "lrsweep")
    assert {t.params["scheduler"] for t in trials} == set(NEW_KINDS)
    for trial in trials:
        if trial.params["scheduler"] == "plateau" and trial.state == TrialState.COMPLETE:
            # The lr each fold's model used, epoch by epoch: what its own accuracy led to.
            used = trial.user_attrs["lr_per_epoch"]
            assert len(used) == 8 and all(len(folds) == 2 for folds in used)
            assert used[0] == [trial.params["lr"]] * 2
            for fold in range(2):
                lrs = [epoch[fold] for epoch in used]
                assert lrs == sorted(lrs, reverse=True)  # a plateau only ever lowers it
    config = load_config(tmp_path / "best.json")
    document = json.loads((tmp_path / "best.json").read_text())
    assert config.schedule.kind in NEW_KINDS
    assert len(document["lr_curve"]) == 8

    optimizer = config.make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert (
        type(build(optimizer, config.schedule)).__name__
        == document["scheduler"]["class"].split(".")[-1]
    )


def test_a_plateau_export_says_how_to_step_it() -> None:
    params = {"factor": 0.5, "patience": 2, "threshold": 1e-3, "min_lr": 0.0}
    config = TrainConfig(ScheduleConfig("plateau", params), lr=0.1, momentum=0.9)
    document = config.to_json_dict()
    assert document["scheduler"]["step"].startswith("scheduler.step(val_accuracy)")
    assert document["scheduler"]["kwargs"] == {
        **params, "mode": "max", "threshold_mode": "rel", "cooldown": 0,
    }  # fmt: skip
    assert TrainConfig.from_json_dict(document) == config


EXAMPLES = {
    "multistep": {"milestones": [10, 25], "gamma": 0.4},
    "onecycle": {"total_steps": 50, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
    "cosine_warm_restarts": {"T_0": 7, "T_mult": 2, "eta_min": 0.001},
    "cyclic": {"max_lr": 0.9, "step_size_up": 6},
    "warmup_cosine": {"warmup_iters": 5, "start_factor": 0.1, "T_max": 45, "eta_min": 0.0},
    "plateau": {"factor": 0.5, "patience": 2, "threshold": 1e-3, "min_lr": 0.01},
}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_new_kind_round_trips_through_an_export_file(
    kind: str, suffix: str, tmp_path: Path
) -> None:
    config = TrainConfig(ScheduleConfig(kind, EXAMPLES[kind]), lr=0.1, momentum=0.5)
    path = tmp_path / f"best{suffix}"
    write_document(config.to_json_dict(), path)
    assert load_config(path) == config
    # Editing params alone (kwargs deleted) is how a hand edit is done.
    document = config.to_json_dict()
    del document["scheduler"]["kwargs"]
    document["optimizer"]["lr"] = 0.05
    assert TrainConfig.from_json_dict(document).lr == 0.05


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("plateau", {"factor": 1.0}, "plateau.factor must be a number in \\(0, 1\\)"),
        ("onecycle", {"pct_start": 1.0}, "onecycle.pct_start must be a number in \\(0, 1\\)"),
        ("onecycle", {"total_steps": 40}, "onecycle.total_steps \\(40\\) must be >= epochs"),
        ("multistep", {"milestones": [5, 5]}, "milestones must increase"),
        ("multistep", {"milestones": []}, "must be a non-empty list"),
    ],
)
def test_arguments_torch_would_refuse_are_refused_first(
    kind: str, change: dict, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(ScheduleConfig(kind, {**EXAMPLES[kind], **change}), lr=0.1, epochs=50)
