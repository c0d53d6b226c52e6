"""Re-queue a trial that ended without a result: its worker died, or was interrupted.

Optuna's `RetryHeartbeatStaleTrialCallback` re-queues a dead worker's trial as WAITING with the
same parameters and records the chain on the new trial (`failed_trial`, `retry_history`). This
does the same, in the same format (so Optuna's `retried_trial_number` and `retry_history`
read it), and also records on the failed trial why it failed and which trial re-runs it.

Failing a trial and queueing its copy happen in one transaction (the one that holds the study's
claim lock), so no claim counts the study between the two, and a worker dying halfway leaves
neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection

from lrsweep.storage.bulk import annotate_trial, enqueue_trials, fail_if_running
from lrsweep.storage.optuna_cache import uncached
from lrsweep.storage.optuna_objects import study_id_of, study_storage, trial_id_of
from lrsweep.storage.reads import trials_by_id

FAIL_REASON_ATTR = "fail_reason"
RETRIED_AS_ATTR = "retried_as"
DEFAULT_MAX_RETRY = 3


def requeue(
    connection: Connection, study_id: int, failed: FrozenTrial, reason: str, max_retry: int
) -> int | None:
    """Record `reason` on the failed trial and queue a copy; returns the copy's number, or
    None when the trial has been retried `max_retry` times already. Annotations are written
    directly: Optuna's API refuses attributes on a finished trial."""
    failed_id = trial_id_of(failed)
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > max_retry:
        annotate_trial(connection, failed_id, {FAIL_REASON_ATTR: reason})
        return None
    system_attrs: dict[str, Any] = {
        **failed.system_attrs,
        "failed_trial": failed.system_attrs.get("failed_trial", failed.number),
        "retry_history": history,
    }
    copy = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=failed.params,
        distributions=failed.distributions,
        user_attrs={k: v for k, v in failed.user_attrs.items() if k != FAIL_REASON_ATTR},
        system_attrs=system_attrs,
    )
    (number,) = enqueue_trials(connection, study_id, [copy]).values()
    annotate_trial(connection, failed_id, {FAIL_REASON_ATTR: reason, RETRIED_AS_ATTR: number})
    return number


def hand_back(
    connection: Connection,
    study_id: int,
    trial_ids: Sequence[int],
    reason: str,
    max_retry: int,
    *,
    silent_for_s: float | None = None,
) -> int:
    """Fail each of `trial_ids` that is still RUNNING (and, with `silent_for_s`, has not beat
    for that long: `fail_if_running`) and `requeue` it; returns how many. `connection` is in the
    transaction that holds the study's claim lock."""
    failed = fail_if_running(connection, trial_ids, silent_for_s=silent_for_s)
    for trial in list(trials_by_id(connection, failed, user_attrs=True)):
        requeue(connection, study_id, trial, reason, max_retry)
    return len(failed)


class RequeueStaleTrials:
    """Storage callback for heartbeat-stale trials: `requeue` them as "worker died"."""

    REASON = "worker died (no heartbeat within the grace period)"

    def __init__(self, max_retry: int = DEFAULT_MAX_RETRY) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Called by Optuna's own stale-trial check (`optuna.storages.fail_stale_trials`), which
        # only runs on an RDB storage (wrapped in Optuna's cache layer) and has failed `trial`.
        database = cast(optuna.storages.RDBStorage, uncached(study_storage(study)))
        with database.engine.begin() as connection:
            requeue(connection, study_id_of(study), trial, self.REASON, self.max_retry)
