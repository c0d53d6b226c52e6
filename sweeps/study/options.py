"""What a person asks of a study: the data to read, and the settings of a new study. Each field
is its command-line flag too (`sweeps.flags`); checked and turned into `StudySettings` here."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsweep.sweeps.flags import option
from lrsweep.sweeps.study.settings import PRUNERS, StudySettings, default_folds
from lrsweep.sweeps.study.space import load_space
from lrsweep.trainer import Dataset
from lrsweep.trainer.config import DEFAULT_EPOCHS
from lrsweep.trainer.data import DEFAULT_VALIDATION_FRACTION, DataSource
from lrsweep.trainer.preprocessing import (
    PreprocessingRequest,
    categorical_request,
    parse_column_list,
)

DEFAULT_RUN_TRIALS = 100  # what `sweeps run` and `sweeps.run()` sweep for when not told
DEFAULT_RUN_SEED = 0  # `sweeps run` is reproducible unless told otherwise


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"must be yes or no; got {text!r}")
    return text == "yes"


@dataclass(frozen=True)
class DataOptions:
    """The CSV and how to read it (default: $IONOSPHERE_CSV, else OpenML's ionosphere)."""

    path: str | None = option(
        None,
        "--data",
        metavar="CSV",
        help="classification CSV, with or without a header (default $IONOSPHERE_CSV or OpenML "
        "ionosphere)",
        show=lambda path: str(Path(path).resolve()),  # a launched worker may start elsewhere
    )
    label_column: str | None = option(
        None,
        "--label-column",
        metavar="NAME|INDEX",
        help="the label's column: a header name or a 0-based position, -1 the last (default: "
        "the study's, else the last)",
    )
    header: bool | None = option(
        None,
        "--header",
        metavar="{yes,no}",
        parse=_yes_no,
        show=lambda header: "yes" if header else "no",
        help="whether the first row is a header (default: the study's, else read from the file "
        "as a person would: README, Your data)",
    )

    drop_columns: tuple[str, ...] | None = option(
        None,
        "--drop-columns",
        metavar="NAME,...",
        parse=parse_column_list,
        show=",".join,
        help="columns left out (an id, a leak): header names or 0-based positions (default: "
        "the study's, else none)",
    )
    categorical: tuple[str, ...] | str | None = option(
        None,
        "--categorical",
        metavar="auto|none|NAME,...",
        parse=categorical_request,
        show=lambda value: value if isinstance(value, str) else ",".join(value) or "none",
        help="one-hot encode these text columns (auto: every column holding text; default: the "
        "study's, else none)",
    )
    standardize: bool | None = option(
        None,
        "--standardize",
        negatable=True,
        help="scale numeric features to mean 0, variance 1, fitted on each fold's training rows "
        "(default: the study's, else off)",
    )

    @property
    def source(self) -> DataSource:
        return DataSource(
            self.path, self.label_column, header=self.header, preprocessing=self.preprocessing
        )

    @property
    def preprocessing(self) -> PreprocessingRequest | None:
        """The preprocessing flags given, laid over a study's or export's; None when none is."""
        request = PreprocessingRequest(self.drop_columns, self.categorical, self.standardize)
        return None if request == PreprocessingRequest() else request


@dataclass(frozen=True)
class StudyOptions:
    """The settings a new study is created with; a worker joining an existing study takes the
    study's, and only an explicitly given one that differs is refused (`open.join`)."""

    space: str | None = option(
        None, "--space", help="search-space file (.toml/.yaml) overriding ranges"
    )
    model: str | None = option(
        None,
        "--model",
        metavar="MODULE:FUNCTION",
        help="your model: FUNCTION(n_features, n_outputs) -> nn.Module (imports MODULE: your "
        "code runs; default the built-in MLP)",
    )
    pruner: str | None = option(None, "--pruner", help=f"{', '.join(PRUNERS)} (default median)")
    epochs: int | None = option(
        None, "--epochs", parse=int, help=f"epochs per trial (default {DEFAULT_EPOCHS})"
    )
    folds: int | None = option(
        None,
        "--folds",
        parse=int,
        help="cross-validate each trial over F stratified folds, trained together (default: 5 "
        "when one split's accuracy is noisier than 1 point, else 1; 1: one train/validation "
        "split, --validation-fraction)",
    )
    validation_fraction: float | None = option(
        None,
        "--validation-fraction",
        parse=float,
        help=f"held-out share (default {DEFAULT_VALIDATION_FRACTION})",
    )
    baselines: bool | None = option(
        None,
        "--baselines",
        negatable=True,
        help="run the tutorial's schedules first (default: on for `run`)",
    )

    def __post_init__(self) -> None:
        """A space file is read at once, so that a typo in it is refused before the data,
        the study and torch are loaded (read again, cheaply, when a study is made)."""
        if self.space is not None:
            load_space(self.space)

    def requested(self, dataset: Dataset) -> tuple[StudySettings, frozenset[str]]:
        """The settings a new study on `dataset` gets, and the names the person gave (a join
        with another value for one of those is refused). A validation fraction asks for one
        split; otherwise, without --folds, the data's noise decides (`default_folds`)."""
        given: dict[str, Any] = {
            "pruner": self.pruner,
            "epochs": self.epochs,
            "folds": self.folds,
            "validation_fraction": self.validation_fraction,
            "space": load_space(self.space) if self.space else None,
            "model": self.model,
        }
        explicit = {name: value for name, value in given.items() if value is not None}
        chosen: dict[str, Any] = {}
        if self.validation_fraction is not None:
            chosen = {"folds": 1}
        elif self.folds is None:
            folds, why = default_folds(dataset)
            chosen = {"folds": folds, "chosen_by_data": why}
        settings = StudySettings(data_sha256=dataset.sha256, **{**chosen, **explicit})
        return settings, frozenset(explicit)
