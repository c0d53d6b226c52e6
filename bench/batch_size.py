"""How many trials to train per batch? Best-so-far per trial and per second, side by side.

A batch trains its trials as one vectorized model (bigger: less overhead per model) but TPE
learns only between batches (bigger: fewer rounds to learn from). For each batch size and seed,
one worker sweeps the same trials on a fresh one-split study of the same data (`--trials-per-batch
K`; everything else the service's defaults), and the running best of completed trials is read by
trial number and by wall time.

    python -m bench.batch_size --data big.csv --label-column label [--trials 50]
        [--sizes 4 8 16 25] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics

import optuna

from bench.sampler_quality import SAMPLERS, best_so_far, mean_sd
from lrsweep.sweeps.study.options import DataOptions

CHECKPOINT_FRACTIONS = (0.25, 0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a CSV (default: ionosphere)")
    parser.add_argument("--label-column", help="its label column")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 25])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = DataOptions(args.data, args.label_column)
    sweeps = {
        size: [
            best_so_far(args.trials, seed, SAMPLERS[0], data, trials_per_batch=size)
            for seed in range(args.seeds)
        ]
        for size in args.sizes
    }
    by_trial = [max(1, round(args.trials * f)) for f in CHECKPOINT_FRACTIONS]
    slowest = max(statistics.fmean(s.seconds for s in runs) for runs in sweeps.values())
    by_second = [round(slowest * f, 1) for f in CHECKPOINT_FRACTIONS]
    print(
        f"{args.trials} trials, {args.seeds} seeds, one worker: best validation accuracy "
        "(mean ± sd over seeds) by trial n and by second t"
    )
    header = [
        "trials per batch",
        *(f"n={n}" for n in by_trial),
        *(f"t={t}s" for t in by_second),
        "sweep s",
    ]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for size, runs in sweeps.items():
        cells = [
            *(mean_sd([run.by_trial[n - 1] for run in runs]) for n in by_trial),
            *(_cell([run.best_at(t) for run in runs]) for t in by_second),
            f"{statistics.fmean(run.seconds for run in runs):.1f}",
        ]
        print(f"| {size} | " + " | ".join(cells) + " |", flush=True)


def _cell(values: list[float]) -> str:
    """Mean ± sd, or "-" while a run had no completed trial yet."""
    return "-" if float("-inf") in values else mean_sd(values)


if __name__ == "__main__":
    main()
