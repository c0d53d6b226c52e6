"""Real worker processes sharing one study, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from conftest import (
    freeze_while_running,
    run_sweeps,
    start_worker,
    study_trials,
    unique_study,
    wait_for_running,
    worker_name,
)
from lrsweep.storage.bulk import CLAIM_KEY

pytestmark = [pytest.mark.slow, pytest.mark.races]


def _start_worker(
    storage_url: str, study: str, data: Path, trials: int, seed: int, cwd: Path, *more: str
) -> subprocess.Popen[str]:
    return start_worker(
        storage_url,
        study,
        data,
        cwd,
        *more,
        "--trials",
        str(trials),
        "--epochs",
        "8",
        "--folds",
        "1",
        "--trials-per-batch",
        "4",
        "--seed",
        str(seed),
        "--quiet",
    )


def test_two_workers_reach_exactly_n_finished_trials(
    storage_url: str, data_path: Path, tmp_path: Path
) -> None:
    """The second worker proposes its next batch in two processes while one trains; the first
    proposes between batches: both end the study exact."""
    study_name, target = unique_study(), 40
    # The first worker is held mid-batch until the second has claimed trials of its own: on a
    # fast machine one worker could otherwise finish them all before the other has started.
    workers = [_start_worker(storage_url, study_name, data_path, target, 0, tmp_path)]
    freeze_while_running(storage_url, study_name, workers[0])
    try:
        workers.append(
            _start_worker(
                storage_url,
                study_name,
                data_path,
                target,
                1,
                tmp_path,
                "--proposal-processes",
                "2",
            )  # fmt: skip
        )
        wait_for_running(storage_url, study_name, workers=2)
    finally:
        workers[0].send_signal(signal.SIGCONT)
    ahead = []
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
        assert "s waiting for proposals" in stderr and "s training and storing" in stderr
        ahead.append(int(re.findall(r"; (\d+) proposed while a batch trained", stderr)[0]))

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
    first_of = {}
    for trial in trials:
        first_of.setdefault(trial.user_attrs["worker"], trial)
    assert len(first_of) == 2
    # Every claim of the second worker after its first takes the proposals its processes made
    # while the batch before trained (a claim may find the study full: then none started);
    # the first worker has none.
    claims = {name: {t.system_attrs[CLAIM_KEY] for t in trials if t.user_attrs["worker"] == name}
              for name in first_of}  # fmt: skip
    second_claims = len(claims[worker_name(workers[1])])
    assert ahead[0] == 0 and (ahead[1] > 0 or second_claims == 1), (ahead, claims)
    # Differently seeded samplers: the two workers did not propose identical first trials.
    first, second = first_of.values()
    assert first.params != second.params


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
