"""Re-queue a trial that ended without a result: its worker died, or was interrupted.

Optuna's `RetryHeartbeatStaleTrialCallback` re-queues a dead worker's trial as WAITING with the
same parameters and records the chain on the new trial (`failed_trial`, `retry_history`). This
does the same, in the same format (so Optuna's `retried_trial_number` and `retry_history`
read it), and also records on the failed trial why it failed and which trial re-runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage.bulk import annotate_trial, fail_if_running
from lrsweep.storage.optuna_cache import uncached
from lrsweep.storage.optuna_objects import study_id_of, study_storage, trial_id_of

FAIL_REASON_ATTR = "fail_reason"
RETRIED_AS_ATTR = "retried_as"
DEFAULT_MAX_RETRY = 3


def requeue(
    study: optuna.Study,
    failed: FrozenTrial,
    reason: str,
    database: optuna.storages.RDBStorage,
    max_retry: int = DEFAULT_MAX_RETRY,
) -> int | None:
    """Record `reason` on the failed trial and queue a copy; returns the copy's number, or
    None when the trial has been retried `max_retry` times already. The annotations go to
    `database` directly: Optuna's API refuses attributes on a finished trial."""
    storage, failed_id = study_storage(study), trial_id_of(failed)
    annotate_trial(database, failed_id, {FAIL_REASON_ATTR: reason})
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > max_retry:
        return None
    system_attrs: dict[str, Any] = {
        **failed.system_attrs,
        "failed_trial": failed.system_attrs.get("failed_trial", failed.number),
        "retry_history": history,
    }
    retry_id = storage.create_new_trial(
        study_id_of(study),
        template_trial=optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs={k: v for k, v in failed.user_attrs.items() if k != FAIL_REASON_ATTR},
            system_attrs=system_attrs,
        ),
    )
    number = storage.get_trial_number_from_id(retry_id)
    annotate_trial(database, failed_id, {FAIL_REASON_ATTR: reason, RETRIED_AS_ATTR: number})
    return number


def hand_back(
    study: optuna.Study,
    trial_ids: Sequence[int],
    reason: str,
    database: optuna.storages.RDBStorage,
) -> int:
    """Fail each of `trial_ids` that is still RUNNING and `requeue` it; returns how many.
    Callers hold the study's claim lock, so no claim counts the study between a failure and
    its copy."""
    failed = [trial_id for trial_id in trial_ids if fail_if_running(database, trial_id)]
    for trial_id in failed:
        requeue(study, study_storage(study).get_trial(trial_id), reason, database)
    return len(failed)


class RequeueStaleTrials:
    """Storage callback for heartbeat-stale trials: `requeue` them as "worker died"."""

    def __init__(self, max_retry: int = DEFAULT_MAX_RETRY) -> None:
        self._max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Called by Optuna's stale-trial check, which only runs on an RDB storage (wrapped in
        # Optuna's cache layer).
        database = cast(optuna.storages.RDBStorage, uncached(study_storage(study)))
        requeue(
            study,
            trial,
            "worker died (no heartbeat within the grace period)",
            database,
            self._max_retry,
        )
