"""Train the ionosphere MLP under one learning-rate schedule; build and load schedules."""

from trainer.config import TrainConfig, load_config
from trainer.data import Dataset, load_ionosphere, stratified_split
from trainer.errors import InvalidInputError
from trainer.schedules import SCHEDULES, ScheduleConfig, build, lr_curve
from trainer.training import (
    EpochResult,
    RunStatus,
    Tensors,
    TrainResult,
    resolve_device,
    split_tensors,
    train,
)

__all__ = [
    "SCHEDULES",
    "Dataset",
    "EpochResult",
    "InvalidInputError",
    "RunStatus",
    "ScheduleConfig",
    "Tensors",
    "TrainConfig",
    "TrainResult",
    "build",
    "load_config",
    "load_ionosphere",
    "lr_curve",
    "resolve_device",
    "split_tensors",
    "stratified_split",
    "train",
]
