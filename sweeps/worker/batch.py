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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage import heartbeat
from lrsweep.storage.bulk import EpochWrite, Finished
from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.storage.outage import held_signals, raise_if_interrupted, retrying
from lrsweep.sweeps.study.attributes import AT_CHANCE_ATTR, LR_USED_ATTR, STOP_REASON_ATTR
from lrsweep.sweeps.study.objective import EpochScores
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.worker.history import StudyHistory
from lrsweep.sweeps.worker.proposals import ClaimedTrial
from lrsweep.sweeps.worker.pruning import BatchPruner
from lrsweep.trainer.training import EpochResult, Tensors
from lrsweep.trainer.vectorized import BatchMember, BatchTraining

FINAL_ATTRS = (
    STOP_REASON_ATTR, "validation_accuracy", "validation_loss", "fold_accuracies", LR_USED_ATTR,
    AT_CHANCE_ATTR,
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


class TrialBatch:
    """A claimed batch of trials, trained, pruned and finished together:

        batch = TrialBatch(opened, claimed, folds, history)
        outcome = batch.run()  # every trial finished, stored, and added to `history`
        batch.unfinished()  # after an exception: the claimed trials to hand back

    Each trial trains one model per fold (members trial * F + fold of one vectorized batch)
    and reports the objective of the fold means; a trial ends when any of its folds diverges.
    Between epochs it stops for a held signal (InterruptRequested) or a broken heartbeat.
    """

    def __init__(
        self,
        opened: OpenStudy,
        claimed: list[ClaimedTrial],
        folds: Sequence[Tensors],
        history: StudyHistory,
        on_stored: Callable[[tuple[FrozenTrial, ...]], None] | None = None,
    ) -> None:
        self._opened, self._claimed, self._folds, self._history = opened, claimed, folds, history
        self._on_stored = on_stored  # sees the trials each write finished (trackers)
        self._chance = statistics.fmean(majority_share(fold.y_val) for fold in folds)
        self._pruner = BatchPruner(
            opened.study.pruner,
            opened.study.study_name,
            opened.study.direction,
            finished=history.finished,
            live=history.live,
            running=[c.stored for c in claimed],
        )
        self._training = set(range(len(claimed)))  # indices of trials still being trained
        self._scores: dict[int, EpochScores] = {}
        self._lrs_used: dict[int, list[list[float]]] = {}  # of trials whose lr follows accuracy
        self._by_reason: Counter[str] = Counter()
        self._completed: list[float] = []
        self._lost: list[int] = []
        self._unstored = _UnstoredEpochs()
        self.ended: set[int] = set()  # ids of trials finished, or lost to another worker

    def run(self) -> BatchOutcome:
        """Train every epoch, judge it, store it; see the module docstring."""
        n_folds, claimed = len(self._folds), self._claimed
        members = [
            BatchMember(c.config, seed=c.number, fold=fold)
            for c in claimed
            for fold in range(n_folds)
        ]
        with heartbeat(self._opened.store, [c.trial_id for c in claimed]) as beat:
            try:
                training = BatchTraining(  # stacking a large batch takes a while: under the beat
                    members,
                    self._folds,
                    order_seed=claimed[0].number,
                    model_spec=self._opened.settings.model_spec,
                )
                for results in training.epochs():
                    beat.check()
                    leaving = self._after_epoch(results)
                    training.stop(i * n_folds + fold for i in leaving for fold in range(n_folds))
            except BaseException:
                # A signal, a broken heartbeat or an error: trials that ended in epochs not yet
                # written keep their results if one write still lands; the rest are handed back.
                if self._unstored.rows or self._unstored.finishing:
                    with contextlib.suppress(Exception):
                        self._store(retry=False)
                raise
        return BatchOutcome(
            self._by_reason,
            max(self._completed, default=None),
            tuple(sorted(self._lost)),
        )

    def unfinished(self) -> list[ClaimedTrial]:
        """The claimed trials that have not ended: what a stopped batch hands back."""
        return [trial for trial in self._claimed if trial.trial_id not in self.ended]

    def _after_epoch(self, results: Mapping[int, EpochResult]) -> set[int]:
        """Score, report and prune one epoch's results; store them when due; return the
        indices of the trials that leave the batch."""
        claimed, n_folds, pruner = self._claimed, len(self._folds), self._pruner
        by_trial: dict[int, list[EpochResult]] = {}
        for member, result in sorted(results.items()):
            by_trial.setdefault(member // n_folds, []).append(result)
        whole = {i: rs for i, rs in by_trial.items() if len(rs) == n_folds}
        stop, rows = set(), []
        for index, fold_results in whole.items():
            trial_id, epoch = claimed[index].trial_id, fold_results[0].epoch
            if claimed[index].config.schedule.reads_metric:
                self._lrs_used.setdefault(index, []).append([r.lr for r in fold_results])
            scores = EpochScores.of(fold_results, self._lrs_used.get(index, ()))
            self._scores[index] = scores
            value = scores.objective if self._opened.settings.tie_break else scores.accuracy
            rows.append((trial_id, epoch, value))
            pruner.report(trial_id, epoch, value)
            if pruner.should_prune(trial_id):
                stop.add(index)
        ending = {index: "diverged" for index in self._training - whole.keys()}
        for index, fold_results in whole.items():
            if index in stop:
                ending[index] = "pruned"
            elif fold_results[0].epoch == claimed[index].config.epochs - 1:
                ending[index] = "finished"
        self._unstored.rows.extend(rows)
        self._unstored.marks.extend(pruner.take_system_attrs())
        for i, reason in ending.items():
            trial = _finished(
                pruner.trial(claimed[i].trial_id), reason, self._scores.get(i), self._chance
            )
            self._unstored.finishing[i] = (trial, reason)
        self._training.difference_update(ending)
        leaving = set(ending)
        if not self._training or held_signals() or self._unstored.due():
            gone = self._store()
            leaving |= gone & self._training
            self._training.difference_update(gone)
        raise_if_interrupted()  # after the write: a Ctrl-C keeps every epoch computed
        return leaving

    def _store(self, retry: bool = True) -> set[int]:
        """Write what is unstored; record the trials it finished; return the indices of trials
        another worker failed meanwhile. Without `retry`, one attempt (on the way out of a
        failed batch)."""
        unstored, store = self._unstored, self._opened.store
        outcomes = [_outcome(trial) for trial, _ in unstored.finishing.values()]

        def write() -> EpochWrite:
            return store.write_epoch(unstored.rows, unstored.marks, outcomes)

        # Training waits while the database is away, so no computed epoch is dropped; the
        # write is idempotent, so a retry after a lost acknowledgement changes nothing.
        result = retrying(write, "storing epoch results") if retry else write()
        self._unstored = _UnstoredEpochs()
        stored = []
        for trial, reason in unstored.finishing.values():
            if trial_id_of(trial) in result.finished:
                stored.append(trial)
                self._history.add(trial)
                self._by_reason[reason] += 1
                self.ended.add(trial_id_of(trial))
                if trial.state == TrialState.COMPLETE and trial.value is not None:
                    self._completed.append(trial.value)
        gone = {
            i
            for i, c in enumerate(self._claimed)
            if c.trial_id in result.lost and c.trial_id not in self.ended
        }
        self._lost.extend(self._claimed[i].number for i in sorted(gone))
        self.ended.update(self._claimed[i].trial_id for i in gone)
        if stored and self._on_stored is not None:
            self._on_stored(tuple(stored))
        return gone


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


def majority_share(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most common class: chance, for these rows."""
    return float(torch.bincount(labels.long()).max()) / len(labels)


def _finished(
    trial: FrozenTrial,
    reason: str,
    scores: EpochScores | None,
    chance: float,
) -> FrozenTrial:
    """The trial as it is stored once finished: COMPLETE with its final accuracy, or PRUNED
    with its last accuracy (as Optuna's tell does); with the lrs it used, when its schedule
    followed its accuracy; marked when it learned nothing (no better than always answering
    the most common class: features used raw often do that)."""
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
            **(scores.user_attrs(chance) if scores else {}),
        },
        system_attrs=trial.system_attrs,
        intermediate_values=dict(values),
        trial_id=trial_id_of(trial),
    )


def _outcome(trial: FrozenTrial) -> Finished:
    final = {key: trial.user_attrs[key] for key in FINAL_ATTRS if key in trial.user_attrs}
    return Finished(trial_id_of(trial), trial.state, trial.value, final)
