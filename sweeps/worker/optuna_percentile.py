"""The private parts of Optuna's `PercentilePruner` (`MedianPruner` is one) that
`BatchPruner` reuses, under public names.

`BatchPruner` decides as `PercentilePruner.prune` does, step for step, but computes each step's
percentile once per batch; that needs the pruner's settings, which Optuna keeps in private
attributes, and two private helpers of `optuna.pruners._percentile`. Checked against Optuna
5.0.0 (pinned in constraints.txt); tests/test_optuna_internals.py fails when any of them
changes.
"""

from __future__ import annotations

from collections.abc import KeysView
from dataclasses import dataclass

from optuna.pruners import PercentilePruner, _percentile
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class PercentileSettings:
    """What a `PercentilePruner` was built with."""

    percentile: float
    n_startup_trials: int
    n_warmup_steps: int
    interval_steps: int
    n_min_trials: int


def percentile_settings(pruner: PercentilePruner) -> PercentileSettings:
    return PercentileSettings(
        percentile=pruner._percentile,
        n_startup_trials=pruner._n_startup_trials,
        n_warmup_steps=pruner._n_warmup_steps,
        interval_steps=pruner._interval_steps,
        n_min_trials=pruner._n_min_trials,
    )


def is_first_in_interval_step(
    step: int, steps: KeysView[int], n_warmup_steps: int, interval_steps: int
) -> bool:
    """Whether the pruner decides at `step`, the last of the trial's reported `steps`: no
    earlier report falls in the same interval after the warm-up."""
    return _percentile._is_first_in_interval_step(step, steps, n_warmup_steps, interval_steps)


def best_intermediate_value(trial: FrozenTrial, direction: StudyDirection) -> float:
    """The best value the trial reported at any step (NaNs ignored; NaN if all are)."""
    return _percentile._get_best_intermediate_result_over_steps(trial, direction)
