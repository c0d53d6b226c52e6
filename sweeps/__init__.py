"""Optuna studies over learning-rate schedules: the public Python API (`sweeps.api`).

    from lrsweep import sweeps

    result = sweeps.run(data="train.csv", trials=50, storage="sweeps.db")

The names load on first use, so `sweeps --help` and a usage error answer at once instead of
importing Optuna first.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrsweep.sweeps.api import (
        ChoiceOptions,
        DataOptions,
        Exported,
        StudyOptions,
        SweepFailed,
        SweepInterrupted,
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
    "SweepInterrupted",
    "SweepResult",
    "WorkerOptions",
    "export",
    "load_config",
    "open_study",
    "run",
    "run_worker",
    "storage_settings",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lrsweep.sweeps import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrsweep.sweeps' has no attribute {name!r}")
