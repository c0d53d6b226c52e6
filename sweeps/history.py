"""What a worker knows of its study: every finished trial, synced incrementally, and a bounded
in-memory copy for the sampler.

Reading a study's trials from the database costs O(study size) per read, and Optuna's samplers
and pruners read them on every call. A worker here loads each finished trial once (its own from
memory, other workers' by id), so per-trial cost does not grow with the study. TPE samples over
a bounded history (the best trials plus the most recent), which keeps its fitting cost flat too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

DEFAULT_SAMPLER_HISTORY = 200


class StudyHistory:
    """Finished (COMPLETE and PRUNED) trials of one study, by trial id."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._storage = storage
        self._trials: dict[int, FrozenTrial] = {}

    @property
    def trials(self) -> list[FrozenTrial]:
        return list(self._trials.values())

    def sync(self, finished_ids: Iterable[int]) -> int:
        """Load the finished trials not held yet; returns how many were loaded."""
        missing = [trial_id for trial_id in finished_ids if trial_id not in self._trials]
        for trial_id in missing:
            self._trials[trial_id] = self._storage.get_trial(trial_id)
        return len(missing)

    def add(self, trial: FrozenTrial) -> None:
        """Record a trial this worker finished itself (no need to read it back)."""
        self._trials[trial._trial_id] = trial

    def sampler_view(self, limit: int) -> list[FrozenTrial]:
        """At most `limit` trials: the best completed half, the most recent other half."""
        trials = self.trials
        if len(trials) <= limit:
            return trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = sorted(complete, key=lambda t: t.value or 0.0, reverse=True)[: limit // 2]
        chosen = {t._trial_id for t in best}
        recent = sorted((t for t in trials if t._trial_id not in chosen), key=lambda t: t.number)[
            -(limit - len(best)) :
        ]
        return sorted([*best, *recent], key=lambda t: t.number)


def sampler_mirror(
    sampler: optuna.samplers.BaseSampler, study_name: str, trials: list[FrozenTrial]
) -> optuna.Study:
    """An in-memory study holding `trials`, for asking a batch of trials with no DB traffic.

    Trials asked here and not told stay RUNNING, so TPE's constant liar spreads the batch.
    """
    mirror = optuna.create_study(study_name=study_name, direction="maximize", sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        mirror.add_trials(trials)
    return mirror
