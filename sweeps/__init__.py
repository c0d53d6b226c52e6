"""Optuna studies over learning-rate schedules: the public Python API (`sweeps.api`).

from lrsweep import sweeps

result = sweeps.run(data="train.csv", trials=50, storage="sweeps.db")
"""

from lrsweep.sweeps.api import (
    ChoiceOptions,
    DataOptions,
    Exported,
    StudyOptions,
    SweepFailed,
    SweepResult,
    WorkerOptions,
    export,
    load_config,
    open_study,
    run,
    run_worker,
    storage_settings,
)

__all__ = [
    "ChoiceOptions",
    "DataOptions",
    "Exported",
    "StudyOptions",
    "SweepFailed",
    "SweepResult",
    "WorkerOptions",
    "export",
    "load_config",
    "open_study",
    "run",
    "run_worker",
    "storage_settings",
]
