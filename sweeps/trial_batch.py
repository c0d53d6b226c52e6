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
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from storage import heartbeat
from storage.bulk import Finished
from storage.outage import raise_if_interrupted, retrying
from sweeps.history import StudyHistory
from sweeps.objective import objective
from sweeps.proposals import ClaimedTrial
from sweeps.pruning import BatchPruner
from sweeps.study import OpenStudy
from sweeps.trial_attrs import STOP_REASON_ATTR
from trainer.training import EpochResult, Tensors
from trainer.vectorized import BatchMember, train_batch

FINAL_ATTRS = (STOP_REASON_ATTR, "validation_accuracy", "validation_loss", "fold_accuracies")


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
    folds: Sequence[Tensors],
    history: StudyHistory,
    ended: set[int],
) -> BatchOutcome:
    """Train, prune and finish every claimed trial; finished trials go into `history`, and the
    id of every trial that ended (finished, or lost to another worker) into `ended`, so a
    batch stopped half-way hands back only the rest.

    Each trial trains one model per fold (members trial * F + fold of one vectorized batch)
    and reports the objective of the fold means; a trial ends when any of its folds diverges.
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
    n_folds, tie_break = len(folds), opened.settings.tie_break
    active = set(range(len(claimed)))
    scores: dict[int, EpochScores] = {}
    by_reason: Counter[str] = Counter()
    completed: list[float] = []
    lost: list[int] = []

    def after_epoch(results: Mapping[int, EpochResult]) -> set[int]:
        beat.check()
        by_trial: dict[int, list[EpochResult]] = {}
        for member, result in sorted(results.items()):
            by_trial.setdefault(member // n_folds, []).append(result)
        whole = {i: rs for i, rs in by_trial.items() if len(rs) == n_folds}
        stop, rows = set(), []
        for index, fold_results in whole.items():
            trial_id, epoch = claimed[index].trial_id, fold_results[0].epoch
            scores[index] = EpochScores.of(fold_results)
            value = scores[index].objective if tie_break else scores[index].accuracy
            rows.append((trial_id, epoch, value))
            pruner.report(trial_id, epoch, value)
            if pruner.should_prune(trial_id):
                stop.add(index)
        ending = {index: "diverged" for index in active - whole.keys()}
        for index, fold_results in whole.items():
            if index in stop:
                ending[index] = "pruned"
            elif fold_results[0].epoch == claimed[index].config.epochs - 1:
                ending[index] = "finished"
        finishing = {
            i: _finished(pruner.trial(claimed[i].trial_id), reason, scores.get(i))
            for i, reason in ending.items()
        }
        marks = pruner.take_system_attrs()
        outcomes = [_outcome(trial) for trial in finishing.values()]
        # Training waits while the database is away, so no computed epoch is dropped; the
        # write is idempotent, so a retry after a lost acknowledgement changes nothing.
        write = retrying(lambda: store.write_epoch(rows, marks, outcomes), "storing epoch results")
        for index, trial in finishing.items():
            if trial._trial_id in write.finished:
                history.add(trial)
                by_reason[ending[index]] += 1
                if trial.state == TrialState.COMPLETE and trial.value is not None:
                    completed.append(trial.value)
        gone = {i for i in active if claimed[i].trial_id in write.lost}
        lost.extend(claimed[i].number for i in gone)
        done = {i for i, trial in finishing.items() if trial._trial_id in write.finished}
        active.difference_update(done | gone)
        ended.update(claimed[i].trial_id for i in done | gone)
        raise_if_interrupted()  # after the write: a Ctrl-C keeps the epoch just computed
        leaving = stop | gone | set(ending)
        return {index * n_folds + fold for index in leaving for fold in range(n_folds)}

    members = [
        BatchMember(c.config, seed=c.number, fold=fold) for c in claimed for fold in range(n_folds)
    ]
    with heartbeat(store, [c.trial_id for c in claimed]) as beat:
        train_batch(members, folds, order_seed=claimed[0].number, on_epoch=after_epoch)
    return BatchOutcome(by_reason, max(completed, default=None), tuple(sorted(lost)))


@dataclass(frozen=True)
class EpochScores:
    """A trial's validation numbers for one epoch: means over its folds, and each fold's."""

    accuracy: float
    loss: float
    fold_accuracies: tuple[float, ...]

    @classmethod
    def of(cls, fold_results: Sequence[EpochResult]) -> EpochScores:
        return cls(
            statistics.fmean(r.validation_accuracy for r in fold_results),
            statistics.fmean(r.validation_loss for r in fold_results),
            tuple(r.validation_accuracy for r in fold_results),
        )

    @property
    def objective(self) -> float:
        return objective(self.accuracy, self.loss)

    def user_attrs(self) -> dict[str, object]:
        attrs: dict[str, object] = {
            "validation_accuracy": self.accuracy,
            "validation_loss": self.loss,
        }
        if len(self.fold_accuracies) > 1:
            attrs["fold_accuracies"] = list(self.fold_accuracies)
        return attrs


def _finished(trial: FrozenTrial, reason: str, scores: EpochScores | None) -> FrozenTrial:
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
        user_attrs={
            **trial.user_attrs,
            STOP_REASON_ATTR: reason,
            **(scores.user_attrs() if scores else {}),
        },
        system_attrs=trial.system_attrs,
        intermediate_values=dict(values),
        trial_id=trial._trial_id,
    )


def _outcome(trial: FrozenTrial) -> Finished:
    final = {key: trial.user_attrs[key] for key in FINAL_ATTRS if key in trial.user_attrs}
    return Finished(trial._trial_id, trial.state, trial.value, final)
