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

LOSS_CAP = 10.0
TIE_BREAK = 1e-7


def objective(accuracy: float, loss: float) -> float:
    """Accuracy, minus a tie-break too small to reorder different accuracies."""
    capped = min(loss, LOSS_CAP) if math.isfinite(loss) else LOSS_CAP
    return accuracy - TIE_BREAK * capped
