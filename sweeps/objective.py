"""Run one Optuna trial: sample a config, train it, report every epoch, obey the pruner."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from sweeps.space import SearchSpace
from trainer import EpochResult, RunStatus, Tensors, TrainConfig, train

STOP_REASON_ATTR = "stop_reason"
STOP_REASONS = {
    RunStatus.COMPLETED: "finished",
    RunStatus.STOPPED: "pruned",
    RunStatus.DIVERGED: "diverged",
}


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: TrialState
    reason: str
    value: float | None
    config: TrainConfig


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    space: SearchSpace,
    tensors: Tensors,
    *,
    epochs: int,
    batch_size: int,
) -> TrialOutcome:
    """Train the trial's config and tell the study how it ended.

    A diverged run (non-finite loss) is told as PRUNED with reason "diverged": the sampler
    learns the region is bad from its last reported accuracy, and the worker carries on.
    """
    config = space.suggest(trial, epochs=epochs, batch_size=batch_size)
    trial.set_user_attr("scheduler_class", config.schedule.torch_class_name)

    def report(epoch_result: EpochResult) -> bool:
        trial.report(epoch_result.validation_accuracy, epoch_result.epoch)
        return trial.should_prune()

    result = train(config, tensors, seed=trial.number, on_epoch=report)
    reason = STOP_REASONS[result.status]
    trial.set_user_attr(STOP_REASON_ATTR, reason)
    trial.set_user_attr("epochs_run", len(result.history))
    if result.status is RunStatus.COMPLETED:
        study.tell(trial, result.final_accuracy)
        return TrialOutcome(
            trial.number, TrialState.COMPLETE, reason, result.final_accuracy, config
        )
    study.tell(trial, state=TrialState.PRUNED)
    return TrialOutcome(trial.number, TrialState.PRUNED, reason, result.final_accuracy, config)
