"""Claim a batch of trials: re-queued ones first, the rest sampled in memory, created in bulk.

Must run while holding the study's claim lock (`TrialStore.exclusive`); with the study's
target as `cap`, that is what keeps the study's trial count exact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.history import StudyHistory, sampler_mirror
from sweeps.study import OpenStudy
from sweeps.trial_attrs import SCHEDULER_CLASS_ATTR, WORKER_ATTR
from trainer import TrainConfig


@dataclass(frozen=True)
class ClaimedTrial:
    """A RUNNING trial in the storage, its config, and its stored form (for the pruner view)."""

    config: TrainConfig
    stored: FrozenTrial

    @property
    def trial_id(self) -> int:
        return self.stored._trial_id

    @property
    def number(self) -> int:
        return self.stored.number


def claim_trials(
    opened: OpenStudy,
    history: StudyHistory,
    *,
    count: int,
    waiting: int,
    sampler_history: int,
    worker_name: str,
    cap: int | None,
) -> list[ClaimedTrial]:
    """Create up to `count` RUNNING trials: the `waiting` re-queued ones, then TPE's
    proposals (fewer when other workers filled the study up to `cap` first)."""
    storage, store = opened.storage, opened.store
    mirror = sampler_mirror(
        opened.study.sampler, opened.study.study_name, history.sampler_view(sampler_history)
    )
    claimed = []
    for _ in range(min(waiting, count)):
        trial = _ask(opened.study)  # pops the oldest WAITING trial, params fixed
        store.record_heartbeat(trial._trial_id)  # see TrialStore.create_trials
        config = _suggest(opened, trial)
        for key, value in _attrs(config, worker_name).items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        claimed.append(ClaimedTrial(config, storage.get_trial(trial._trial_id)))
    proposals = []
    for _ in range(count - len(claimed)):
        trial = _ask(mirror)
        config = _suggest(opened, trial)
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=_attrs(config, worker_name),
        )
        proposals.append((config, template))
    created = store.create_trials([template for _, template in proposals], cap)
    claimed += [ClaimedTrial(config, stored) for (config, _), stored in zip(proposals, created)]
    return claimed


def _suggest(opened: OpenStudy, trial: optuna.Trial) -> TrainConfig:
    settings = opened.settings
    return settings.space.suggest(trial, epochs=settings.epochs, batch_size=settings.batch_size)


def _attrs(config: TrainConfig, worker_name: str) -> dict[str, str]:
    return {WORKER_ATTR: worker_name, SCHEDULER_CLASS_ATTR: config.schedule.torch_class_name}


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # This worker records heartbeats itself (storage.heartbeat), which Optuna cannot see.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return study.ask()
