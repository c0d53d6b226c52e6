"""Names of the user attributes lrsweep records on every trial (read by status and exports)."""

WORKER_ATTR = "worker"  # host:pid of the worker that ran the trial
SCHEDULER_CLASS_ATTR = "scheduler_class"  # torch class of the trial's schedule
STOP_REASON_ATTR = "stop_reason"  # finished, pruned or diverged
LR_USED_ATTR = "lr_per_epoch"  # [epoch][fold]: the lrs a metric-driven schedule (plateau) used
RECIPE_ATTR = "recipe"  # a population member's lineage as the config it exports (`train-config`)
EXPLOITS_ATTR = "exploits"  # a population member's exploits: epoch, the trial it copied, new lr
SELECTION_ATTR = "lrsweep.selection"  # the study's recorded robust choice (a study user attr)
AT_CHANCE_ATTR = "at_chance"  # True: no better than always answering the most common class
