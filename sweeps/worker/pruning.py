"""Prune a whole batch each epoch, deciding exactly as `trial.should_prune()` would over the
study as this worker last read it (other workers' trials as of the batch's start).

`should_prune` re-reads the trial and, inside the pruner, every trial of the study from the
database: one round trip per trial per epoch. Here the pruner runs over an in-memory view of the
study (what it needs of the trials finished when the batch started, other workers' live trials,
and the batch's own running trials with the values reported so far), so the decisions need no
database traffic. What the pruner writes (SuccessiveHalving's rung marks) is kept and handed back
to be stored in bulk.

A worker keeps of each finished trial only what its pruner reads (`FinishedTrials`): percentile
pruners (Median is one) read completed trials' values step by step, so those are kept as one
float array per step and the percentile is computed once per step and batch, as Optuna computes
it; SuccessiveHalving and Hyperband read trials' states, numbers and rung marks, so those are
kept as trials stripped of everything else; NopPruner reads nothing.
"""

from __future__ import annotations

import copy
import math
from array import array
from collections.abc import Callable, Container, Iterable
from typing import Any, cast

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.sweeps.worker.optuna_percentile import (
    PercentileSettings,
    best_intermediate_value,
    is_first_in_interval_step,
    percentile_settings,
)

RUNG_PREFIX = "completed_rung_"  # SuccessiveHalving's marks (and Hyperband's, per bracket)


class FinishedTrials:
    """What `pruner` reads of a study's finished trials, kept as they arrive (see module)."""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self._keep: Callable[[FrozenTrial], FrozenTrial] | None = None
        if isinstance(pruner, RUNG_PRUNERS):
            self._keep = _stripped
        elif not isinstance(pruner, optuna.pruners.PercentilePruner | optuna.pruners.NopPruner):
            self._keep = _whole  # a pruner of unknown needs (a stored spec may name any)
        self.completed = 0
        self._completed_by_step: dict[int, array[float]] = {}
        self.trials: list[FrozenTrial] = []

    def add(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.completed += 1
            for step, value in trial.intermediate_values.items():
                self._completed_by_step.setdefault(step, array("d")).append(value)
        if self._keep is not None:
            self.trials.append(self._keep(trial))

    def completed_at(self, step: int) -> np.ndarray:
        """The values completed trials reported at `step` (a copy)."""
        return np.array(self._completed_by_step.get(step, ()), dtype=float)


RUNG_PRUNERS = (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)


def _whole(trial: FrozenTrial) -> FrozenTrial:
    return trial


def _stripped(trial: FrozenTrial) -> FrozenTrial:
    """`trial` with only what SuccessiveHalving and Hyperband read: its number, state, rung
    marks and last step (for `min_resource="auto"`)."""
    last = trial.last_step
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={k: v for k, v in trial.system_attrs.items() if k.startswith(RUNG_PREFIX)},
        intermediate_values={} if last is None else {last: trial.intermediate_values[last]},
        trial_id=trial_id_of(trial),
    )


class TrialsView:
    """The part of Optuna's storage API that pruners use, over trials held in memory."""

    def __init__(self, study_name: str, direction: StudyDirection, trials: Iterable[FrozenTrial]):
        self._study_name = study_name
        self._direction = direction
        self._trials = {trial_id_of(trial): trial for trial in trials}
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
        finished: FinishedTrials,
        live: Iterable[FrozenTrial],
        running: Iterable[FrozenTrial],
    ) -> None:
        """`live`: other workers' RUNNING and WAITING trials; `running`: this batch's."""
        self._pruner = pruner
        self._finished = finished
        self._view = TrialsView(study_name, direction, [*finished.trials, *live, *running])
        self._study = optuna.Study(
            study_name=study_name,
            storage=cast(optuna.storages.BaseStorage, self._view),
            sampler=optuna.samplers.RandomSampler(),
            pruner=pruner,
        )
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
        settings = percentile_settings(pruner)
        n_completed = self._finished.completed
        if n_completed == 0 or n_completed < settings.n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < settings.n_warmup_steps:
            return False
        if not is_first_in_interval_step(
            step,
            trial.intermediate_values.keys(),
            settings.n_warmup_steps,
            settings.interval_steps,
        ):
            return False
        direction = self._study.direction
        best = best_intermediate_value(trial, direction)
        if math.isnan(best):
            return True
        if step not in self._percentile_by_step:
            self._percentile_by_step[step] = self._percentile_at(settings, step)
        threshold = self._percentile_by_step[step]
        if math.isnan(threshold):
            return False
        return best < threshold if direction == StudyDirection.MAXIMIZE else best > threshold

    def _percentile_at(self, settings: PercentileSettings, step: int) -> float:
        """The threshold `PercentilePruner` computes at `step`, over the kept values."""
        values = self._finished.completed_at(step)
        if len(values) < settings.n_min_trials:
            return math.nan
        maximize = self._study.direction == StudyDirection.MAXIMIZE
        percentile = settings.percentile
        return float(np.nanpercentile(values, 100 - percentile if maximize else percentile))
