"""Trials to propose to the study: TPE's batch, sampled in memory before the claim lock is taken,
and the baselines' fixed parameters. The store then starts as many as the study's target allows
(`TrialStore.claim`); a claimed trial's config is rebuilt from its stored parameters, whichever
worker proposed it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.sweeps.study.attributes import SCHEDULER_CLASS_ATTR
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker.history import sampler_mirror
from lrsweep.sweeps.worker.sampling import batch_fits
from lrsweep.trainer import TrainConfig


@dataclass(frozen=True)
class ClaimedTrial:
    """A RUNNING trial in the storage and the config it trains."""

    config: TrainConfig
    stored: FrozenTrial

    @property
    def trial_id(self) -> int:
        return trial_id_of(self.stored)

    @property
    def number(self) -> int:
        return self.stored.number

    @classmethod
    def of(cls, settings: StudySettings, stored: FrozenTrial) -> ClaimedTrial:
        return cls(settings.train_config(stored.params), stored)


def propose(
    settings: StudySettings,
    sampler: optuna.samplers.BaseSampler,
    study_name: str,
    history: list[FrozenTrial],
    count: int,
) -> list[FrozenTrial]:
    """`count` RUNNING-trial templates from TPE fitted on `history` (once per search space with
    a `BatchTPESampler`; other workers' running trials are its constant liars)."""
    mirror = sampler_mirror(sampler, study_name, history)
    with batch_fits(sampler):
        return [_template(settings, _ask(mirror), TrialState.RUNNING) for _ in range(count)]


def fixed(settings: StudySettings, params: Mapping[str, Any]) -> FrozenTrial:
    """A WAITING-trial template with all of a schedule's parameters fixed (a baseline)."""
    mirror = optuna.create_study(direction="maximize")
    mirror.enqueue_trial(dict(params))
    return _template(settings, _ask(mirror), TrialState.WAITING)


def _template(settings: StudySettings, trial: optuna.Trial, state: TrialState) -> FrozenTrial:
    config = settings.space.suggest(trial, epochs=settings.epochs, batch_size=settings.batch_size)
    return optuna.trial.create_trial(
        state=state,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={SCHEDULER_CLASS_ATTR: config.schedule.torch_class_name},
    )


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return study.ask()
