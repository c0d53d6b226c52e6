"""What every worker of a study must agree on, stored in the study itself.

A worker on another machine joins with only the storage URL and study name: the search space,
pruner, epochs and data split come from here, and its data file must hash to the same values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna

from lrsweep.storage.optuna_objects import study_storage
from lrsweep.sweeps.study.space import SearchSpace, config_from_params
from lrsweep.trainer import Dataset, InvalidInputError, TrainConfig, validation_rows
from lrsweep.trainer.config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
from lrsweep.trainer.data import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_VALIDATION_FRACTION,
    DataSchema,
    DataSource,
    smallest_class,
    stratified_folds,
)
from lrsweep.trainer.models import ModelSpec

SETTINGS_ATTR = "lrsweep.settings"
CHOSEN_BY_DATA_ATTR = "lrsweep.chosen_by_data"
PRUNER_CLASSES = {
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "none": "NopPruner",
}
PRUNERS = tuple(PRUNER_CLASSES)


# Cross-validate when one split's accuracy is too noisy to rank trials by: a standard error
# above 1 point. On ionosphere (106 validation rows, up to 4.9 points) 5 folds made the export
# hold on unseen rows (bench/NOTES.md, step 11); from 2,500 validation rows on (8,331 rows at
# the default fraction) one split is within 1 point and folds only multiply the cost.
MAX_SPLIT_STANDARD_ERROR = 0.01
CROSS_VALIDATION_FOLDS = 5


def default_folds(
    dataset: Dataset, validation_fraction: float = DEFAULT_VALIDATION_FRACTION
) -> tuple[int, str]:
    """The folds a new study uses when none are asked for, from the noise of one split of
    `dataset`, and why, in one line."""
    held_out = math.ceil(validation_fraction * len(dataset))
    error = 0.5 / math.sqrt(held_out)  # the largest an accuracy's standard error can be
    why = f"one split would hold out {held_out} rows (accuracy standard error up to {error:.2%})"
    if error <= MAX_SPLIT_STANDARD_ERROR:
        return 1, f"one train/validation split: {why}; --folds F to cross-validate"
    rarest = smallest_class(dataset)
    if rarest < 2:
        return 1, f"one train/validation split: {why}, but a class has 1 row: too few to fold"
    folds = min(CROSS_VALIDATION_FOLDS, rarest)
    return folds, f"{folds}-fold cross-validation: {why}; --folds 1 for one split"


def pruner_spec(name: str, epochs: int) -> dict[str, Any]:
    """The default pruner of each name, as an Optuna class name and constructor arguments.
    Every epoch is a step, so resources are counted in epochs."""
    arguments: dict[str, dict[str, Any]] = {
        "median": {"n_startup_trials": 5, "n_warmup_steps": 5},
        "hyperband": {"min_resource": 1, "max_resource": epochs, "reduction_factor": 3},
        "successive_halving": {"min_resource": 1, "reduction_factor": 3},
        "none": {},
    }
    return {"class": PRUNER_CLASSES[name], **arguments[name]}


@dataclass(frozen=True)
class StudySettings:
    """Study-wide choices.

    Args:
        data_sha256: digest of the parsed data set every worker must load.
        space: the search space.
        pruner: one of PRUNERS; judges each trial's per-epoch validation accuracy.
        epochs: epochs per trial (the tutorial's 50).
        batch_size: mini-batch size (the tutorial's 24).
        validation_fraction: share of rows held out, stratified.
        split_seed: seed of the train/validation split.
        validation_rows: the held-out rows, drawn once when the study is created.
        folds: 1 for one train/validation split; F >= 2 to train each trial F times, once per
            stratified fold, and score it by the mean over folds.
        fold_rows: the validation rows of each fold, drawn once when the study is created.
        pruner_spec: the pruner's Optuna class and constructor arguments, fixed when the study
            is created (`pruner_spec`), so later defaults never change an existing study.
        tie_break: trials report `study.objective` (accuracy with the loss tie-break); False
            for studies made before it, whose trials keep reporting plain accuracy so that one
            study never mixes two objectives.
        data_schema: the data's features, classes and label column (`DataSchema.to_dict`),
            recorded at creation; None in studies made before it (ionosphere).
        model: the user's model as `module:function` (None: the built-in MLP).
        data_path: the data file the study was made with (absolute, on the creator's machine),
            which an export names so that `sweeps train` finds it; None before it was kept.
        chosen_by_data: why the data chose a default (`default_folds`), one line; None when
            the options gave everything.
    """

    data_sha256: str
    space: SearchSpace = field(default_factory=SearchSpace)
    pruner: str = "median"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    split_seed: int = DEFAULT_SPLIT_SEED
    validation_rows: tuple[int, ...] = ()
    folds: int = 1
    fold_rows: tuple[tuple[int, ...], ...] = ()
    pruner_spec: Mapping[str, Any] | None = None
    tie_break: bool = False
    data_schema: Mapping[str, Any] | None = None
    model: str | None = None
    data_path: str | None = None
    chosen_by_data: str | None = None

    def __post_init__(self) -> None:
        if self.pruner not in PRUNERS:
            raise InvalidInputError(
                f"unknown pruner {self.pruner!r}; choose from {', '.join(PRUNERS)}"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise InvalidInputError(f"epochs must be an integer >= 1; got {self.epochs!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 1:
            raise InvalidInputError(f"--folds must be an integer >= 1; got {self.folds!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise InvalidInputError(
                f"validation fraction must be in (0, 1); got {self.validation_fraction!r}"
            )

    def train_config(self, params: Mapping[str, Any]) -> TrainConfig:
        """What a trial of this study with these parameters trains."""
        return config_from_params(params, epochs=self.epochs, batch_size=self.batch_size)

    @property
    def model_spec(self) -> ModelSpec | None:
        return None if self.model is None else ModelSpec(self.model)

    @property
    def schema(self) -> DataSchema | None:
        """The recorded data schema (None for a study made before schemas were recorded)."""
        return None if self.data_schema is None else DataSchema.from_dict(dict(self.data_schema))

    def load_data(self, source: DataSource) -> Dataset:
        """`source` read as this study reads it (its label column and preprocessing unless
        others were given; its data file when none is given and that file is here); data other
        than the study was created with is refused."""
        if source.path is None and self.data_path is not None and Path(self.data_path).is_file():
            source = replace(source, path=self.data_path)
        recorded = self.schema
        try:
            dataset = source.as_recorded(recorded).load()
        except InvalidInputError as exc:
            if recorded is None or source.label_column is not None:
                raise
            header = {True: ", first row a header", False: ", no header row", None: ""}
            steps = recorded.preprocessing
            preprocessing = "" if steps.is_identity else f", preprocessing {steps.describe()}"
            raise InvalidInputError(
                f"{exc} (reading it as this study does: label column {recorded.label_column!r}"
                f"{header[recorded.has_header]}{preprocessing})"
            ) from exc
        same_schema = recorded is None or (
            (recorded.classes, recorded.feature_names)
            == (dataset.schema.classes, dataset.schema.feature_names)
        )
        if recorded is not None and recorded.preprocessing != dataset.schema.preprocessing:
            raise InvalidInputError(
                f"this study preprocesses its data as {recorded.preprocessing.describe()}; asked "
                f"for {dataset.schema.preprocessing.describe()} (leave the flags out to join it)"
            )
        if dataset.sha256 == self.data_sha256 and same_schema:
            return dataset
        hint = ""
        if recorded is not None and recorded.label_column != dataset.schema.label_column:
            hint = f"; the study's label column is {recorded.label_column!r}"
        elif recorded is not None:
            hint = (
                f"; the study's has {recorded.n_features} features and classes "
                f"{', '.join(recorded.classes)}"
            )
        raise InvalidInputError(
            f"data file {dataset.source} differs from the data this study was created with "
            f"(sha256 of values {dataset.sha256[:12]} != {self.data_sha256[:12]}{hint})"
        )

    def to_dict(self) -> dict[str, Any]:
        """What every worker must agree on (`chosen_by_data`, a note, is kept beside it)."""
        document = {item.name: getattr(self, item.name) for item in fields(self)}
        del document["chosen_by_data"]
        return {**document, "space": self.space.to_dict()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> StudySettings:
        """The stored form; a setting this release does not know is refused, not ignored."""
        unknown = sorted(set(document) - {item.name for item in fields(cls)})
        if unknown:
            raise InvalidInputError(
                f"the study's settings name {', '.join(unknown)}, which this lrsweep does not "
                "know: it was made by a newer release"
            )
        return cls(
            **{
                **document,
                "space": SearchSpace.from_dict(document["space"]),
                "validation_rows": tuple(document["validation_rows"]),
                "fold_rows": tuple(tuple(rows) for rows in document.get("fold_rows", ())),
            }
        )

    def fixed_at_creation(self, dataset: Dataset) -> StudySettings:
        """These settings as a new study stores them: the validation rows drawn from `dataset`
        and the pruner's full spec. Settings the data cannot honour (more folds than the
        smallest class has rows, a fraction that leaves a class out) are refused here."""
        rows = validation_rows(dataset, self.validation_fraction, self.split_seed)
        folds = () if self.folds == 1 else stratified_folds(dataset, self.folds, self.split_seed)
        return replace(
            self,
            validation_rows=rows,
            fold_rows=folds,
            pruner_spec=self.pruner_description(),
            tie_break=True,
            data_schema=dataset.schema.to_dict(),
            data_path=str(Path(dataset.source).resolve()),
        )

    @property
    def validation_row_count(self) -> int:
        """Rows a trial's accuracy is measured on: the split's, or every row once over folds."""
        return sum(len(rows) for rows in self.validation_splits())

    def validation_splits(self) -> tuple[tuple[int, ...], ...]:
        """The validation rows of each model a trial trains: one split, or one per fold."""
        return self.fold_rows if self.folds > 1 else (self.validation_rows,)

    def pruner_description(self) -> dict[str, Any]:
        """The pruner as its Optuna class and constructor arguments (what `sweeps status
        --json` prints, so anyone can rebuild exactly the pruner that ran)."""
        if self.pruner_spec is not None:
            return dict(self.pruner_spec)
        return pruner_spec(self.pruner, self.epochs)  # a study made before specs were stored

    def build_pruner(self) -> optuna.pruners.BasePruner:
        """The pruner `pruner_description` describes."""
        arguments = self.pruner_description()
        pruner_class = getattr(optuna.pruners, arguments.pop("class"))
        return pruner_class(**arguments)  # type: ignore[no-any-return]

    def save(self, study: optuna.Study) -> None:
        if self.chosen_by_data is not None:  # first: a joining worker waits for the settings
            study.set_user_attr(CHOSEN_BY_DATA_ATTR, self.chosen_by_data)
        study.set_user_attr(SETTINGS_ATTR, self.to_dict())

    @classmethod
    def of_study(cls, study: optuna.Study, wait_s: float = 10.0) -> StudySettings:
        """Read a study's settings, waiting briefly for a creator that has not saved them yet."""
        deadline = time.monotonic() + wait_s
        while True:
            document = study.user_attrs.get(SETTINGS_ATTR)
            if document is not None:
                chosen = study.user_attrs.get(CHOSEN_BY_DATA_ATTR)
                return replace(cls.from_dict(document), chosen_by_data=chosen)
            if time.monotonic() > deadline:
                raise InvalidInputError(
                    f"study {study.study_name!r} was not created by lrsweep (no settings found)"
                )
            time.sleep(0.2)
            study = optuna.load_study(study_name=study.study_name, storage=study_storage(study))
