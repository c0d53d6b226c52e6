"""Train the built-in MLP (ionosphere's by default) under one learning-rate schedule; build and
load schedules.

Configs, schedules and data load without importing torch (the CLI starts faster); the training
names import it on first use.
"""

from typing import Any

from lrsweep.errors import InvalidInputError
from lrsweep.trainer.config import TrainConfig, load_config
from lrsweep.trainer.data import (
    Dataset,
    load_dataset,
    read_raw,
    stratified_split,
    validation_rows,
)
from lrsweep.trainer.preprocessing import preprocessing_pipeline
from lrsweep.trainer.schedules import SCHEDULES, ScheduleConfig, build, lr_curve

_TRAINING_NAMES = (
    "EpochResult",
    "RunStatus",
    "Tensors",
    "TrainResult",
    "resolve_device",
    "split_tensors",
    "train",
)


def __getattr__(name: str) -> Any:
    if name in _TRAINING_NAMES:
        from lrsweep.trainer import training

        return getattr(training, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")


__all__ = [
    "SCHEDULES",
    "Dataset",
    "InvalidInputError",
    "ScheduleConfig",
    "TrainConfig",
    "build",
    "load_config",
    "load_dataset",
    "lr_curve",
    "preprocessing_pipeline",
    "read_raw",
    "stratified_split",
    "validation_rows",
    *_TRAINING_NAMES,
]
