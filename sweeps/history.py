"""What a worker knows of its study: the trials Optuna's sampler and pruner would see.

Reading a study's trials from the database costs O(study size) per read, and Optuna's samplers
and pruners read them on every call. A worker here loads each trial in a final state (COMPLETE,
PRUNED, FAIL) once (its own from memory, other workers' by id), and re-reads only the live
ones (RUNNING, WAITING: other workers' batches, queued copies) before each claim. The pruner
sees all of them, as `should_prune` would; TPE samples over a bounded history (the best trials
plus the most recent, and other workers' running trials for its constant liar).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

DEFAULT_SAMPLER_HISTORY = 200
LIVE_STATES = (TrialState.RUNNING, TrialState.WAITING)


class StudyHistory:
    """One study's trials as this worker last read them, by trial id."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int) -> None:
        self._storage = storage
        self._study_id = study_id
        self._final: dict[int, FrozenTrial] = {}
        self._live: list[FrozenTrial] = []

    @property
    def population(self) -> list[FrozenTrial]:
        """Every trial of the study as last read: what a pruner compares a trial with."""
        return [*self._final.values(), *self._live]

    def sync(self, final_ids: Iterable[int]) -> None:
        """Load the final trials not held yet, and every live trial afresh."""
        for trial_id in final_ids:
            if trial_id not in self._final:
                self._final[trial_id] = self._storage.get_trial(trial_id)
        self._live = self._storage.get_all_trials(
            self._study_id, deepcopy=False, states=LIVE_STATES
        )

    def add(self, trial: FrozenTrial) -> None:
        """Record a trial this worker finished itself (no need to read it back)."""
        self._final[trial._trial_id] = trial

    def sampler_view(self, limit: int) -> list[FrozenTrial]:
        """Other workers' running trials, and at most `limit` finished ones: the best completed
        half and the most recent other half."""
        finished = [t for t in self._final.values() if t.state != TrialState.FAIL]
        running = [t for t in self._live if t.state == TrialState.RUNNING]
        if len(finished) <= limit:
            return [*finished, *running]
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        best = sorted(complete, key=lambda t: t.value or 0.0, reverse=True)[: limit // 2]
        chosen = {t._trial_id for t in best}
        recent = sorted((t for t in finished if t._trial_id not in chosen), key=lambda t: t.number)
        return [*best, *recent[-(limit - len(best)) :], *running]


def sampler_mirror(
    sampler: optuna.samplers.BaseSampler, study_name: str, trials: list[FrozenTrial]
) -> optuna.Study:
    """An in-memory study holding `trials`, for asking a batch of trials with no DB traffic."""
    mirror = optuna.create_study(study_name=study_name, direction="maximize", sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        mirror.add_trials(sorted(trials, key=lambda t: t.number))
    return mirror
