"""Real worker processes sharing one study, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import run_sweeps, start_worker, unique_study

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

    from storage import resolve_storage_url

    study = optuna.load_study(study_name=study_name, storage=resolve_storage_url(storage_url))
    trials = study.get_trials(deepcopy=False)
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


def _trials(storage_url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    from storage import resolve_storage_url

    study = optuna.load_study(study_name=study_name, storage=resolve_storage_url(storage_url))
    return study.get_trials(deepcopy=False)


@pytest.mark.parametrize("pruner", ["hyperband", "successive_halving", "none"])
def test_every_pruner_runs_a_study_to_its_target(
    pruner: str, tmp_path: Path, data_path: Path
) -> None:
    result = run_sweeps(
        "worker",
        "--study",
        "p",
        "--pruner",
        pruner,
        "--trials",
        "12",
        "--epochs",
        "9",
        "--data",
        str(data_path),
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    trials = _trials(str(tmp_path / "lrsweep.db"), "p")
    assert len(trials) == 12 and all(t.state.is_finished() for t in trials)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    if pruner == "none":
        assert not pruned
    for trial in pruned:
        assert trial.user_attrs["stop_reason"] in ("pruned", "diverged")
        assert len(trial.intermediate_values) < 9


def test_worker_without_target_stops_at_its_timeout(tmp_path: Path, data_path: Path) -> None:
    result = run_sweeps(
        "worker",
        "--study",
        "t",
        "--timeout",
        "2",
        "--epochs",
        "5",
        "--data",
        str(data_path),
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    trials = _trials(str(tmp_path / "lrsweep.db"), "t")
    assert trials and all(t.state.is_finished() for t in trials)
