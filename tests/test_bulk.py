"""Bulk claims and epoch writes land as Optuna itself would store them: read back through
Optuna, on every storage kind."""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Iterator

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sqlalchemy import select, text, update

from conftest import unique_study
from lrsweep.storage import (
    SqlTrialStore,
    StorageSettings,
    open_storage,
    reads,
    resolve_storage_url,
)
from lrsweep.storage.bulk import Finished, fail_if_running
from lrsweep.storage.optuna_rdb import HEARTBEATS

DISTRIBUTIONS = {
    "scheduler": CategoricalDistribution(["step", "cosine"]),
    "lr": FloatDistribution(1e-3, 1.0, log=True),
    "step.step_size": IntDistribution(2, 25),
}


def _proposal(
    i: int, kind: str = "step", state: TrialState = TrialState.RUNNING
) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        params={"scheduler": kind, "lr": 0.01 * (i + 1), "step.step_size": i + 2},
        distributions=DISTRIBUTIONS,
        user_attrs={"index": i},
    )


@pytest.fixture
def storage(storage_url: str) -> Iterator[optuna.storages.RDBStorage]:
    opened = open_storage(StorageSettings(resolve_storage_url(storage_url)))
    assert isinstance(opened, optuna.storages.RDBStorage)
    yield opened
    opened.engine.dispose()


def _heartbeat_ids(storage: optuna.storages.RDBStorage, study_id: int) -> set[int]:
    with storage.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT h.trial_id FROM trial_heartbeats h JOIN trials t USING (trial_id) "
                "WHERE t.study_id = :id"
            ),
            {"id": study_id},
        )
        return set(rows.scalars())


def test_claimed_and_finished_trials_read_back_like_optuna_trials(
    storage: optuna.storages.RDBStorage,
) -> None:
    study = optuna.create_study(storage=storage, study_name="bulk", direction="maximize")
    study.tell(study.ask(), 0.5)  # one ordinary trial first: numbering continues after it
    store = SqlTrialStore(storage, "bulk")
    proposals = [_proposal(i, kind) for i, kind in enumerate(["step", "cosine", "step"])]
    created = store.claim(proposals, None, {"worker": "w1"}, "c1")
    assert [t.number for t in created] == [1, 2, 3]
    assert all(t.user_attrs["worker"] == "w1" for t in created)
    # Each trial has beaten once already, so a worker killed right now still leaves trials
    # that the stale-trial check will find (Optuna skips trials with no heartbeat at all).
    assert _heartbeat_ids(storage, store.study_id) == {t._trial_id for t in created}
    first, second, third = (t._trial_id for t in created)
    store.write_epoch([(t._trial_id, 0, 0.6) for t in created], [(first, "completed_rung_0", 0.6)])
    # One trial is failed meanwhile (as a stale-trial check would): it keeps that state.
    storage.set_trial_state_values(third, TrialState.FAIL)
    write = store.write_epoch(
        [(first, 1, 0.7), (second, 1, 0.8), (third, 1, 0.9)],
        finished=[
            Finished(first, TrialState.COMPLETE, 0.7, {"stop_reason": "finished"}),
            Finished(second, TrialState.PRUNED, 0.8, {"stop_reason": "pruned"}),
            Finished(third, TrialState.COMPLETE, 0.9, {"stop_reason": "finished"}),
        ],
    )
    assert write.finished == {first, second} and write.lost == {third}
    trials = optuna.load_study(study_name="bulk", storage=storage).get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    done, pruned, failed = trials[1:]
    assert done.params == {"scheduler": "step", "lr": 0.01, "step.step_size": 2}
    assert done.distributions == DISTRIBUTIONS
    assert done.user_attrs == {"worker": "w1", "index": 0, "stop_reason": "finished"}
    assert done.system_attrs == {"completed_rung_0": 0.6, "lrsweep:claim": "c1"}
    assert done.intermediate_values == {0: 0.6, 1: 0.7}
    assert done.value == 0.7 and pruned.value == 0.8
    # Nothing is written into a trial that is no longer RUNNING.
    assert failed.value is None and "stop_reason" not in failed.user_attrs
    assert failed.intermediate_values == {0: 0.6}
    assert study.best_trial.number == 1


def test_an_epoch_write_retried_after_a_lost_acknowledgement_changes_nothing(
    storage: optuna.storages.RDBStorage,
) -> None:
    optuna.create_study(storage=storage, study_name="again", direction="maximize")
    store = SqlTrialStore(storage, "again")
    a, b = (t._trial_id for t in store.claim([_proposal(0), _proposal(1)], None, {}, "c1"))
    epoch = ([(a, 0, 0.5), (b, 0, 0.6)], [(a, "completed_rung_0", 0.5)])
    finished = [Finished(b, TrialState.PRUNED, 0.6, {"stop_reason": "pruned"})]
    first = store.write_epoch(*epoch, finished)
    again = store.write_epoch(*epoch, finished)  # the commit landed, its answer did not
    assert first == again and again.finished == {b} and not again.lost
    with storage.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT trial_id, step FROM trial_intermediate_values "
                "WHERE trial_id IN (:a, :b) ORDER BY trial_id"
            ),
            {"a": a, "b": b},
        ).all()
    assert [tuple(row) for row in rows] == [(a, 0), (b, 0)]
    trials = optuna.load_study(study_name="again", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.PRUNED]
    assert trials[1].value == 0.6


def test_claims_pop_queued_trials_first_and_respect_the_cap(
    storage: optuna.storages.RDBStorage,
) -> None:
    study = optuna.create_study(storage=storage, study_name="cap", direction="maximize")
    store = SqlTrialStore(storage, "cap")
    study.tell(study.ask(), 0.5)
    store.enqueue([_proposal(7, state=TrialState.WAITING)])
    # Target 4: one finished, one waiting (owed a place), so at most 2 new ones may start.
    claimed = store.claim([_proposal(i) for i in range(5)], 4, {"worker": "w"}, "c1")
    assert [t.params["lr"] for t in claimed] == pytest.approx([0.08, 0.01, 0.02])
    assert claimed[0].state == TrialState.RUNNING and claimed[0].user_attrs["worker"] == "w"
    assert store.claim([_proposal(9)], 4, {}, "c2") == []  # full: 1 finished + 3 running
    counts = store.counts()
    assert counts == {"COMPLETE": 1, "RUNNING": 3}
    # The same claim retried after its commit landed (its answer lost) starts nothing more.
    again = store.claim([_proposal(i) for i in range(5)], 4, {"worker": "w"}, "c1")
    assert [t._trial_id for t in again] == [t._trial_id for t in claimed]
    assert store.counts() == counts
    assert _heartbeat_ids(storage, store.study_id) == {t._trial_id for t in claimed}


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset")
def test_timestamps_are_naive_utc_whatever_the_local_zone(
    storage: optuna.storages.RDBStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run far from UTC: durations of bulk-finished trials and of Optuna-started ones (popped
    copies) must be right, and agree with Optuna's own trials."""
    monkeypatch.setenv("TZ", "LRS-14")  # UTC+14, a POSIX zone: needs no tzdata
    time.tzset()
    try:
        study = optuna.create_study(storage=storage, study_name="tz", direction="maximize")
        store = SqlTrialStore(storage, "tz")
        store.enqueue([_proposal(1, state=TrialState.WAITING)])
        before = datetime.datetime.now()
        popped, created = store.claim([_proposal(0), _proposal(2)], None, {}, "c1")
        store.write_epoch(
            [],
            finished=[Finished(t._trial_id, TrialState.COMPLETE, 0.5) for t in (popped, created)],
        )
        optuna_trial = study.ask()
        study.tell(optuna_trial, 0.5)
        after = datetime.datetime.now()
        for trial in optuna.load_study(study_name="tz", storage=storage).get_trials():
            assert trial.datetime_start is not None and trial.datetime_complete is not None
            assert before - datetime.timedelta(seconds=2) <= trial.datetime_start <= after
            slack = datetime.timedelta(seconds=2)
            assert trial.duration is not None
            assert datetime.timedelta(0) <= trial.duration <= after - before + slack
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert os.environ.get("TZ") is None


def test_claiming_nothing_writes_nothing(storage: optuna.storages.RDBStorage) -> None:
    study = optuna.create_study(storage=storage, study_name="empty")
    assert SqlTrialStore(storage, "empty").claim([], None, {}, "c1") == []
    assert study.trials == []


FINITE = st.floats(-1e6, 1e6, allow_nan=False)
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def _stored_trials(draw: st.DrawFn) -> list[optuna.trial.FrozenTrial]:
    """Finished trials as Optuna stores them: any state, curves with NaN and infinities, any
    kind of parameter, system attributes of any JSON value."""
    trials = []
    for _ in range(draw(st.integers(1, 6))):
        state = draw(st.sampled_from([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]))
        steps = draw(st.lists(st.one_of(FINITE, SPECIAL), max_size=8))
        value = draw(st.one_of(FINITE, st.sampled_from([math.inf, -math.inf])))
        kind = draw(st.sampled_from(["step", "cosine"]))
        trials.append(
            optuna.trial.create_trial(
                state=state,
                value=None if state == TrialState.FAIL else value,
                params={
                    "scheduler": kind,
                    "lr": draw(st.floats(1e-3, 1.0)),
                    "step.step_size": draw(st.integers(2, 25)),
                },
                distributions=DISTRIBUTIONS,
                user_attrs={"ignored": True},
                system_attrs=draw(
                    st.dictionaries(
                        st.sampled_from(["completed_rung_0", "completed_rung_1", "x"]),
                        st.one_of(FINITE, st.text(max_size=5), st.lists(st.integers())),
                    )
                ),
                intermediate_values=dict(enumerate(steps)),
            )
        )
    return trials


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset")
@pytest.mark.parametrize("zone", ["UTC", "LRS-14"])  # LRS-14: UTC+14, a POSIX zone
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(trials=_stored_trials())
def test_bulk_reads_equal_optuna_s_own_reads_but_for_user_attrs(
    storage: optuna.storages.RDBStorage, zone: str, trials: list[optuna.trial.FrozenTrial]
) -> None:
    study = optuna.create_study(storage=storage, study_name=unique_study())
    for trial in trials:
        study.add_trial(trial)
    ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
    chunk, zone_before = reads.CHUNK, os.environ.get("TZ")
    reads.CHUNK = 2  # several chunks per read
    os.environ["TZ"] = zone
    time.tzset()
    try:
        with storage.engine.connect() as connection:
            bulk_read = list(reads.trials_by_id(connection, ids))
        expected = [storage.get_trial(trial_id) for trial_id in ids]
    finally:
        reads.CHUNK = chunk
        if zone_before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = zone_before
        time.tzset()
    for ours, optunas in zip(bulk_read, expected, strict=True):
        assert ours.user_attrs == {}
        ours.user_attrs = optunas.user_attrs
        # NaN != NaN: compare curves by their repr, everything else by equality.
        assert repr(ours.intermediate_values) == repr(optunas.intermediate_values)
        ours.intermediate_values = optunas.intermediate_values
        assert ours == optunas


def test_a_stale_sweep_fails_only_trials_still_silent_and_queues_their_copies(
    storage: optuna.storages.RDBStorage,
) -> None:
    """A trial is failed as stale only if its last beat is older than the grace period when
    the lock is held: one that beat after being listed (a slow worker) keeps running."""
    name = unique_study()
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    store = SqlTrialStore(storage, name)
    silent, beating = store.claim([_proposal(1), _proposal(2)], None, {}, "c")
    row = HEARTBEATS.c.trial_id == silent._trial_id
    with storage.engine.begin() as connection:
        beat = connection.execute(select(HEARTBEATS.c.heartbeat).where(row)).scalar_one()
        hour_ago = beat - datetime.timedelta(hours=1)
        connection.execute(update(HEARTBEATS).where(row).values(heartbeat=hour_ago))
    store.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {
        silent.number: TrialState.FAIL,
        beating.number: TrialState.RUNNING,
        2: TrialState.WAITING,  # the silent trial's copy
    }
    with storage.engine.begin() as connection:
        assert fail_if_running(connection, [beating._trial_id], silent_for_s=30) == []
        assert fail_if_running(connection, [beating._trial_id]) == [beating._trial_id]
