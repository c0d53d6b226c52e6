"""Does fitting TPE once per batch cost search quality? Best-so-far against trials, side by side.

For each seed and study size, the same worker runs the same sweep twice on a fresh SQLite
study: once with the service's `BatchTPESampler` (one fit per batch and search space), once
with Optuna's `TPESampler` on the same arguments, asked one trial at a time (each ask refits;
the batch's earlier asks are its constant liars). Everything else is identical: the batches, the
pruner, the data, the single validation split (`folds=1`, as `bench.compare` runs).

    python -m bench.sampler_quality [--seeds 10] [--sizes 200 1000] [--sampler-history 200]

Prints first each sampler's cost per proposal (a batch of 64 on a history of `--sampler-history`
random finished trials, both samplers timed in turn), then, per size and sampler, the best
validation objective reached by trial n (mean and standard deviation over seeds) at a few
checkpoints, and the sweep's wall time.
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import optuna

from lrsweep.storage import StorageSettings, resolve_storage_url
from lrsweep.sweeps.study.open import create_or_join
from lrsweep.sweeps.study.options import DataOptions
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker.history import DEFAULT_SAMPLER_HISTORY
from lrsweep.sweeps.worker.loop import run_worker
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.sweeps.worker.proposals import propose
from lrsweep.sweeps.worker.sampling import TPE_ARGUMENTS, make_sampler

SAMPLERS = ("batch TPE (service)", "Optuna TPE, one ask at a time")
CHECKPOINT_FRACTIONS = (0.25, 0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--data", help="ionosphere CSV (default: $IONOSPHERE_CSV or OpenML)")
    parser.add_argument("--sampler-history", type=int, default=DEFAULT_SAMPLER_HISTORY)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for sampler, ms in proposal_cost(args.sampler_history).items():
        print(f"{sampler}: {ms:.2f} ms per proposal")
    for size in args.sizes:
        checkpoints = [max(1, round(size * f)) for f in CHECKPOINT_FRACTIONS]
        print(f"\n{size} trials, {args.seeds} seeds: best objective by trial n (mean ± sd)")
        print(" | ".join(["sampler", *(f"n={n}" for n in checkpoints), "sweep s (mean)"]))
        for sampler in SAMPLERS:
            sweeps = [
                best_so_far(
                    size, seed, sampler, DataOptions(args.data),
                    sampler_history=args.sampler_history,
                )
                for seed in range(args.seeds)
            ]  # fmt: skip
            seconds = [sweep.seconds for sweep in sweeps]
            cells = [mean_sd([sweep.by_trial[n - 1] for sweep in sweeps]) for n in checkpoints]
            print(" | ".join([sampler, *cells, f"{statistics.fmean(seconds):.1f}"]), flush=True)


def proposal_cost(history_size: int, batch: int = 64, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per proposal of each sampler, `batch` at a time, on the same history of
    random finished trials with random values."""
    settings = StudySettings(data_sha256="0" * 64)
    rng = random.Random(0)
    history = []
    for number, template in enumerate(
        propose(settings, optuna.samplers.RandomSampler(seed=0), "h", [], history_size)
    ):
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=rng.random(),
            params=template.params,
            distributions=template.distributions,
        )
        trial.number = number
        history.append(trial)
    samplers = {
        SAMPLERS[0]: make_sampler(0),
        SAMPLERS[1]: optuna.samplers.TPESampler(seed=0, **TPE_ARGUMENTS),
    }
    cost = {}
    for name, sampler in samplers.items():
        started = time.perf_counter()
        for _ in range(repeats):
            propose(settings, sampler, "h", history, batch)
        cost[name] = (time.perf_counter() - started) / (repeats * batch) * 1e3
    return cost


@dataclass(frozen=True)
class Sweep:
    """One sweep's running best of completed trials: by trial number, and by when each trial
    finished (seconds from the sweep's start)."""

    by_trial: list[float]
    by_time: list[tuple[float, float]]
    seconds: float

    def best_at(self, seconds: float) -> float:
        """The best completed value by `seconds` into the sweep (-inf before the first)."""
        return max((best for at, best in self.by_time if at <= seconds), default=float("-inf"))


def best_so_far(
    size: int,
    seed: int,
    sampler: str,
    data: DataOptions,
    *,
    trials_per_batch: int | None = None,
    sampler_history: int = DEFAULT_SAMPLER_HISTORY,
) -> Sweep:
    """One worker's sweep of `size` trials on a fresh one-split study of `data`."""
    dataset = data.source.load()
    settings = StudySettings(data_sha256=dataset.sha256, folds=1)
    with TemporaryDirectory() as directory:
        url = resolve_storage_url(f"sqlite:///{Path(directory) / 'quality.db'}")
        opened = create_or_join(StorageSettings(url), "quality", settings, dataset)
        sequential = optuna.samplers.TPESampler(seed=seed, **TPE_ARGUMENTS)
        started, wall_start = time.perf_counter(), datetime.datetime.now()
        options = WorkerOptions(
            target_trials=size,
            data=data,
            seed=seed,
            trials_per_batch=trials_per_batch,
            sampler_history=sampler_history,
            quiet=True,
        )
        run_worker(opened, options, None if sampler == SAMPLERS[0] else sequential)
        elapsed = time.perf_counter() - started
        trials = opened.study.get_trials(deepcopy=False)
    by_trial, best = [], float("-inf")
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
            best = max(best, trial.value)
        by_trial.append(best)
    finished = sorted(
        (trial.datetime_complete, trial.value)
        for trial in trials
        if trial.state == optuna.trial.TrialState.COMPLETE
        and trial.value is not None
        and trial.datetime_complete is not None
    )
    by_time, best = [], float("-inf")
    for at, value in finished:
        best = max(best, value)
        by_time.append(((at - wall_start).total_seconds(), best))
    return Sweep(by_trial, by_time, elapsed)


def mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


if __name__ == "__main__":
    main()
