"""A sweep worker: propose a batch of trials, claim it, train it, until the study has N.

`N` counts COMPLETE + PRUNED trials of the whole study, whichever worker ran them. TPE samples a
batch of proposals with no lock held (on a GPU, while the previous batch trains:
`sweeps.worker.prefetch`); the store then starts, under the study's claim lock,
queued trials first and as many proposals as keep the study within N (`TrialStore.claim`), so
the study never overshoots. When no place is left, the worker waits for the running trials to
finish or be declared dead by the heartbeat check (their copies then come back as WAITING).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from optuna.samplers import BaseSampler

from lrsweep.storage import StorageLost
from lrsweep.storage.outage import InterruptRequested, retrying, signals_held
from lrsweep.storage.trial_store import finished_count
from lrsweep.sweeps.study.attributes import WORKER_ATTR
from lrsweep.sweeps.study.open import OpenStudy, fold_tensors
from lrsweep.sweeps.worker.batch import BatchOutcome, TrialBatch
from lrsweep.sweeps.worker.history import StudyHistory
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.sweeps.worker.prefetch import Proposals
from lrsweep.sweeps.worker.proposals import ClaimedTrial
from lrsweep.sweeps.worker.sampling import make_sampler
from lrsweep.sweeps.worker.trackers import Trackers
from lrsweep.trainer.training import resolve_device, torch_threads

POLL_INTERVAL_S = 0.25
MAX_CONSECUTIVE_ERRORS = 3
HAND_BACK_GIVE_UP_S = 30.0


def open_slots(counts: Counter[str], target: int | None) -> int | None:
    """How many trials may start now; None once the study has reached its target."""
    if target is None:
        return sys.maxsize
    finished = finished_count(counts)
    if finished >= target:
        return None
    return max(0, target - finished - counts["RUNNING"])


def batch_share(available: int, trials_per_batch: int, busy_workers: int) -> int:
    """How many trials to claim: a full batch, or, near the target, an even share of the open
    places with the other workers now training, so that none trains the last large batch
    alone while the rest wait."""
    return min(trials_per_batch, -(-available // (busy_workers + 1)))


@dataclass(frozen=True)
class WorkerSummary:
    """What one worker did, why it stopped (target reached, or its --timeout), and where its
    time went."""

    trials_run: int
    by_reason: dict[str, int]
    stopped_because: str
    seconds: dict[str, float]  # wall time by what the worker was doing
    proposed_ahead: int = 0  # trials proposed while an earlier batch trained

    def time_line(self) -> str:
        """Where the worker's time went, largest first."""
        spent = sorted(self.seconds.items(), key=lambda item: -item[1])
        return ", ".join(f"{seconds:.2f} s {what}" for what, seconds in spent)


def run_worker(
    opened: OpenStudy, options: WorkerOptions, sampler: BaseSampler | None = None
) -> WorkerSummary:
    """Run batches of `opened.study` until the target or the time limit; see module docstring.
    Proposals come from `sampler` (default: `make_sampler(options.seed)`)."""
    with torch_threads(options.threads):
        return _run_batches(opened, options, sampler or make_sampler(options.seed))


def _run_batches(opened: OpenStudy, options: WorkerOptions, sampler: BaseSampler) -> WorkerSummary:
    device = resolve_device(options.device)
    processes = options.proposal_processes_for(on_gpu=device.type == "cuda")
    name = opened.study.study_name
    with Proposals(opened.settings, sampler, name, processes=processes) as proposals:
        return _run_claims(opened, options, device, proposals)


def _run_claims(
    opened: OpenStudy, options: WorkerOptions, device: torch.device, proposals: Proposals
) -> WorkerSummary:
    settings = opened.settings
    dataset = settings.load_data(options.data.source)
    if settings.model_spec is not None:  # the study's model must import and run here too
        settings.model_spec.check(dataset.features[:2], dataset.schema.n_outputs)
    folds = fold_tensors(settings, dataset, str(device))
    store = retrying(lambda: opened.store, "opening the study")  # it reads the study id
    history = StudyHistory(opened.study.pruner, options.sampler_history)
    trials_per_batch = options.trials_per_batch_for(device, settings.folds)
    deadline = None if options.timeout_s is None else time.monotonic() + options.timeout_s
    worker_attrs = {WORKER_ATTR: f"{socket.gethostname()}:{os.getpid()}"}
    totals: Counter[str] = Counter()
    spent: dict[str, float] = defaultdict(float)  # seconds, by what the worker was doing
    consecutive_errors = 0
    pace = _StudyPace.starting(finished_count(retrying(store.counts, "counting trials")))
    trackers = Trackers(options.trackers, opened.study.study_name) if options.trackers else None

    stopped_because = None
    while deadline is None or time.monotonic() < deadline:
        with _timed(spent, "reading the study"):
            retrying(lambda: store.fail_stale_trials(opened.study), "failing dead workers' trials")
            retrying(lambda: history.sync(store), "reading the study's trials")
            counts = retrying(store.counts, "counting trials")
        available = open_slots(counts, options.target_trials)
        if available is None:
            stopped_because = f"the study has its {options.target_trials} finished trials"
            break
        if not available:
            time.sleep(POLL_INTERVAL_S)
            continue
        count = batch_share(available, trials_per_batch, history.running_batches())
        with _timed(spent, "waiting for proposals"):
            proposed = proposals.take(history.sampler_view(), count)
        if deadline is not None and time.monotonic() >= deadline:
            break  # no claim after the deadline, however long sampling took
        claimed: list[ClaimedTrial] = []
        batch: TrialBatch | None = None
        claim_id = uuid.uuid4().hex  # once per claim: a retry finds what a lost answer started

        def claim() -> None:
            started = store.claim(proposed, options.target_trials, worker_attrs, claim_id)
            claimed[:] = [ClaimedTrial.of(settings, trial) for trial in started]

        started_at = time.perf_counter()
        outcome = None
        # From the claim to the last write of the batch (or its hand-back), SIGINT/SIGTERM are
        # held: the batch stops at the next safe point, is handed back, and the signal is
        # delivered as the block exits.
        with signals_held():
            try:
                # Not cut short by a held signal: a retry must find what a lost answer started.
                with _timed(spent, "claiming"):
                    retrying(claim, "claiming trials", interruptible=False)
                if claimed:
                    if available - len(claimed) > 0:  # the study will want another batch
                        own = [trial.stored for trial in claimed]
                        proposals.prefetch([*history.sampler_view(), *own], count)
                    on_stored = trackers.log if trackers is not None else None
                    batch = TrialBatch(opened, claimed, folds, history, on_stored)
                    with _timed(spent, "training and storing"):
                        outcome = batch.run()
            except InterruptRequested:
                hand_back(opened, _unfinished(claimed, batch), "interrupted")
            except Exception as exc:  # a failing batch must not leave its trials RUNNING
                handed = hand_back(
                    opened, _unfinished(claimed, batch), f"{type(exc).__name__}: {exc}"
                )
                if isinstance(exc, StorageLost):
                    raise
                totals["failed"] += handed
                consecutive_errors += 1
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                    raise RuntimeError(
                        f"{consecutive_errors} batches in a row failed: {exc}"
                    ) from exc
        if outcome is None:
            continue  # nothing claimed (other workers took the last places), or failed
        consecutive_errors = 0
        totals.update(outcome.by_reason)
        if outcome.lost:
            print(
                f"trials {', '.join(map(str, outcome.lost))} were failed by another worker "
                "before this one finished them (no heartbeat within the grace period); their "
                "results are dropped and their queued copies run them again",
                file=sys.stderr,
                flush=True,
            )
        if not options.quiet:
            seconds = time.perf_counter() - started_at
            _print_outcome(claimed, outcome, seconds, pace.line(opened, options.target_trials))
    timed_out = f"the --timeout of {options.timeout_s} s was reached"
    return WorkerSummary(
        sum(totals.values()),
        dict(totals),
        stopped_because or timed_out,
        dict(spent),
        proposals.proposed_ahead,
    )


@contextmanager
def _timed(spent: dict[str, float], what: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        spent[what] += time.perf_counter() - started


def _unfinished(claimed: list[ClaimedTrial], batch: TrialBatch | None) -> list[ClaimedTrial]:
    """What a failed claim or batch hands back: the claimed trials that have not ended."""
    return claimed if batch is None else batch.unfinished()


def hand_back(opened: OpenStudy, trials: list[ClaimedTrial], reason: str) -> int:
    """Fail `trials` with `reason` and queue each again; returns how many.

    Every SIGINT/SIGTERM is held from the first write to the message after the last, backoff
    included: a second Ctrl-C must not leave the batch RUNNING until its heartbeat expires (a
    third goes through). If the database stays away, or refuses, the stale-trial check
    re-queues the trials once their heartbeat expires.
    """
    if not trials:
        return 0
    trial_ids = [trial.trial_id for trial in trials]
    with signals_held():
        try:
            handed = retrying(
                lambda: opened.store.hand_back(opened.study, trial_ids, reason),
                "handing trials back",
                give_up_s=HAND_BACK_GIVE_UP_S,
                interruptible=False,
            )
        except Exception as exc:
            print(
                f"could not hand {len(trials)} trials back ({type(exc).__name__}: {exc}); "
                "they are re-queued once their heartbeat expires",
                file=sys.stderr,
            )
            return 0
        print(f"{handed} trials handed back ({reason}); re-queued", file=sys.stderr)
    return handed


def _print_outcome(
    claimed: list[ClaimedTrial], outcome: BatchOutcome, seconds: float, study_line: str
) -> None:
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(outcome.by_reason.items()))
    best = "-" if outcome.best_value is None else f"{outcome.best_value:.4f}"
    print(
        f"trials {claimed[0].number}-{claimed[-1].number}: {reasons}; batch best {best} "
        f"({seconds:.2f}s); {study_line}",
        file=sys.stderr,
        flush=True,
    )


@dataclass(frozen=True)
class _StudyPace:
    """Where the whole study (every worker's trials) stands, for the per-batch line."""

    started: float
    finished_at_start: int

    @classmethod
    def starting(cls, finished: int) -> _StudyPace:
        return cls(time.monotonic(), finished)

    def line(self, opened: OpenStudy, target: int | None) -> str:
        """Best so far, finished of the target, and the time left at the study's pace since
        this worker started (every worker's trials count); '' when the study cannot be read."""
        try:
            finished = finished_count(opened.store.counts())
            best = _best_value(opened)
        except Exception:  # an outage is for the next claim to report, not this line
            return ""
        text = f"best so far {'-' if best is None else f'{best:.4f}'}"
        if target is None:
            return f"{text}; {finished} finished"
        done, elapsed = finished - self.finished_at_start, time.monotonic() - self.started
        left = max(0, target - finished) * elapsed / done if done > 0 else None
        eta = "" if left is None else f", about {left:.0f} s left"
        return f"{text}; {finished} of {target} finished{eta}"


def _best_value(opened: OpenStudy) -> float | None:
    """The study's best value; None before its first completed trial."""
    try:
        return opened.storage.get_best_trial(opened.store.study_id).value
    except ValueError:
        return None
