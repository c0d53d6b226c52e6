"""A sweep worker: claim a trial slot, train, tell; until the study has N finished trials.

`N` counts COMPLETE + PRUNED trials of the whole study, whichever worker ran them. Claims are
serialised by `storage.TrialSlots`, so the study never overshoots: a worker starts a trial only
while finished + running trials < N (or a dead worker's trial waits to be re-run), and otherwise
waits for the running ones to finish or be declared dead by the heartbeat check.
"""

from __future__ import annotations

import enum
import os
import socket
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import optuna
import torch

from storage import TrialSlots, heartbeat
from sweeps.objective import TrialOutcome, run_trial
from sweeps.study import OpenStudy
from trainer import InvalidInputError, resolve_device, split_tensors
from trainer.training import cached_dataset

FINISHED_STATES = ("COMPLETE", "PRUNED")
POLL_INTERVAL_S = 0.25
MAX_CONSECUTIVE_ERRORS = 3


@dataclass(frozen=True)
class WorkerOptions:
    """How long one worker runs and on what.

    Args:
        target_trials: stop once the study has this many finished trials (None: no limit).
        timeout_s: stop claiming new trials after this many seconds (None: no limit).
        data: ionosphere CSV path (None: $IONOSPHERE_CSV or the cached OpenML copy).
        device: "cpu", "cuda", "cuda:N" or None for automatic.
        threads: torch CPU threads; 1 is fastest for this small model.
        quiet: print nothing per trial.
    """

    target_trials: int | None = None
    timeout_s: float | None = None
    data: str | None = None
    device: str | None = None
    threads: int = 1
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.target_trials is not None and self.target_trials < 1:
            raise InvalidInputError(f"--trials must be >= 1; got {self.target_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidInputError(f"--timeout must be > 0 seconds; got {self.timeout_s}")
        if self.threads < 1:
            raise InvalidInputError(f"--threads must be >= 1; got {self.threads}")


class Next(enum.Enum):
    START = "start"
    WAIT = "wait"
    DONE = "done"


def next_step(counts: Counter[str], target: int | None) -> Next:
    """Decide from the study's trial counts whether this worker may start a trial."""
    if target is None:
        return Next.START
    finished = sum(counts[state] for state in FINISHED_STATES)
    if finished >= target:
        return Next.DONE
    if counts["WAITING"] > 0 or finished + counts["RUNNING"] < target:
        return Next.START
    return Next.WAIT


@dataclass(frozen=True)
class WorkerSummary:
    trials_run: int
    by_state: dict[str, int]


def run_worker(opened: OpenStudy, options: WorkerOptions) -> WorkerSummary:
    """Run trials of `opened.study` until the target or the time limit; see module docstring."""
    settings = opened.settings
    dataset = cached_dataset(options.data)
    settings.check_data(dataset)
    device = resolve_device(options.device)
    torch.set_num_threads(options.threads)
    tensors = split_tensors(
        dataset, settings.validation_fraction, settings.split_seed, str(device)
    )
    slots = TrialSlots(opened.storage, opened.study.study_name)
    deadline = None if options.timeout_s is None else time.monotonic() + options.timeout_s
    worker_name = f"{socket.gethostname()}:{os.getpid()}"
    outcomes: Counter[str] = Counter()
    consecutive_errors = 0

    while deadline is None or time.monotonic() < deadline:
        _fail_stale_trials(opened.study)
        with slots.exclusive():
            step = next_step(slots.counts(), options.target_trials)
            trial = _ask(opened.study) if step is Next.START else None
        if step is Next.DONE:
            break
        if trial is None:
            time.sleep(POLL_INTERVAL_S)
            continue
        trial.set_user_attr("worker", worker_name)
        started = time.perf_counter()
        try:
            with heartbeat(opened.storage, [trial._trial_id]):
                outcome = run_trial(
                    opened.study,
                    trial,
                    settings.space,
                    tensors,
                    epochs=settings.epochs,
                    batch_size=settings.batch_size,
                )
        except Exception as exc:  # a failing trial must not take the worker's other trials down
            opened.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            trial_error = f"{type(exc).__name__}: {exc}"
            opened.storage.set_trial_user_attr(trial._trial_id, "error", trial_error)
            outcomes["FAIL"] += 1
            consecutive_errors += 1
            print(f"trial {trial.number} failed: {trial_error}", file=sys.stderr)
            if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                raise RuntimeError(
                    f"{consecutive_errors} trials in a row failed; last: {trial_error}"
                ) from exc
            continue
        consecutive_errors = 0
        outcomes[outcome.state.name] += 1
        if not options.quiet:
            _print_outcome(outcome, time.perf_counter() - started)
    return WorkerSummary(trials_run=sum(outcomes.values()), by_state=dict(outcomes))


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # We record heartbeats ourselves (storage.heartbeat), which Optuna cannot see.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return study.ask()


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _print_outcome(outcome: TrialOutcome, seconds: float) -> None:
    value = "-" if outcome.value is None else f"{outcome.value:.4f}"
    config = outcome.config
    print(
        f"trial {outcome.number:>5} {outcome.reason:<8} acc={value} "
        f"{config.schedule.kind} lr={config.lr:.4g} momentum={config.momentum:.3f} "
        f"({seconds:.2f}s)",
        file=sys.stderr,
        flush=True,
    )
