"""The number a trial reports every epoch and is ranked by: validation accuracy, ties broken by
validation loss.

Accuracy on a few hundred rows takes few distinct values and ties constantly; between equal
accuracies, the lower validation loss (mean BCE or cross-entropy: how confidently right the
model is, a continuous measure) marks the better model. Both go into the one number Optuna
sees, so that Optuna itself (TPE's ranking, the pruner, `study.best_trial`, `optuna
best-trial`, the dashboard) orders trials as `sweeps status`, `export` and the report do:

    objective = accuracy - 1e-7 * min(loss, 10)

The term is below 1e-6: smaller than any difference between two fold-mean accuracies when
folds hold up to about 400 rows (5 folds; the smallest difference is 1/(F n (n+1)) for folds of
n and n+1 rows), and accuracies are exact counts over rows, so it reorders ties and, on much
larger folds, differences too small to matter. Trials keep the plain
numbers as user attributes (`validation_accuracy`, `validation_loss`, `fold_accuracies`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrsweep.sweeps.study.attributes import AT_CHANCE_ATTR, LR_USED_ATTR

if TYPE_CHECKING:
    from lrsweep.trainer.training import EpochResult

LOSS_CAP = 10.0
TIE_BREAK = 1e-7


def objective(accuracy: float, loss: float) -> float:
    """Accuracy, minus a tie-break too small to reorder different accuracies."""
    capped = min(loss, LOSS_CAP) if math.isfinite(loss) else LOSS_CAP
    return accuracy - TIE_BREAK * capped


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

    def user_attrs(self, chance: float | None = None) -> dict[str, object]:
        """The numbers a finished trial keeps; marked `at_chance` when its accuracy is no
        better than `chance` (always answering the most common class: features used raw
        often do that)."""
        attrs: dict[str, object] = {
            "validation_accuracy": self.accuracy,
            "validation_loss": self.loss,
        }
        if chance is not None and self.accuracy <= chance + 1e-9:
            attrs[AT_CHANCE_ATTR] = True
        if len(self.fold_accuracies) > 1:
            attrs["fold_accuracies"] = list(self.fold_accuracies)
        if self.lrs_used:
            attrs[LR_USED_ATTR] = [list(folds) for folds in self.lrs_used]
        return attrs
