"""Names of the user attributes lrsweep records on every trial (read by status and exports),
and what a trial trained with as they tell it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

WORKER_ATTR = "worker"  # host:pid of the worker that ran the trial
SCHEDULER_CLASS_ATTR = "scheduler_class"  # torch class of the trial's schedule
STOP_REASON_ATTR = "stop_reason"  # finished, pruned or diverged
LR_USED_ATTR = "lr_per_epoch"  # [epoch][fold]: the lrs a metric-driven schedule (plateau) used
RECIPE_ATTR = "recipe"  # a population member's lineage as the config it exports (`train-config`)
EXPLOITS_ATTR = "exploits"  # a population member's exploits: epoch, the trial it copied, new lr
SELECTION_ATTR = "lrsweep.selection"  # the study's recorded robust choice (a study user attr)
AT_CHANCE_ATTR = "at_chance"  # True: no better than always answering the most common class


def trained_params(trial: FrozenTrial) -> dict[str, str | float | int | bool]:
    """The trial's parameters; for a population member, what its lineage trained with (its
    drawn parameters were only its start: exploits replace them with a better member's). What
    status shows and the trackers log."""
    recipe = trial.user_attrs.get(RECIPE_ATTR)
    if recipe is None:
        return dict(trial.params)
    optimizer, factors = recipe["optimizer"], recipe["scheduler"]["params"]["factors"]
    settings = {k: v for k, v in optimizer.items() if k not in ("class", "lr", "mode")}
    return {
        "scheduler": "recorded",
        "optimizer": optimizer["class"].rsplit(".", 1)[-1],
        "lr_first": optimizer["lr"],
        "lr_last": optimizer["lr"] * factors[-1],
        **{
            k: v if isinstance(v, (str, float, int, bool)) else str(v) for k, v in settings.items()
        },
    }
