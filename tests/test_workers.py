"""Real worker processes sharing one study, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import (
    freeze_while_running,
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
