"""Real worker processes sharing one study, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import run_sweeps, start_worker, study_trials, unique_study

pytestmark = pytest.mark.slow


def _start_worker(
    storage_url: str, study: str, data: Path, trials: int, seed: int, cwd: Path
) -> subprocess.Popen[str]:
    return start_worker(
        storage_url,
        study,
        data,
        cwd,
        "--trials",
        str(trials),
        "--epochs",
        "8",
        "--seed",
        str(seed),
        "--quiet",
    )


def test_two_workers_reach_exactly_n_finished_trials(
    storage_url: str, data_path: Path, tmp_path: Path
) -> None:
    study_name, target = unique_study(), 14
    workers = [
        _start_worker(storage_url, study_name, data_path, target, seed, tmp_path)
        for seed in (0, 1)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr

    trials = study_trials(storage_url, study_name)
    states = [t.state for t in trials]
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == target, states
    assert all(
        s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states
    )
    assert sorted(t.number for t in trials) == list(range(target))
    for trial in finished:
        # Every epoch the trial ran left its accuracy in the storage, none lost.
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert len(steps) == 8 and trial.value == trial.intermediate_values[7]
        else:
            assert trial.user_attrs["stop_reason"] in ("pruned", "diverged")
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    # Differently seeded samplers: the two workers did not propose identical first trials.
    assert trials[0].params != trials[1].params


@pytest.mark.parametrize("pruner", ["median", "hyperband", "successive_halving", "none"])
def test_every_pruner_runs_a_study_to_its_target(
    pruner: str, tmp_path: Path, data_path: Path
) -> None:
    result = run_sweeps(
        "worker",
        *("--study", "p", "--pruner", pruner, "--trials", "36", "--epochs", "12"),
        *("--trials-per-batch", "12", "--seed", "0", "--data", str(data_path), "--quiet"),
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
    # A pruned trial is finished in the transaction of the epoch it stops on, not when its
    # batch ends: it is marked finished before every trial of its batch that ran to the end.
    for first in range(0, 36, 12):
        batch = [t for t in trials if first <= t.number < first + 12]
        ran_to_end = [t.datetime_complete for t in batch if len(t.intermediate_values) == 12]
        for trial in batch:
            if len(trial.intermediate_values) < 12 and ran_to_end:
                assert trial.datetime_complete < min(ran_to_end), (pruner, trial.number)


def test_worker_without_target_stops_at_its_timeout(tmp_path: Path, data_path: Path) -> None:
    result = run_sweeps(
        "worker",
        *("--study", "t", "--timeout", "3", "--epochs", "5", "--trials-per-batch", "4"),
        *("--data", str(data_path), "--quiet"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "stopped because the --timeout of 3.0 s was reached" in result.stderr
    trials = study_trials(str(tmp_path / "lrsweep.db"), "t")
    assert trials and all(t.state.is_finished() for t in trials)
    # No batch was claimed after the deadline (checked right before each claim): every trial
    # started within the timeout of the first, which started after the worker's clock began
    # (1 s of margin for the claim's own transaction).
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    assert max(starts) - min(starts) <= datetime.timedelta(seconds=4)
