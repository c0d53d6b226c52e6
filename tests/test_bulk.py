"""Bulk writes land as Optuna itself would store them: read back through Optuna."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from storage import StorageSettings, open_storage, resolve_storage_url
from storage.bulk import Finished, create_trials, finish_trials, write_epoch

DISTRIBUTIONS = {
    "scheduler": CategoricalDistribution(["step", "cosine"]),
    "lr": FloatDistribution(1e-3, 1.0, log=True),
    "step.step_size": IntDistribution(2, 25),
}


def test_created_trials_read_back_like_optuna_trials(storage_url: str) -> None:
    storage = open_storage(StorageSettings(resolve_storage_url(storage_url)))
    study = optuna.create_study(storage=storage, study_name="bulk", direction="maximize")
    study.tell(study.ask(), 0.5)  # one ordinary trial first: numbering continues after it
    templates = [
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"scheduler": kind, "lr": 0.01 * (i + 1), "step.step_size": i + 2},
            distributions=DISTRIBUTIONS,
            user_attrs={"worker": "w1", "index": i},
        )
        for i, kind in enumerate(["step", "cosine", "step"])
    ]
    study_id = storage.get_study_id_from_name("bulk")
    created = create_trials(storage, study_id, templates)
    assert [t.number for t in created] == [1, 2, 3]
    # Each trial has beaten once already, so a worker killed right now still leaves trials
    # that the stale-trial check will find (Optuna skips trials with no heartbeat at all).
    from sqlalchemy import text

    with storage.engine.connect() as connection:
        beats = connection.execute(
            text(
                "SELECT h.trial_id FROM trial_heartbeats h JOIN trials t USING (trial_id) "
                "WHERE t.study_id = :id"
            ),
            {"id": study_id},
        ).scalars()
        assert set(beats) == {t._trial_id for t in created}
    write_epoch(
        storage,
        [(t._trial_id, 0, 0.6) for t in created],
        [(created[0]._trial_id, "completed_rung_0", 0.6)],
    )
    write_epoch(storage, [(t._trial_id, 1, 0.7 + 0.1 * i) for i, t in enumerate(created)])
    # One trial failed meanwhile (as a stale-trial check would): it keeps that state.
    storage.set_trial_state_values(created[2]._trial_id, TrialState.FAIL)
    finished = finish_trials(
        storage,
        [
            Finished(created[0]._trial_id, TrialState.COMPLETE, 0.7, {"stop_reason": "finished"}),
            Finished(created[1]._trial_id, TrialState.PRUNED, 0.8, {"stop_reason": "pruned"}),
            Finished(created[2]._trial_id, TrialState.COMPLETE, 0.9, {"stop_reason": "late"}),
        ],
    )
    assert finished == 2
    trials = optuna.load_study(study_name="bulk", storage=storage).get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
    ]
    first, second, failed = trials[1:]
    assert first.params == {"scheduler": "step", "lr": 0.01, "step.step_size": 2}
    assert first.distributions == DISTRIBUTIONS
    assert first.user_attrs == {"worker": "w1", "index": 0, "stop_reason": "finished"}
    assert first.system_attrs == {"completed_rung_0": 0.6}
    assert first.intermediate_values == {0: 0.6, 1: 0.7}
    assert first.value == 0.7 and second.value == 0.8
    assert first.datetime_complete is not None and first.datetime_start is not None
    assert failed.value is None and "stop_reason" not in failed.user_attrs
    assert study.best_trial.number == 1


def test_creating_no_trials_writes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    storage = open_storage(StorageSettings(f"sqlite:///{tmp_path / 'empty.db'}"))
    study = optuna.create_study(storage=storage, study_name="empty")
    assert create_trials(storage, storage.get_study_id_from_name("empty"), []) == []
    assert study.trials == []
