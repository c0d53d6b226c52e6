"""The Python API, for those who would rather call than shell out: the same code paths as the
`sweeps` commands, taking and returning objects instead of flags and files.

    from lrsweep import sweeps

    result = sweeps.run(data="train.csv", trials=50, storage="sweeps.db")
    config = sweeps.load_config(result.path)  # the exported schedule, validated
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from lrsweep.errors import InvalidInputError, LrsweepError
from lrsweep.storage import StorageSettings, close_storage, resolve_storage_url
from lrsweep.sweeps.results.choice import ChoiceOptions, Exported
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.study.options import (
    DEFAULT_RUN_SEED,
    DEFAULT_RUN_TRIALS,
    DataOptions,
    StudyOptions,
)
from lrsweep.sweeps.worker.options import PopulationOptions, WorkerOptions
from lrsweep.trainer import TrainConfig, load_config

if TYPE_CHECKING:
    from lrsweep.sweeps.worker.loop import WorkerSummary  # imports torch

DEFAULT_STUDY = "lrsweep"
Storage = str | os.PathLike[str] | StorageSettings | None  # a file, a URL, or settings
Data = str | os.PathLike[str] | DataOptions | None  # a CSV, or how to read one
DEFAULT_OUT = "best.json"


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its study, the exported trial, file and config, the sweep's wall time
    and the choice's and export's after it."""

    opened: OpenStudy
    trial: optuna.trial.FrozenTrial
    path: Path
    config: TrainConfig
    seconds: float
    choice_seconds: float = 0.0

    @property
    def study(self) -> optuna.Study:
        return self.opened.study


def storage_settings(storage: str | None = None, **timing: int) -> StorageSettings:
    """`storage` (a SQLite file, a SQLAlchemy URL, grpc://host:port; default $LRSWEEP_STORAGE,
    else ./lrsweep.db) with the heartbeat settings in `timing`, parsed and checked once."""
    return StorageSettings(resolve_storage_url(storage), **timing)


def run(
    data: Data = None,
    *,
    trials: int | None = None,
    storage: Storage = None,
    study: str = DEFAULT_STUDY,
    workers: int | None = None,
    out: str | Path = DEFAULT_OUT,
    options: WorkerOptions | None = None,
    study_options: StudyOptions = StudyOptions(),
    choice: ChoiceOptions = ChoiceOptions(after_sweep=True),
    population: PopulationOptions = PopulationOptions(),
) -> SweepResult:
    """Create or resume `study`, sweep it on all cores (or GPUs) in worker processes until it
    has `trials` finished trials (default DEFAULT_RUN_TRIALS), and export the robust choice to
    `out`: what `sweeps run` does. `options` gives every worker option at once instead of
    `data` and `trials`; a run's target and sampler seed default to DEFAULT_RUN_TRIALS and
    DEFAULT_RUN_SEED there too. With `population.size`, a population of that many members is
    trained instead, in this process (Population Based Training: `sweeps.worker.population`).
    Raises SweepFailed when a worker fails, SweepInterrupted when the workers were interrupted;
    either way nothing is exported."""
    from lrsweep.sweeps.results.choice import export_choice
    from lrsweep.sweeps.results.export import export_path
    from lrsweep.sweeps.study.open import open_for_sweep
    from lrsweep.sweeps.worker.launch import launch

    out = export_path(str(out), None)  # a bad name is refused before the sweep, not after
    if options is None:
        options = WorkerOptions(data=_data(data), target_trials=trials)
    elif data is not None or trials is not None:
        raise InvalidInputError("give data and trials inside options, or without options")
    if population.size is not None and (options.target_trials is not None or workers):
        raise InvalidInputError(
            "--trials or --workers with --population: a population trains its K members in "
            "one process"
        )
    target = options.target_trials or DEFAULT_RUN_TRIALS
    options = replace(
        options,
        target_trials=target,
        seed=DEFAULT_RUN_SEED if options.seed is None else options.seed,
    )
    settings = _settings(storage)
    started, started_at = time.perf_counter(), datetime.datetime.now()  # Optuna's clock
    finished_before = None if population.size else _finished_trials(settings, study)
    if finished_before is not None and finished_before >= target:
        return _already_finished(settings, study, study_options, options, out, choice)
    if finished_before is not None:  # the request checked against the study before saying so
        close_storage(open_for_sweep(settings, study, study_options, options.data).storage)
        print(
            f"resuming study {study!r} with {finished_before} finished trials (target {target})",
            file=sys.stderr,
        )
    if population.size is not None:
        opened, workers_used = _population(settings, study, study_options, options, population)
    else:
        launched = launch(settings, study, study_options, options, workers, baselines=True)
        opened, workers_used = launched.opened, launched.workers
    try:
        if population.size is None and launched.exit_code in INTERRUPTED_CODES:
            raise SweepInterrupted(launched.exit_code)
        if population.size is None and launched.exit_code != 0:
            raise SweepFailed(launched.exit_code)
        from lrsweep.sweeps.results.selection import SweepPace  # imports torch: after the data

        seconds = time.perf_counter() - started
        pace = SweepPace.of_sweep(opened, started_at, seconds, workers_used)
        exported = export_choice(opened, out, choice, options.data, options.device, sweep=pace)
    except BaseException:
        close_storage(opened.storage)
        raise
    choice_seconds = time.perf_counter() - started - seconds
    config = load_config(exported.path)
    return SweepResult(opened, exported.trial, exported.path, config, seconds, choice_seconds)


def _population(
    settings: StorageSettings,
    study: str,
    study_options: StudyOptions,
    options: WorkerOptions,
    population: PopulationOptions,
) -> tuple[OpenStudy, int]:
    """Create or join the study (one validation split unless --folds says otherwise: members
    are ranked on the first) and train one population in it, in this process."""
    from lrsweep.sweeps.study.open import open_for_sweep, study_exists
    from lrsweep.sweeps.worker.population import run_population

    if study_options.baselines:
        raise InvalidInputError("--baselines: a population trains its members, not baselines")
    new = not study_exists(settings, study)
    if new and study_options.folds is None:  # members are ranked on one split
        study_options = replace(study_options, folds=1)
    opened = open_for_sweep(settings, study, study_options, options.data)
    try:
        assert options.seed is not None  # run() defaults it
        run_population(
            opened,
            population,
            options.data.source,
            options.device,
            options.seed,
            options.trackers,
        )
    except BaseException as error:
        refused_new = new and isinstance(error, InvalidInputError) and not opened.study.trials
        if refused_new:  # refused before any trial: leave no empty study behind
            optuna.delete_study(study_name=study, storage=opened.storage)
        close_storage(opened.storage)
        raise
    return opened, 1


def _finished_trials(settings: StorageSettings, study: str) -> int | None:
    """The study's finished trials, or None when there is no such study yet."""
    from lrsweep.storage.trial_store import finished_count
    from lrsweep.sweeps.study.open import open_existing, study_exists

    if not study_exists(settings, study):
        return None
    opened = open_existing(settings, study)
    try:
        return finished_count(opened.store.counts())
    finally:
        close_storage(opened.storage)


def _already_finished(
    settings: StorageSettings,
    study: str,
    study_options: StudyOptions,
    options: WorkerOptions,
    out: Path,
    choice: ChoiceOptions,
) -> SweepResult:
    """A study at its target: nothing is trained. The request is checked against the study
    as a joining worker's is (its data, an option that differs), then the study's recorded
    choice is exported (none recorded for these trials: its best trial as it is); with --top
    or --seeds, a choice is made now."""
    from lrsweep.storage.trial_store import finished_count
    from lrsweep.sweeps.results.choice import export_choice, export_recorded_choice
    from lrsweep.sweeps.results.selection import SweepPace
    from lrsweep.sweeps.study.open import open_for_sweep

    started = time.perf_counter()
    opened = open_for_sweep(settings, study, study_options, options.data)
    try:
        finished = finished_count(opened.store.counts())
        asked = choice.top is not None or choice.seeds is not None
        print(
            f"study {study!r} already has {finished} finished trials (target "
            f"{options.target_trials}): nothing to train"
            + ("; choosing anew (--top/--seeds)" if asked else ""),
            file=sys.stderr,
        )
        exported = None if asked else export_recorded_choice(opened, out)
        if exported is None and not asked:
            print(
                "note: the study recorded no robust choice for these trials: its best trial "
                "is exported as it is (--top K retrains the best K)",
                file=sys.stderr,
            )
            exported = export_choice(opened, out)
        elif exported is None:  # as after a sweep, with no sweep time to budget from
            no_pace = SweepPace(seconds=0.0, workers=1, model_epochs=0)
            exported = export_choice(opened, out, choice, options.data, options.device, no_pace)
    except BaseException:
        close_storage(opened.storage)
        raise
    seconds = time.perf_counter() - started
    config = load_config(exported.path)
    return SweepResult(opened, exported.trial, exported.path, config, 0.0, seconds)


INTERRUPTED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


class SweepFailed(LrsweepError):
    """A worker exited with an error (it said why on stderr); nothing was exported."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"a worker exited with code {exit_code}; nothing was exported")
        self.exit_code = exit_code


class SweepInterrupted(KeyboardInterrupt):
    """The workers were interrupted (Ctrl-C, SIGTERM) and handed their trials back; a
    KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def run_worker(
    study: str,
    *,
    storage: Storage = None,
    options: WorkerOptions = WorkerOptions(),
    study_options: StudyOptions = StudyOptions(),
) -> WorkerSummary:
    """Run trials of `study` in this process (creating it from `study_options` if it does not
    exist) until `options` say stop: what `sweeps worker` does. Workers on other machines join
    the same study through the same storage."""
    from lrsweep.sweeps.study.open import open_for_sweep
    from lrsweep.sweeps.worker.loop import run_worker as work

    opened = open_for_sweep(_settings(storage), study, study_options, options.data)
    try:
        return work(opened, options)
    finally:
        close_storage(opened.storage)


def export(
    study: str,
    *,
    storage: Storage = None,
    out: str | Path = DEFAULT_OUT,
    choice: ChoiceOptions = ChoiceOptions(),
    data: Data = None,
    device: str | None = None,
) -> Exported:
    """Write the study's best trial (or with `choice.top`, the robust choice among the best K)
    as a config file `load_config` reads back: what `sweeps export` does."""
    from lrsweep.sweeps.results.choice import export_choice
    from lrsweep.sweeps.results.export import export_path

    path = export_path(str(out), None)
    opened = open_study(study, storage)
    try:
        return export_choice(opened, path, choice, _data(data), device)
    finally:
        close_storage(opened.storage)


def open_study(study: str, storage: Storage = None) -> OpenStudy:
    """An existing study with its settings (a mistyped SQLite path creates no file)."""
    from lrsweep.sweeps.study.open import open_existing

    return open_existing(_settings(storage), study)


def _settings(storage: Storage) -> StorageSettings:
    if isinstance(storage, StorageSettings):
        return storage
    return storage_settings(None if storage is None else os.fspath(storage))


def _data(data: Data) -> DataOptions:
    if isinstance(data, DataOptions):
        return data
    return DataOptions(None if data is None else os.fspath(data))
