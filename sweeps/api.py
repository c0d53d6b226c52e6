"""The Python API, for those who would rather call than shell out: the same code paths as the
`sweeps` commands, taking and returning objects instead of flags and files.

    from lrsweep import sweeps

    result = sweeps.run(data="train.csv", trials=50, storage="sweeps.db")
    config = sweeps.load_config(result.path)  # the exported schedule, validated
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from lrsweep.errors import LrsweepError
from lrsweep.storage import StorageSettings, close_storage, resolve_storage_url
from lrsweep.sweeps.results.choice import ChoiceOptions, Exported
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.study.options import (
    DEFAULT_RUN_SEED,
    DEFAULT_RUN_TRIALS,
    DataOptions,
    StudyOptions,
)
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.trainer import TrainConfig, load_config

if TYPE_CHECKING:
    from lrsweep.sweeps.worker.loop import WorkerSummary  # imports torch

DEFAULT_STUDY = "lrsweep"
DEFAULT_OUT = "best.json"


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its study, the exported trial, file and config, and its wall time."""

    opened: OpenStudy
    trial: optuna.trial.FrozenTrial
    path: Path
    config: TrainConfig
    seconds: float

    @property
    def study(self) -> optuna.Study:
        return self.opened.study


def storage_settings(storage: str | None = None, **timing: int) -> StorageSettings:
    """`storage` (a SQLite file, a SQLAlchemy URL, grpc://host:port; default $LRSWEEP_STORAGE,
    else ./lrsweep.db) with the heartbeat settings in `timing`, parsed and checked once."""
    return StorageSettings(resolve_storage_url(storage), **timing)


def run(
    data: str | DataOptions | None = None,
    *,
    trials: int = DEFAULT_RUN_TRIALS,
    storage: str | StorageSettings | None = None,
    study: str = DEFAULT_STUDY,
    workers: int | None = None,
    out: str | Path = DEFAULT_OUT,
    options: WorkerOptions | None = None,
    study_options: StudyOptions = StudyOptions(),
    choice: ChoiceOptions = ChoiceOptions(after_sweep=True),
) -> SweepResult:
    """Create or resume `study`, sweep it on all cores (or GPUs) in worker processes until it
    has `trials` finished trials, and export the robust choice to `out`: what `sweeps run`
    does. `options` gives every worker option at once (its seed defaults to DEFAULT_RUN_SEED);
    `data` and `trials` are shortcuts for two of them."""
    from lrsweep.sweeps.results.choice import export_choice
    from lrsweep.sweeps.results.selection import SweepPace
    from lrsweep.sweeps.worker.launch import launch

    if options is None:
        options = WorkerOptions(target_trials=trials, data=_data(data), seed=DEFAULT_RUN_SEED)
    settings = _settings(storage)
    started, started_at = time.perf_counter(), datetime.datetime.now()  # Optuna's clock
    launched = launch(settings, study, study_options, options, workers, baselines=True)
    if launched.exit_code != 0:
        close_storage(launched.opened.storage)
        raise SweepFailed(launched.exit_code)
    seconds = time.perf_counter() - started
    pace = SweepPace.of_sweep(launched.opened, started_at, seconds, launched.workers)
    exported = export_choice(
        launched.opened, Path(out), choice, options.data, options.device, sweep=pace
    )
    return SweepResult(
        launched.opened, exported.trial, exported.path, load_config(exported.path), seconds
    )


class SweepFailed(LrsweepError):
    """A worker exited with an error (it said why on stderr); nothing was exported."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"a worker exited with code {exit_code}; nothing was exported")
        self.exit_code = exit_code


def run_worker(
    study: str,
    *,
    storage: str | StorageSettings | None = None,
    options: WorkerOptions = WorkerOptions(),
    study_options: StudyOptions = StudyOptions(),
) -> WorkerSummary:
    """Run trials of `study` in this process (creating it from `study_options` if it does not
    exist) until `options` say stop: what `sweeps worker` does. Workers on other machines join
    the same study through the same storage."""
    from lrsweep.sweeps.study.open import open_for_sweep
    from lrsweep.sweeps.worker.loop import run_worker as work

    opened = open_for_sweep(
        _settings(storage), study, study_options, options.data, sampler_seed=options.seed
    )
    try:
        return work(opened, options)
    finally:
        close_storage(opened.storage)


def export(
    study: str,
    *,
    storage: str | StorageSettings | None = None,
    out: str | Path = DEFAULT_OUT,
    choice: ChoiceOptions = ChoiceOptions(),
    data: str | DataOptions | None = None,
    device: str | None = None,
) -> Exported:
    """Write the study's best trial (or with `choice.top`, the robust choice among the best K)
    as a config file `load_config` reads back: what `sweeps export` does."""
    from lrsweep.sweeps.results.choice import export_choice

    opened = open_study(study, storage)
    try:
        return export_choice(opened, Path(out), choice, _data(data), device)
    finally:
        close_storage(opened.storage)


def open_study(study: str, storage: str | StorageSettings | None = None) -> OpenStudy:
    """An existing study with its settings (a mistyped SQLite path creates no file)."""
    from lrsweep.sweeps.study.open import open_existing

    return open_existing(_settings(storage), study)


def _settings(storage: str | StorageSettings | None) -> StorageSettings:
    return storage if isinstance(storage, StorageSettings) else storage_settings(storage)


def _data(data: str | DataOptions | None) -> DataOptions:
    return data if isinstance(data, DataOptions) else DataOptions(data)


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
