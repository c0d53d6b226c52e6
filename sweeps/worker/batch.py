"""Train a claimed batch of trials together, prune it every epoch, store its epochs in few
transactions.

Every epoch's accuracies are stored, a few epochs per transaction: the batch's epochs are
written together at most every `STORE_INTERVAL_S` (one transaction per epoch cost as much as the
training at 64 trials per batch), sooner when MAX_UNSTORED_ROWS wait, and at once when the batch
ends or a signal asks the worker to stop; a batch that fails makes one last attempt to write
them. Each trial is finished in the transaction that stores the epoch it ends on: PRUNED (its
last accuracy, as Optuna's tell does) when the pruner stops it or it diverges, COMPLETE (final
accuracy) after the last epoch, with a `stop_reason` (finished, pruned or diverged). The
dashboard, `sweeps status`, the progress bar and other workers' claims see it within that
interval, not when the batch ends. A trial that another worker failed meanwhile as stale (its
copy is queued) is not the study's result: it is left out of this worker's history and reported
as lost.
"""

from __future__ import annotations

import contextlib
import datetime
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage import heartbeat
from lrsweep.storage.bulk import EpochWrite, Finished
from lrsweep.storage.outage import held_signals, raise_if_interrupted, retrying
from lrsweep.sweeps.study.attributes import LR_USED_ATTR, STOP_REASON_ATTR
from lrsweep.sweeps.study.objective import objective
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.worker.history import StudyHistory
from lrsweep.sweeps.worker.proposals import ClaimedTrial
from lrsweep.sweeps.worker.pruning import BatchPruner
from lrsweep.trainer.training import EpochResult, Tensors
from lrsweep.trainer.vectorized import BatchMember, train_batch

FINAL_ATTRS = (
    STOP_REASON_ATTR, "validation_accuracy", "validation_loss", "fold_accuracies", LR_USED_ATTR,
)  # fmt: skip
STORE_INTERVAL_S = 0.25
MAX_UNSTORED_ROWS = 20_000


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
        finished=history.finished,
        live=history.live,
        running=[c.stored for c in claimed],
    )
    n_folds, tie_break = len(folds), opened.settings.tie_break
    training = set(range(len(claimed)))  # trials still being trained
    scores: dict[int, EpochScores] = {}
    lrs_used: dict[int, list[list[float]]] = {}  # of trials whose lr follows their accuracy
    by_reason: Counter[str] = Counter()
    completed: list[float] = []
    lost: list[int] = []
    unstored = _UnstoredEpochs()

    def store_epochs(retry: bool = True) -> set[int]:
        """Write what is unstored; record the trials it finished; return the indices of trials
        another worker failed meanwhile. Without `retry`, one attempt (on the way out of a
        failed batch)."""
        nonlocal unstored
        rows, marks, finishing = unstored.rows, unstored.marks, unstored.finishing
        outcomes = [_outcome(trial) for trial, _ in finishing.values()]

        def write() -> EpochWrite:
            return store.write_epoch(rows, marks, outcomes)

        # Training waits while the database is away, so no computed epoch is dropped; the
        # write is idempotent, so a retry after a lost acknowledgement changes nothing.
        result = retrying(write, "storing epoch results") if retry else write()
        unstored = _UnstoredEpochs()
        for trial, reason in finishing.values():
            if trial._trial_id in result.finished:
                history.add(trial)
                by_reason[reason] += 1
                ended.add(trial._trial_id)
                if trial.state == TrialState.COMPLETE and trial.value is not None:
                    completed.append(trial.value)
        gone = {
            i
            for i, c in enumerate(claimed)
            if c.trial_id in result.lost and c.trial_id not in ended
        }
        lost.extend(claimed[i].number for i in sorted(gone))
        ended.update(claimed[i].trial_id for i in gone)
        return gone

    def after_epoch(results: Mapping[int, EpochResult]) -> set[int]:
        beat.check()
        by_trial: dict[int, list[EpochResult]] = {}
        for member, result in sorted(results.items()):
            by_trial.setdefault(member // n_folds, []).append(result)
        whole = {i: rs for i, rs in by_trial.items() if len(rs) == n_folds}
        stop, rows = set(), []
        for index, fold_results in whole.items():
            trial_id, epoch = claimed[index].trial_id, fold_results[0].epoch
            if claimed[index].config.schedule.reads_metric:
                lrs_used.setdefault(index, []).append([r.lr for r in fold_results])
            scores[index] = EpochScores.of(fold_results, lrs_used.get(index, ()))
            value = scores[index].objective if tie_break else scores[index].accuracy
            rows.append((trial_id, epoch, value))
            pruner.report(trial_id, epoch, value)
            if pruner.should_prune(trial_id):
                stop.add(index)
        ending = {index: "diverged" for index in training - whole.keys()}
        for index, fold_results in whole.items():
            if index in stop:
                ending[index] = "pruned"
            elif fold_results[0].epoch == claimed[index].config.epochs - 1:
                ending[index] = "finished"
        finishing = {
            i: (_finished(pruner.trial(claimed[i].trial_id), reason, scores.get(i)), reason)
            for i, reason in ending.items()
        }
        unstored.rows.extend(rows)
        unstored.marks.extend(pruner.take_system_attrs())
        unstored.finishing.update(finishing)
        training.difference_update(ending)
        leaving = set(ending)
        if not training or held_signals() or unstored.due():
            gone = store_epochs()
            leaving |= gone & training
            training.difference_update(gone)
        raise_if_interrupted()  # after the write: a Ctrl-C keeps every epoch computed
        return {index * n_folds + fold for index in leaving for fold in range(n_folds)}

    members = [
        BatchMember(c.config, seed=c.number, fold=fold) for c in claimed for fold in range(n_folds)
    ]
    with heartbeat(store, [c.trial_id for c in claimed]) as beat:
        try:
            train_batch(
                members,
                folds,
                order_seed=claimed[0].number,
                on_epoch=after_epoch,
                model_spec=opened.settings.model_spec,
            )
        except BaseException:
            # A signal, a broken heartbeat or an error: trials that ended in epochs not yet
            # written keep their results if one write still lands; the rest are handed back.
            if unstored.rows or unstored.finishing:
                with contextlib.suppress(Exception):
                    store_epochs(retry=False)
            raise
    return BatchOutcome(by_reason, max(completed, default=None), tuple(sorted(lost)))


@dataclass
class _UnstoredEpochs:
    """A batch's epoch results computed since its last write: accuracies (trial_id, step,
    value), the pruner's rung marks, and the trials that ended (by batch index)."""

    rows: list[tuple[int, int, float]] = field(default_factory=list)
    marks: list[tuple[int, str, Any]] = field(default_factory=list)
    finishing: dict[int, tuple[FrozenTrial, str]] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        """Written every STORE_INTERVAL_S, or sooner once MAX_UNSTORED_ROWS wait (one write
        stays well within a gRPC message through the storage proxy)."""
        waited = time.monotonic() - self.since
        return waited >= STORE_INTERVAL_S or len(self.rows) >= MAX_UNSTORED_ROWS


@dataclass(frozen=True)
class EpochScores:
    """A trial's validation numbers for one epoch: means over its folds, and each fold's."""

    accuracy: float
    loss: float
    fold_accuracies: tuple[float, ...]
    lrs_used: Sequence[Sequence[float]] = ()  # so far, [epoch][fold], of a plateau schedule

    @classmethod
    def of(
        cls, fold_results: Sequence[EpochResult], lrs_used: Sequence[Sequence[float]] = ()
    ) -> EpochScores:
        return cls(
            statistics.fmean(r.validation_accuracy for r in fold_results),
            statistics.fmean(r.validation_loss for r in fold_results),
            tuple(r.validation_accuracy for r in fold_results),
            lrs_used,
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
        if self.lrs_used:
            attrs[LR_USED_ATTR] = [list(folds) for folds in self.lrs_used]
        return attrs


def _finished(
    trial: FrozenTrial,
    reason: str,
    scores: EpochScores | None,
) -> FrozenTrial:
    """The trial as it is stored once finished: COMPLETE with its final accuracy, or PRUNED
    with its last accuracy (as Optuna's tell does); with the lrs it used, when its schedule
    followed its accuracy."""
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
