"""One worker process at a time on its own SQLite study: what it leaves, judged afterwards
(no other process to race, so these run in parallel with the other slow tests)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest

from conftest import run_sweeps, study_trials

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("pruner", ["median", "hyperband", "successive_halving", "none"])
def test_every_pruner_runs_a_study_to_its_target(
    pruner: str, tmp_path: Path, data_path: Path
) -> None:
    result = run_sweeps(
        "worker",
        *("--study", "p", "--pruner", pruner, "--trials", "36", "--epochs", "12"),
        *("--trials-per-batch", "12", "--folds", "1", "--seed", "0"),
        *("--data", str(data_path), "--quiet"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "stopped because the study has its 36 finished trials" in result.stderr
    trials = study_trials(str(tmp_path / "lrsweep.db"), "p")
    assert len(trials) == 36 and all(t.state.is_finished() for t in trials)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    if pruner == "none":
        assert not pruned
    else:
        assert [t for t in pruned if t.user_attrs["stop_reason"] == "pruned"], pruner
    for trial in pruned:
        assert trial.user_attrs["stop_reason"] in ("pruned", "diverged")
        assert len(trial.intermediate_values) < 12
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]


def test_worker_without_target_stops_at_its_timeout(tmp_path: Path, data_path: Path) -> None:
    started = time.monotonic()
    result = run_sweeps(
        "worker",
        *("--study", "t", "--timeout", "3", "--epochs", "5", "--trials-per-batch", "4"),
        *("--data", str(data_path), "--quiet"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "stopped because the --timeout of 3.0 s was reached" in result.stderr
    assert time.monotonic() - started >= 3  # a lower bound: no load can make it flake
    trials = study_trials(str(tmp_path / "lrsweep.db"), "t")
    assert trials and all(t.state.is_finished() for t in trials)


@pytest.mark.parametrize("pruner", ["median", "successive_halving", "hyperband"])
def test_a_sweep_prunes_exactly_as_a_replay_through_optuna(
    pruner: str, tmp_path: Path, data_path: Path
) -> None:
    """One worker, one trial per batch; then every trial replayed in number order through an
    in-memory Optuna study with the same name and pruner: each should_prune answer, and each
    rung mark, is the one the sweep acted on."""
    result = run_sweeps(
        "worker",
        *("--study", "replayed", "--pruner", pruner, "--trials", "30", "--epochs", "9"),
        *("--trials-per-batch", "1", "--seed", "3", "--data", str(data_path), "--quiet"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    status = run_sweeps("status", "--study", "replayed", "--json", cwd=tmp_path)
    spec = json.loads(status.stdout)["settings"]["pruner"]
    arguments = {key: value for key, value in spec.items() if key != "class"}
    replay = optuna.create_study(
        study_name="replayed",
        direction="maximize",
        pruner=getattr(optuna.pruners, spec["class"])(**arguments),
    )
    stored = sorted(study_trials(str(tmp_path / "lrsweep.db"), "replayed"), key=lambda t: t.number)
    assert [t.state.name for t in stored].count("PRUNED") > 0
    for trial in stored:
        asked = replay.ask()
        assert asked.number == trial.number
        pruned_at = None
        for step, value in sorted(trial.intermediate_values.items()):
            asked.report(value, step)
            if asked.should_prune():
                pruned_at = step
                break
        reason = trial.user_attrs["stop_reason"]
        last = max(trial.intermediate_values, default=None)
        assert pruned_at == (last if reason == "pruned" else None), (trial.number, reason)
        marks = {k: v for k, v in trial.system_attrs.items() if k.startswith("completed_rung_")}
        replayed = replay._storage.get_trial(asked._trial_id).system_attrs
        assert marks == {k: v for k, v in replayed.items() if k.startswith("completed_rung_")}
        if trial.state == optuna.trial.TrialState.COMPLETE:
            replay.tell(asked, trial.value)
        else:
            replay.tell(asked, state=optuna.trial.TrialState.PRUNED)
