"""Train a claimed batch together, prune it every epoch, store each epoch in one transaction.

By the time a trial ends, every epoch's validation accuracy is in the storage (so
optuna-dashboard shows full learning curves), and it is told COMPLETE (final accuracy) or PRUNED
(last accuracy, as Optuna's tell does) with a `stop_reason`: finished, pruned or diverged.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from storage import heartbeat
from storage.bulk import Finished
from storage.resilience import retrying
from sweeps.claims import ClaimedTrial
from sweeps.history import StudyHistory
from sweeps.pruning import BatchPruner
from sweeps.study import OpenStudy
from sweeps.trial_attrs import STOP_REASON_ATTR
from trainer.batched import BatchMember, train_batch
from trainer.training import EpochResult, RunStatus, Tensors, TrainResult

STOP_REASONS = {
    RunStatus.COMPLETED: "finished",
    RunStatus.STOPPED: "pruned",
    RunStatus.DIVERGED: "diverged",
}


@dataclass(frozen=True)
class BatchOutcome:
    by_reason: Counter[str]
    best_value: float | None


def run_batch(
    opened: OpenStudy, claimed: list[ClaimedTrial], tensors: Tensors, history: StudyHistory
) -> BatchOutcome:
    """Train, prune and finish every claimed trial; finished trials go into `history`."""
    store = opened.store
    pruner = BatchPruner(
        opened.study.pruner,
        opened.study.study_name,
        opened.study.direction,
        finished=history.trials,
        running=[c.stored for c in claimed],
    )

    def after_epoch(results: Mapping[int, EpochResult]) -> set[int]:
        stop = set()
        for member, result in results.items():
            trial_id = claimed[member].trial_id
            pruner.report(trial_id, result.epoch, result.validation_accuracy)
            if pruner.should_prune(trial_id):
                stop.add(member)
        rows = [(claimed[m].trial_id, r.epoch, r.validation_accuracy) for m, r in results.items()]
        marks = pruner.take_system_attrs()
        # Training waits while the database is away, so no computed epoch is dropped.
        retrying(lambda: store.write_epoch(rows, marks), "storing epoch results")
        return stop

    members = [BatchMember(c.config, seed=c.number) for c in claimed]
    with heartbeat(store, [c.trial_id for c in claimed]):
        results = train_batch(members, tensors, order_seed=claimed[0].number, on_epoch=after_epoch)
    finished = [_finished(trial, result) for trial, result in zip(claimed, results, strict=True)]
    outcomes = [
        Finished(t._trial_id, t.state, t.value, {STOP_REASON_ATTR: t.user_attrs[STOP_REASON_ATTR]})
        for t in finished
    ]
    retrying(lambda: store.finish_trials(outcomes), "storing final results")
    by_reason: Counter[str] = Counter()
    for trial in finished:
        history.add(trial)
        by_reason[trial.user_attrs[STOP_REASON_ATTR]] += 1
    values = [r.final_accuracy for r in results if r.status is RunStatus.COMPLETED]
    return BatchOutcome(by_reason, max((v for v in values if v is not None), default=None))


def _finished(trial: ClaimedTrial, result: TrainResult) -> FrozenTrial:
    """The trial as it is stored once finished: COMPLETE with its final accuracy, or PRUNED
    with its last accuracy (as Optuna's tell does)."""
    reason = STOP_REASONS[result.status]
    state = TrialState.COMPLETE if result.status is RunStatus.COMPLETED else TrialState.PRUNED
    value = result.final_accuracy
    stored = trial.stored
    return FrozenTrial(
        number=stored.number,
        state=state,
        value=value,
        datetime_start=stored.datetime_start,
        datetime_complete=datetime.datetime.now(),
        params=stored.params,
        distributions=stored.distributions,
        user_attrs={**stored.user_attrs, STOP_REASON_ATTR: reason},
        system_attrs=stored.system_attrs,
        intermediate_values={r.epoch: r.validation_accuracy for r in result.history},
        trial_id=stored._trial_id,
    )
