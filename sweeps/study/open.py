"""Create or join a study: storage, settings, pruner, baseline schedules. (The sampler is the
worker's own: `worker.sampling.make_sampler`.)"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from lrsweep.storage import (
    StorageError,
    StorageSettings,
    TrialStore,
    close_storage,
    open_storage,
    open_trial_store,
)
from lrsweep.storage.outage import retrying
from lrsweep.sweeps.study.options import DataOptions, StudyOptions
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker import proposals
from lrsweep.trainer import Dataset, InvalidInputError
from lrsweep.trainer.data import DataSource

if TYPE_CHECKING:
    from lrsweep.trainer.training import Tensors

# The tutorial's two schedules (time-based and drop-based decay), run first when asked so every
# study has a known reference point.
METRIC_NAME = "validation accuracy"  # what Optuna's charts and the dashboard call the value
BASELINES: tuple[dict[str, float | int | str], ...] = (
    {"scheduler": "inverse_time", "lr": 0.1, "momentum": 0.8, "inverse_time.alpha": 0.002},
    {"scheduler": "step", "lr": 0.1, "momentum": 0.9, "step.step_size": 10, "step.gamma": 0.5},
)


@dataclass(frozen=True)
class OpenStudy:
    """A study joined by this process, with its settings and the storage it lives in."""

    study: optuna.Study
    settings: StudySettings
    storage: optuna.storages.BaseStorage

    @functools.cached_property
    def store(self) -> TrialStore:
        """How this process writes the study's trials (SQL, or through a storage proxy)."""
        return open_trial_store(self.storage, self.study.study_name)


def fold_tensors(settings: StudySettings, dataset: Dataset, device: str) -> list[Tensors]:
    """The study's validation splits of `dataset` as device tensors: one, or one per fold.
    (torch is imported here, not with the module: the launcher and `status` need no torch.)"""
    from lrsweep.trainer.training import split_tensors

    return [split_tensors(dataset, rows, device) for rows in settings.validation_splits()]


@dataclass(frozen=True)
class NewStudy:
    """Everything a new study writes, prepared and checked before anything is: its settings
    as stored (the validation rows drawn from the data) and the baselines that fit its space."""

    settings: StudySettings
    baselines: tuple[FrozenTrial, ...]
    skipped_baselines: tuple[str, ...]  # one line each: which tutorial baseline, and why

    @classmethod
    def prepare(
        cls, requested: StudySettings, dataset: Dataset, enqueue_baselines: bool
    ) -> NewStudy:
        """Raises InvalidInputError for settings this data cannot honour."""
        settings = requested.fixed_at_creation(dataset)
        baselines, skipped = [], []
        for tutorial in BASELINES if enqueue_baselines else ():
            params = settings.space.with_opt_in_off(tutorial, batch_size=settings.batch_size)
            reason = settings.space.why_outside(params)
            if reason is None:
                baselines.append(proposals.fixed(settings, params))
            else:
                skipped.append(f"tutorial baseline {params['scheduler']} skipped: {reason}")
        return cls(settings, tuple(baselines), tuple(skipped))


def create_or_join(
    storage_settings: StorageSettings,
    study_name: str,
    requested: StudySettings,
    dataset: Dataset,
    *,
    explicit: frozenset[str] = frozenset(),
    enqueue_baselines: bool = False,
) -> OpenStudy:
    """Create the study with `requested` settings, or join it with its stored ones.

    `requested` is checked against the data only when the study is created (a worker joining
    takes the study's settings, whatever its own defaults), and before anything is written.
    Joining with an explicitly given setting (named in `explicit`) that differs from the stored
    one is refused rather than silently ignored. A database that cannot be reached at all is a
    StorageError at once; one that goes away after the connection was made is waited for.
    """
    prepare = functools.cache(lambda: NewStudy.prepare(requested, dataset, enqueue_baselines))
    database_file = storage_settings.parsed.sqlite_file
    if database_file is not None and not database_file.exists():
        prepare()  # no study can be there yet: refuse before the file is made
    storage = open_storage(storage_settings)
    return retrying(
        lambda: _create_or_join(storage, study_name, prepare, requested, explicit=explicit),
        "joining the study",
    )


def _create_or_join(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    prepare: Callable[[], NewStudy],
    requested: StudySettings,
    *,
    explicit: frozenset[str],
) -> OpenStudy:
    def joined() -> OpenStudy:
        return join(storage, study_name, requested=requested, explicit=explicit)

    if _exists(storage, study_name):
        return joined()
    try:
        new = prepare()
    except InvalidInputError:
        if _exists(storage, study_name):  # made meanwhile by a creator with other settings
            return joined()
        raise
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize",
            pruner=new.settings.build_pruner(),
        )
    except optuna.exceptions.DuplicatedStudyError:
        return joined()
    with warnings.catch_warnings():  # experimental in Optuna 5; the name the dashboard shows
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAME])
    new.settings.save(study)
    opened = OpenStudy(study, new.settings, storage)
    # Under the claim lock, like every other trial creation: numbers never collide with a
    # joining worker's claim.
    if new.baselines:
        opened.store.enqueue(list(new.baselines))
    for line in (new.settings.chosen_by_data, *new.skipped_baselines):
        if line is not None:
            print(f"note: {line}", file=sys.stderr)
    return opened


def _exists(storage: optuna.storages.BaseStorage, study_name: str) -> bool:
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    return True


def join(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    requested: StudySettings | None = None,
    explicit: frozenset[str] = frozenset(),
) -> OpenStudy:
    """Load an existing study with its stored settings and its pruner."""
    try:
        stub = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise InvalidInputError(f"study {study_name!r} does not exist in this storage") from None
    settings = StudySettings.of_study(stub)
    if requested is not None:
        stored, wanted = settings.to_dict(), requested.to_dict()
        conflicts = sorted(name for name in explicit if stored.get(name) != wanted.get(name))
        if conflicts:
            name = conflicts[0]
            differs = "another search space" if name == "space" else f"{name}={stored[name]!r}"
            raise InvalidInputError(
                f"study {study_name!r} already exists with {differs}; "
                f"drop the option or choose a new study name"
            )
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        pruner=settings.build_pruner(),
    )
    return OpenStudy(study, settings, storage)


def open_existing_storage(storage_settings: StorageSettings) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist: a mistyped SQLite path creates no new file."""
    database_file = storage_settings.parsed.sqlite_file
    if database_file is not None and not database_file.exists():
        raise StorageError(f"no study storage at {database_file} (the file does not exist)")
    return open_storage(storage_settings)


def study_exists(storage_settings: StorageSettings, study_name: str) -> bool:
    """Whether the study is there (a missing SQLite file is not created to find out)."""
    try:
        storage = open_existing_storage(storage_settings)
    except StorageError:
        return False
    try:
        return _exists(storage, study_name)
    finally:
        close_storage(storage)


def open_existing(storage_settings: StorageSettings, study_name: str) -> OpenStudy:
    """Join a study that must already exist (status, export)."""
    return join(open_existing_storage(storage_settings), study_name)


def open_for_sweep(
    storage_settings: StorageSettings,
    study_name: str,
    options: StudyOptions,
    data: DataOptions,
    *,
    baselines: bool = False,
) -> OpenStudy:
    """Validate the data, then create the study `options` ask for, or join the existing one
    (its stored settings win; `options.baselines`, when given, overrides `baselines`)."""
    source = data.source
    try:
        dataset = source.load()
    except InvalidInputError as error:
        if source.label_column is not None:
            raise
        dataset = _as_the_study_reads_it(storage_settings, study_name, source, error)
    if options.model is not None:  # a bad --model is refused before any study exists
        from lrsweep.trainer.models import ModelSpec  # imports torch

        ModelSpec(options.model).check(dataset.features[:2], dataset.schema.n_outputs)
    requested, explicit = options.requested(dataset)
    opened = create_or_join(
        storage_settings,
        study_name,
        requested,
        dataset,
        explicit=explicit,
        enqueue_baselines=baselines if options.baselines is None else options.baselines,
    )
    opened.settings.load_data(source)
    return opened


def _as_the_study_reads_it(
    storage_settings: StorageSettings, study_name: str, source: DataSource, error: Exception
) -> Dataset:
    """A file unreadable with its last column as the label may be an existing study's, read
    with the label column the study recorded; otherwise `error` stands."""
    try:
        opened = open_existing(storage_settings, study_name)
    except (InvalidInputError, StorageError):
        raise error from None
    try:
        return opened.settings.load_data(source)
    finally:
        close_storage(opened.storage)
