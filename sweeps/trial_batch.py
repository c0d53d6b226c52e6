"""Train a claimed batch of trials together, prune it every epoch, store each epoch in one
transaction.

Each trial is finished in the transaction that stores the epoch it ends on: PRUNED (its last
accuracy, as Optuna's tell does) when the pruner stops it or it diverges, COMPLETE (final
accuracy) after the last epoch, with a `stop_reason` (finished, pruned or diverged). The
dashboard, `sweeps status`, the progress bar and other workers' claims see it at once, not when
the batch ends. A trial that another worker failed meanwhile as stale (its copy is queued) is
not the study's result: it is left out of this worker's history and reported as lost.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from storage import heartbeat
from storage.bulk import Finished
from storage.outage import raise_if_interrupted, retrying
from sweeps.history import StudyHistory
from sweeps.proposals import ClaimedTrial
from sweeps.pruning import BatchPruner
from sweeps.study import OpenStudy
from sweeps.trial_attrs import STOP_REASON_ATTR
from trainer.training import EpochResult, Tensors
from trainer.vectorized import BatchMember, train_batch


@dataclass(frozen=True)
class BatchOutcome:
    """Finished trials by stop reason, the best completed accuracy, and the numbers of trials
    failed by another worker before this one could finish them."""

    by_reason: Counter[str]
    best_value: float | None
    lost: tuple[int, ...] = field(default=())


def run_trial_batch(
    opened: OpenStudy,
    claimed: list[ClaimedTrial],
    tensors: Tensors,
    history: StudyHistory,
    ended: set[int],
) -> BatchOutcome:
    """Train, prune and finish every claimed trial; finished trials go into `history`, and the
    id of every trial that ended (finished, or lost to another worker) into `ended`, so a
    batch stopped half-way hands back only the rest.

    Between epochs it stops for a held signal (InterruptRequested) or a broken heartbeat.
    """
    store = opened.store
    pruner = BatchPruner(
        opened.study.pruner,
        opened.study.study_name,
        opened.study.direction,
        population=history.population,
        running=[c.stored for c in claimed],
    )
    active = set(range(len(claimed)))
    by_reason: Counter[str] = Counter()
    completed: list[float] = []
    lost: list[int] = []
    trial_ids = [c.trial_id for c in claimed]

    def after_epoch(results: Mapping[int, EpochResult]) -> set[int]:
        beat.check()
        raise_if_interrupted()
        stop = set()
        for member, result in results.items():
            pruner.report(claimed[member].trial_id, result.epoch, result.validation_accuracy)
            if pruner.should_prune(claimed[member].trial_id):
                stop.add(member)
        ending = {member: "diverged" for member in active - results.keys()}
        for member, result in results.items():
            if member in stop:
                ending[member] = "pruned"
            elif result.epoch == claimed[member].config.epochs - 1:
                ending[member] = "finished"
        finishing = {
            m: _finished(pruner.trial(claimed[m].trial_id), reason) for m, reason in ending.items()
        }
        rows = [(claimed[m].trial_id, r.epoch, r.validation_accuracy) for m, r in results.items()]
        marks = pruner.take_system_attrs()
        outcomes = [_outcome(trial) for trial in finishing.values()]
        # Training waits while the database is away, so no computed epoch is dropped; the
        # write is idempotent, so a retry after a lost acknowledgement changes nothing.
        write = retrying(lambda: store.write_epoch(rows, marks, outcomes), "storing epoch results")
        for member, trial in finishing.items():
            if trial._trial_id in write.finished:
                history.add(trial)
                by_reason[ending[member]] += 1
                if trial.state == TrialState.COMPLETE and trial.value is not None:
                    completed.append(trial.value)
        gone = {m for m in active if claimed[m].trial_id in write.lost}
        lost.extend(claimed[m].number for m in gone)
        done = {m for m, trial in finishing.items() if trial._trial_id in write.finished}
        active.difference_update(done | gone)
        ended.update(claimed[m].trial_id for m in done | gone)
        return stop | gone

    members = [BatchMember(c.config, seed=c.number) for c in claimed]
    with heartbeat(store, trial_ids) as beat:
        train_batch(members, tensors, order_seed=claimed[0].number, on_epoch=after_epoch)
    return BatchOutcome(by_reason, max(completed, default=None), tuple(sorted(lost)))


def _finished(trial: FrozenTrial, reason: str) -> FrozenTrial:
    """The trial as it is stored once finished: COMPLETE with its final accuracy, or PRUNED
    with its last accuracy (as Optuna's tell does)."""
    values = trial.intermediate_values
    return FrozenTrial(
        number=trial.number,
        state=TrialState.COMPLETE if reason == "finished" else TrialState.PRUNED,
        value=values[max(values)] if values else None,
        datetime_start=trial.datetime_start,
        datetime_complete=datetime.datetime.now(),
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={**trial.user_attrs, STOP_REASON_ATTR: reason},
        system_attrs=trial.system_attrs,
        intermediate_values=dict(values),
        trial_id=trial._trial_id,
    )


def _outcome(trial: FrozenTrial) -> Finished:
    reason = trial.user_attrs[STOP_REASON_ATTR]
    return Finished(trial._trial_id, trial.state, trial.value, {STOP_REASON_ATTR: reason})
