"""A study's trials in the one order every reader uses: the best objective first, the earliest
among equals (Optuna's own `best_trial` is the first of them), and their counts."""

from __future__ import annotations

from collections import Counter

import optuna

from lrsweep.errors import InvalidInputError
from lrsweep.storage.trial_store import finished_count
from lrsweep.sweeps.study.attributes import RECIPE_ATTR
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import TrainConfig


def study_order(trial: optuna.trial.FrozenTrial) -> tuple[float, int]:
    """The sort key of a completed trial: best value first, earliest among equals."""
    return (-float(trial.value or 0.0), trial.number)


def finished_trials(study: optuna.Study) -> int:
    """Complete and pruned trials: what a study's target counts."""
    return finished_count(Counter(trial.state.name for trial in study.get_trials(deepcopy=False)))


def _completed(opened: OpenStudy) -> list[optuna.trial.FrozenTrial]:
    """The completed trials; a clear error if there are none (an empty or all-pruned study)."""
    complete = opened.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise InvalidInputError(f"study {opened.study.study_name!r} has no completed trial yet")
    return complete


def best_trial(opened: OpenStudy) -> optuna.trial.FrozenTrial:
    """The completed trial with the highest validation accuracy (Optuna's own `best_trial`)."""
    _completed(opened)
    return opened.study.best_trial


def top_trials(opened: OpenStudy, k: int) -> list[optuna.trial.FrozenTrial]:
    """The `k` completed trials with the highest accuracy, earliest first among equals."""
    ranked = sorted(_completed(opened), key=study_order)
    return ranked[:k]


def trial_config(opened: OpenStudy, trial: optuna.trial.FrozenTrial) -> TrainConfig:
    return trained_config(opened.settings, trial)


def trained_config(settings: StudySettings, trial: optuna.trial.FrozenTrial) -> TrainConfig:
    """What the trial trained: its parameters' config, or a population member's recorded
    recipe (the schedule its lineage followed)."""
    recipe = trial.user_attrs.get(RECIPE_ATTR)
    if recipe is not None:
        return TrainConfig.from_json_dict(recipe)
    return settings.train_config(trial.params)
