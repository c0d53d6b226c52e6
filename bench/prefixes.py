"""How much of a study's training is a shared prefix (Hippo's opportunity): epochs that trials
train with the same initial weights, optimizer settings and lr as another trial up to and
including that epoch, so that one run could train them once and fork.

    python -m bench.prefixes --storage lrsweep.db [--study lrsweep] [--tolerance 0 0.01 0.1]

Counted over the epochs each trial trained (pruned ones stop early), as a fraction of them: with
the trial's own seed (as lrsweep trains: no two trials start from the same weights, so nothing is
shared by construction: the column says what sharing would need to give up), and as if
all trials started from one seed (what a shared-prefix engine would have to give up). A
tolerance merges lrs within that relative distance (a grid of lrs, as Hippo's search spaces
have); the same tolerance merges momentum, weight decay, betas and eps.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import optuna

from lrsweep.sweeps.results.ranking import trained_config
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import TrainConfig, lr_curve


def shared_epochs(runs: Sequence[tuple[tuple[object, ...], list[float]]], tolerance: float) -> int:
    """Epochs of `runs` ((what must match from the start, lrs per epoch trained)) that another
    run already trains: per epoch, the runs minus the distinct prefixes up to it."""
    shared, longest = 0, max((len(lrs) for _, lrs in runs), default=0)
    for epoch in range(longest):
        alive = [(start, lrs[: epoch + 1]) for start, lrs in runs if len(lrs) > epoch]
        prefixes = {(start, tuple(_bucket(lr, tolerance) for lr in lrs)) for start, lrs in alive}
        shared += len(alive) - len(prefixes)
    return shared


def _bucket(lr: float, tolerance: float) -> float:
    """Values within `tolerance` (relative) of each other land in one bucket (0: exact)."""
    if tolerance == 0 or lr <= 0:
        return lr
    return round(math.log(lr) / math.log1p(tolerance))


def _settings_key(config: TrainConfig, tolerance: float) -> tuple[object, ...]:
    """The optimizer settings that must match from the start, continuous ones bucketed."""
    numbers = (config.momentum, config.weight_decay, *config.betas, config.eps)
    return (
        config.optimizer,
        config.batch_size,
        *(_bucket(number, tolerance) for number in numbers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="SQLite file or URL of the study")
    parser.add_argument("--study", default="lrsweep")
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.0, 0.01, 0.1])
    args = parser.parse_args()
    url = args.storage if "://" in args.storage else f"sqlite:///{args.storage}"
    study = optuna.load_study(study_name=args.study, storage=url)
    settings = StudySettings.of_study(study)
    trials = [t for t in study.trials if t.intermediate_values]
    runs = []
    for trial in trials:
        config = trained_config(settings, trial)
        lrs = lr_curve(config.schedule, config.lr, config.epochs)[: len(trial.intermediate_values)]
        runs.append((trial.number, config, lrs))
    total = sum(len(lrs) for _, _, lrs in runs) * settings.folds
    print(f"{len(trials)} trials: {total // settings.folds} trial-epochs x {settings.folds} folds")
    print("| lr tolerance | shared, own seeds | shared, one seed for all |")
    print("|---|---|---|")
    for tolerance in args.tolerance:
        keys = [(n, _settings_key(config, tolerance), lrs) for n, config, lrs in runs]
        own = shared_epochs([((n, key), lrs) for n, key, lrs in keys], tolerance)
        one = shared_epochs([(key, lrs) for _, key, lrs in keys], tolerance)
        folds = settings.folds
        print(f"| {tolerance:g} | {own * folds / total:.1%} | {one * folds / total:.1%} |")


if __name__ == "__main__":
    main()
