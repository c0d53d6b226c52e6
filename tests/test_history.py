"""A worker's view of its study: each finished trial recorded once, read only from the oldest
unfinished one on, and a sampler history that stays bounded; on SQLite and PostgreSQL."""

from __future__ import annotations

import optuna
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from conftest import unique_study
from lrsweep.storage import SqlTrialStore, resolve_storage_url
from lrsweep.sweeps.worker.history import StudyHistory
from lrsweep.sweeps.worker.loop import batch_share

LIMIT = 10


class ReadsRecorded(SqlTrialStore):
    """The real store, recording the first id of each state read."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        super().__init__(storage, study_name)
        self.reads: list[int] = []

    def states_from(self, first_id: int) -> dict[int, TrialState]:
        self.reads.append(first_id)
        return super().states_from(first_id)


def test_finished_trials_are_recorded_once_and_the_read_window_follows_the_oldest_unfinished(
    storage_url: str,
) -> None:
    url = resolve_storage_url(storage_url)
    name = unique_study()
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    store = ReadsRecorded(storage, name)
    history = StudyHistory(optuna.pruners.MedianPruner(), LIMIT)

    def sync() -> None:
        history.sync(store)

    slow = study.ask()  # another worker's trial, running across syncs
    quick = [study.ask() for _ in range(30)]
    for rank, trial in enumerate(quick):  # the best finish first, the worst last
        trial.report((30 - rank) / 100, 0)
        study.tell(trial, (30 - rank) / 100)
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)
    sync()
    sync()  # nothing new: nothing recorded twice
    assert history.finished.completed == 30
    assert sorted(history.finished.completed_at(0)) == [v / 100 for v in range(1, 31)]
    view = history.sampler_view()
    assert [t.number for t in view if t.state == TrialState.RUNNING] == [slow.number]
    # The best half, and the most recently finished half (here the worst).
    best, recent = [30, 29, 28, 27, 26], [5, 4, 3, 2, 1]
    assert sorted(round(t.value * 100) for t in view if t.value) == sorted(best + recent)
    assert store.reads == [0, slow._trial_id]  # the second sync reads from the oldest running

    slow.report(0.99, 0)
    study.tell(slow, 0.99)  # the oldest trial finishes last
    sync()
    assert history.finished.completed == 31
    assert 0.99 in {t.value for t in history.sampler_view()}
    assert len(history.sampler_view()) == LIMIT
    assert not history.live
    sync()
    assert store.reads[-1] > max(t._trial_id for t in study.get_trials())  # nothing to re-read
    storage.engine.dispose()


def test_the_running_batches_are_the_claims_with_trials_running(storage_url: str) -> None:
    """Two other workers' batches and a queued trial: two workers busy, on every store."""
    url = resolve_storage_url(storage_url)
    name = unique_study()
    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(storage=storage, study_name=name, direction="maximize")
    store = SqlTrialStore(storage, name)
    distributions = {"lr": FloatDistribution(1e-3, 1.0)}

    def proposal(state: TrialState) -> FrozenTrial:
        return optuna.trial.create_trial(
            state=state, params={"lr": 0.1}, distributions=distributions
        )

    store.enqueue([proposal(TrialState.WAITING)])
    history = StudyHistory(optuna.pruners.MedianPruner(), LIMIT)
    history.sync(store)
    assert history.running_batches() == 0
    store.claim([proposal(TrialState.RUNNING)] * 3, None, {"worker": "a"}, "claim-a")
    store.claim([proposal(TrialState.RUNNING)] * 2, None, {"worker": "b"}, "claim-b")
    history.sync(store)
    assert history.running_batches() == 2
    storage.engine.dispose()


@given(
    available=st.integers(1, 10_000),
    per_batch=st.integers(1, 4096),
    busy=st.integers(0, 64),
)
def test_near_the_target_workers_share_the_open_places(
    available: int, per_batch: int, busy: int
) -> None:
    """A full batch while places abound; near the target an even share, so that the workers
    training now and this one can take every open place between them, each about as much."""
    share = batch_share(available, per_batch, busy)
    assert 1 <= share <= min(per_batch, available)
    if available >= per_batch * (busy + 1):
        assert share == per_batch
    else:
        assert share * (busy + 1) >= min(available, per_batch * (busy + 1))
        assert (share - 1) * (busy + 1) < available
