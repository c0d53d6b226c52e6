"""Retrain an exported config from scratch over several seeds and score it on held-out data.

This is the check that a sweep's winner is not one lucky seed on a small validation split.
"""

from __future__ import annotations

import statistics
from typing import Any

from trainer import TrainConfig, validation_rows
from trainer.data import cached_dataset
from trainer.training import (
    Tensors,
    resolve_device,
    split_tensors,
    train,
)


def retrain(
    config: TrainConfig,
    *,
    data: str | None,
    test_csv: str | None,
    seeds: int,
    device: str | None = None,
) -> dict[str, Any]:
    """Train once per seed; with `test_csv`, on all of `data` and score on it, else on the
    default train split scored on the validation split."""
    train_set = cached_dataset(data)
    torch_device = resolve_device(device)
    if test_csv is not None:
        tensors = Tensors.from_arrays(train_set, cached_dataset(test_csv), torch_device)
        evaluated_on = test_csv
    else:
        tensors = split_tensors(train_set, validation_rows(train_set), str(torch_device))
        evaluated_on = "validation split"
    results = [train(config, tensors, seed=seed) for seed in range(seeds)]
    scores = [r.final_accuracy for r in results if r.final_accuracy is not None]
    return {
        "config": config.to_json_dict(),
        "evaluated_on": evaluated_on,
        "train_rows": len(tensors.y_train),
        "test_rows": len(tensors.y_val),
        "per_seed": [
            {"seed": seed, "status": r.status.value, "accuracy": r.final_accuracy}
            for seed, r in enumerate(results)
        ],
        "mean_accuracy": statistics.fmean(scores) if scores else None,
        "std_accuracy": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
    }
