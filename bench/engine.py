"""The training engine alone: milliseconds per full trial (50 epochs, no pruning) by batch size.

    .venv/bin/python -m bench.engine [--trials-per-batch 64 256] [--folds 1] [--device cpu]
        [--data big.csv --label-column label]

Each batch trains K sampled configs of the default search space on the study's default split
(or its F folds, F members per trial), start to end, one thread on the CPU; the first batch
warms up and is not counted. No storage, no sampler: what the arithmetic and its dispatch cost.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lrsweep.sweeps.study.space import SearchSpace
from lrsweep.trainer import TrainConfig, load_dataset
from lrsweep.trainer.data import stratified_folds, validation_rows
from lrsweep.trainer.training import Tensors, resolve_device, split_tensors
from lrsweep.trainer.vectorized import BatchMember, train_batch


@dataclass(frozen=True)
class EngineTiming:
    trials_per_batch: int
    folds: int
    seconds_per_batch: float

    @property
    def ms_per_trial(self) -> float:
        return 1000 * self.seconds_per_batch / self.trials_per_batch

    @property
    def trials_per_hour(self) -> float:
        return 3600 / self.seconds_per_batch * self.trials_per_batch


def sample_configs(count: int, seed: int) -> list[TrainConfig]:
    """Configs drawn at random from the default search space (every scheduler kind)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, rng = SearchSpace(), random.Random(seed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=rng.randrange(2**31)))
    return [space.suggest(study.ask(), epochs=50, batch_size=24) for _ in range(count)]


def time_engine(folds: Sequence[Tensors], trials_per_batch: int, batches: int = 3) -> EngineTiming:
    """Mean seconds per batch of `trials_per_batch` trials, each trained on every fold."""
    seconds = []
    for batch in range(batches + 1):
        configs = sample_configs(trials_per_batch, seed=batch)
        members = [
            BatchMember(config, seed=index, fold=fold)
            for index, config in enumerate(configs)
            for fold in range(len(folds))
        ]
        started = time.perf_counter()
        train_batch(members, folds, order_seed=batch)
        if folds[0].x_train.device.type == "cuda":
            torch.cuda.synchronize()
        if batch:  # the first batch warms up
            seconds.append(time.perf_counter() - started)
    return EngineTiming(trials_per_batch, len(folds), sum(seconds) / len(seconds))


def default_folds(
    n_folds: int, device: str, data: str | None = None, label_column: str | None = None
) -> list[Tensors]:
    """The default study's split (one fold) or its stratified folds, as device tensors."""
    dataset = load_dataset(data, label_column)
    splits = (
        [validation_rows(dataset)] if n_folds == 1 else stratified_folds(dataset, n_folds, seed=0)
    )
    return [split_tensors(dataset, rows, device) for rows in splits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3, help="timed batches (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", help="a CSV (default: ionosphere)")
    parser.add_argument("--label-column", help="its label column")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = str(resolve_device(args.device))
    folds = default_folds(args.folds, device, args.data, args.label_column)
    print(f"| trials per batch | folds | ms per trial | trials per hour ({device}, 1 thread) |")
    print("|---|---|---|---|")
    for size in args.trials_per_batch:
        timing = time_engine(folds, size, args.batches)
        print(
            f"| {size} | {args.folds} | {timing.ms_per_trial:.2f} | "
            f"{timing.trials_per_hour:,.0f} |"
        )


if __name__ == "__main__":
    main()
