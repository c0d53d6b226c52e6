"""A sweep worker: claim a batch of trials, train them together, until the study has N.

`N` counts COMPLETE + PRUNED trials of the whole study, whichever worker ran them. Claims are
serialised by the study's claim lock (`TrialStore.exclusive`, or the storage proxy's admission
check), so the study never overshoots: a worker claims at most
N - finished - running trials, and when none are left it waits for the running ones to finish or
be declared dead by the heartbeat check (their retries then come back as WAITING trials).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import optuna
import torch

from storage import TrialStore
from storage.resilience import retrying
from storage.trial_store import finished_count
from sweeps.batch import BatchOutcome, run_batch
from sweeps.claims import ClaimedTrial, claim_trials
from sweeps.history import DEFAULT_SAMPLER_HISTORY, StudyHistory
from sweeps.study import OpenStudy
from trainer import InvalidInputError
from trainer.data import cached_dataset
from trainer.training import resolve_device, split_tensors

POLL_INTERVAL_S = 0.25
MAX_CONSECUTIVE_ERRORS = 3
MAX_BATCH_CPU, MAX_BATCH_GPU = 64, 1024


@dataclass(frozen=True)
class WorkerOptions:
    """How long one worker runs and on what.

    Args:
        target_trials: stop once the study has this many finished trials (None: no limit).
        timeout_s: stop claiming new trials after this many seconds (None: no limit).
        data: ionosphere CSV path (None: $IONOSPHERE_CSV or the cached OpenML copy).
        device: "cpu", "cuda", "cuda:N" or None for automatic.
        batch_trials: trials trained together (None: chosen from the device and target).
        sampler_history: most finished trials TPE fits on (the best half and the most recent).
        threads: torch CPU threads; 1 is fastest for this small model.
        quiet: print nothing per batch.
    """

    target_trials: int | None = None
    timeout_s: float | None = None
    data: str | None = None
    device: str | None = None
    batch_trials: int | None = None
    sampler_history: int = DEFAULT_SAMPLER_HISTORY
    threads: int = 1
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.target_trials is not None and self.target_trials < 1:
            raise InvalidInputError(f"--trials must be >= 1; got {self.target_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidInputError(f"--timeout must be > 0 seconds; got {self.timeout_s}")
        if self.batch_trials is not None and self.batch_trials < 1:
            raise InvalidInputError(f"--batch-size-trials must be >= 1; got {self.batch_trials}")
        if self.sampler_history < 10:
            raise InvalidInputError(f"--sampler-history must be >= 10; got {self.sampler_history}")
        if self.threads < 1:
            raise InvalidInputError(f"--threads must be >= 1; got {self.threads}")

    def batch_size_for(self, device: torch.device) -> int:
        """Explicit, else large on a GPU and enough rounds (about 16) for TPE and the pruner."""
        if self.batch_trials is not None:
            return self.batch_trials
        cap = MAX_BATCH_GPU if device.type == "cuda" else MAX_BATCH_CPU
        if self.target_trials is None:
            return cap
        return max(1, min(cap, self.target_trials // 16))


def open_slots(counts: Counter[str], target: int | None) -> int | None:
    """How many trials may start now; None once the study has reached its target."""
    if target is None:
        return sys.maxsize
    finished = finished_count(counts)
    if finished >= target:
        return None
    return max(0, target - finished - counts["RUNNING"])


@dataclass(frozen=True)
class WorkerSummary:
    trials_run: int
    by_reason: dict[str, int]


def run_worker(opened: OpenStudy, options: WorkerOptions) -> WorkerSummary:
    """Run batches of `opened.study` until the target or the time limit; see module docstring."""
    settings = opened.settings
    dataset = cached_dataset(options.data)
    settings.check_data(dataset)
    device = resolve_device(options.device)
    torch.set_num_threads(options.threads)
    tensors = split_tensors(dataset, settings.validation_rows, str(device))
    store = opened.store
    history = StudyHistory(opened.storage)
    batch_size = options.batch_size_for(device)
    deadline = None if options.timeout_s is None else time.monotonic() + options.timeout_s
    worker_name = f"{socket.gethostname()}:{os.getpid()}"
    totals: Counter[str] = Counter()
    consecutive_errors = 0

    while deadline is None or time.monotonic() < deadline:
        retrying(lambda: _fail_stale_trials(opened.study, store), "failing dead workers' trials")
        retrying(lambda: history.sync(store.finished_trial_ids()), "reading finished trials")

        claimed: list[ClaimedTrial] = []

        def claim() -> int | None:
            # `retrying` holds a signal until the claim returns, so the claimed trials are
            # known and handed back below rather than left RUNNING until their heartbeat expires.
            with store.exclusive():
                counts = store.counts()
                available = open_slots(counts, options.target_trials)
                if available:
                    claimed[:] = claim_trials(
                        opened,
                        history,
                        count=min(batch_size, available),
                        waiting=counts["WAITING"],
                        sampler_history=options.sampler_history,
                        worker_name=worker_name,
                        cap=options.target_trials,
                    )
                return available

        # Trials created by a claim whose lock release then failed are never lost: without
        # heartbeats they are failed and re-queued by the stale-trial check.
        try:
            available = retrying(claim, "claiming trials")
        except KeyboardInterrupt:
            _fail_all(opened, claimed, "interrupted")
            raise
        if available is None:
            break
        if not claimed:
            time.sleep(POLL_INTERVAL_S)
            continue
        started = time.perf_counter()
        try:
            outcome = run_batch(opened, claimed, tensors, history)
        except KeyboardInterrupt:  # SIGINT or SIGTERM: hand the batch back, then stop
            _fail_all(opened, claimed, "interrupted")
            raise
        except Exception as exc:  # a failing batch must not leave its trials RUNNING
            _fail_all(opened, claimed, f"{type(exc).__name__}: {exc}")
            totals["failed"] += len(claimed)
            consecutive_errors += 1
            if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                raise RuntimeError(f"{consecutive_errors} batches in a row failed: {exc}") from exc
            continue
        consecutive_errors = 0
        totals.update(outcome.by_reason)
        if not options.quiet:
            _print_outcome(claimed, outcome, time.perf_counter() - started)
    return WorkerSummary(trials_run=sum(totals.values()), by_reason=dict(totals))


def _fail_all(opened: OpenStudy, claimed: list[ClaimedTrial], reason: str) -> None:
    """Fail the batch's unfinished trials with `reason` and queue each again."""
    if not claimed:
        return
    print(f"batch of {len(claimed)} trials failed: {reason}; re-queued", file=sys.stderr)
    trial_ids = [trial.trial_id for trial in claimed]
    retrying(
        lambda: opened.store.hand_back(opened.study, trial_ids, reason), "handing trials back"
    )


def _fail_stale_trials(study: optuna.Study, store: TrialStore) -> None:
    """Fail dead workers' trials and queue their copies under the claim lock, so no claim
    counts the study between the two and fills the places the copies are owed."""
    with store.exclusive(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _print_outcome(claimed: list[ClaimedTrial], outcome: BatchOutcome, seconds: float) -> None:
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(outcome.by_reason.items()))
    best = "-" if outcome.best_value is None else f"{outcome.best_value:.4f}"
    print(
        f"trials {claimed[0].number}-{claimed[-1].number}: {reasons}; best {best} "
        f"({seconds:.2f}s)",
        file=sys.stderr,
        flush=True,
    )
