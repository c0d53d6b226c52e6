"""Prune a whole batch each epoch, deciding exactly as `trial.should_prune()` would.

`should_prune` re-reads the trial and, inside the pruner, every trial of the study from the
database: one round trip per trial per epoch. Here the pruner runs over an in-memory view of the
study (trials finished when the batch started, plus the batch's own running trials with the
values reported so far), so Optuna's own pruner code decides with no database traffic. What the
pruner writes (SuccessiveHalving's rung marks) is kept and handed back to be stored in bulk.

Percentile pruners (Median is one) compare with the same per-step percentile of completed trials
for every trial of the batch; that number is computed once per step instead of once per trial,
with Optuna's own helpers, so the cost per trial stays flat as the study grows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Container, Iterable
from typing import Any, cast

import optuna
from optuna.pruners import _percentile
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class TrialsView:
    """The part of Optuna's storage API that pruners use, over trials held in memory."""

    def __init__(self, study_name: str, direction: StudyDirection, trials: Iterable[FrozenTrial]):
        self._study_name = study_name
        self._direction = direction
        self._trials = {trial._trial_id: trial for trial in trials}
        self.pending_system_attrs: list[tuple[int, str, Any]] = []

    def get_study_id_from_name(self, study_name: str) -> int:
        return 0

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [self._direction]

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return [t for t in self._trials.values() if states is None or t.state in states]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._trials[trial_id]

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        # Copy on write, as Optuna's storages do: a list the pruner took from `get_all_trials`
        # before this call must not see the new mark (SuccessiveHalving would count the trial's
        # own value twice among its competitors).
        trial = copy.copy(self._trials[trial_id])
        trial.system_attrs = {**trial.system_attrs, key: value}
        self._trials[trial_id] = trial
        self.pending_system_attrs.append((trial_id, key, value))

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        trial = copy.copy(self._trials[trial_id])
        trial.intermediate_values = {**trial.intermediate_values, step: value}
        self._trials[trial_id] = trial


class BatchPruner:
    """The study's pruner applied to one batch of running trials."""

    def __init__(
        self,
        pruner: optuna.pruners.BasePruner,
        study_name: str,
        direction: StudyDirection,
        population: Iterable[FrozenTrial],
        running: Iterable[FrozenTrial],
    ) -> None:
        self._pruner = pruner
        self._view = TrialsView(study_name, direction, [*population, *running])
        self._study = optuna.Study(
            study_name=study_name,
            storage=cast(optuna.storages.BaseStorage, self._view),
            sampler=optuna.samplers.RandomSampler(),
            pruner=pruner,
        )
        self._completed = self._view.get_all_trials(0, states=(TrialState.COMPLETE,))
        self._percentile_by_step: dict[int, float] = {}

    def report(self, trial_id: int, step: int, value: float) -> None:
        self._view.set_trial_intermediate_value(trial_id, step, value)

    def should_prune(self, trial_id: int) -> bool:
        trial = self._view.get_trial(trial_id)
        if isinstance(self._pruner, optuna.pruners.PercentilePruner):
            return self._percentile_decision(self._pruner, trial)
        return self._pruner.prune(self._study, trial)

    def trial(self, trial_id: int) -> FrozenTrial:
        """A batch trial as the pruner sees it: values reported so far, marks written."""
        return self._view.get_trial(trial_id)

    def take_system_attrs(self) -> list[tuple[int, str, Any]]:
        """What the pruner wrote since the last call, to be stored: (trial_id, key, value)."""
        pending, self._view.pending_system_attrs = self._view.pending_system_attrs, []
        return pending

    def _percentile_decision(
        self, pruner: optuna.pruners.PercentilePruner, trial: FrozenTrial
    ) -> bool:
        """PercentilePruner.prune, step for step, with the per-step percentile memoized."""
        n_completed = len(self._completed)
        if n_completed == 0 or n_completed < pruner._n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < pruner._n_warmup_steps:
            return False
        if not _percentile._is_first_in_interval_step(
            step, trial.intermediate_values.keys(), pruner._n_warmup_steps, pruner._interval_steps
        ):
            return False
        direction = self._study.direction
        best = _percentile._get_best_intermediate_result_over_steps(trial, direction)
        if math.isnan(best):
            return True
        if step not in self._percentile_by_step:
            self._percentile_by_step[step] = (
                _percentile._get_percentile_intermediate_result_over_trials(
                    self._completed, direction, step, pruner._percentile, pruner._n_min_trials
                )
            )
        threshold = self._percentile_by_step[step]
        if math.isnan(threshold):
            return False
        return best < threshold if direction == StudyDirection.MAXIMIZE else best > threshold
