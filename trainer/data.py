"""Load, validate and split the UCI ionosphere data set.

The file is the UCI layout: no header, 34 numeric features, then a label `g` (good) or `b` (bad).
Every file is validated before use so a truncated download or a wrong file fails loudly, naming
the file and the problem, instead of training on garbage.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.errors import InvalidInputError
from trainer.stratify import kfold_assignment, shuffle_split_validation

N_FEATURES = 34
LABELS = {"g": 1.0, "b": 0.0}
DATA_ENV_VAR = "IONOSPHERE_CSV"
DEFAULT_VALIDATION_FRACTION = 0.3
DEFAULT_SPLIT_SEED = 0
OPENML_DATA_ID = 59


@dataclass(frozen=True, eq=False)
class Dataset:
    """Validated features (float32, [N, 34]) and labels (float32, [N], 1 = good).

    Compared and hashed by identity, so a loaded data set can key per-process caches.
    """

    features: np.ndarray
    labels: np.ndarray
    source: str
    sha256: str  # of the parsed values; workers sharing a study must agree on it

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> Dataset:
        """The rows picked by an index array (keeps source and digest of the whole file)."""
        return Dataset(self.features[rows], self.labels[rows], self.source, self.sha256)


def cache_path() -> Path:
    """Where a fetched copy is kept: $XDG_CACHE_HOME/lrsweep/ionosphere.csv."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "lrsweep" / "ionosphere.csv"


def resolve_data_path(path: str | os.PathLike[str] | None) -> Path:
    """The CSV to use: the explicit path, then $IONOSPHERE_CSV, then the cached OpenML copy."""
    if path:
        return Path(path)
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR])
    cached = cache_path()
    if not cached.exists():
        _fetch_from_openml(cached)
    return cached


def _fetch_from_openml(destination: Path) -> None:
    """Download the data through scikit-learn's OpenML loader and write it in the UCI layout."""
    from sklearn.datasets import fetch_openml

    try:
        with warnings.catch_warnings():  # its retry warnings would bury the one-line error
            warnings.simplefilter("ignore", UserWarning)
            bunch = fetch_openml(data_id=OPENML_DATA_ID, as_frame=True, parser="auto")
    except Exception as exc:  # network errors come in many types; all mean "no data"
        raise InvalidInputError(
            f"no data file given (--data or ${DATA_ENV_VAR}) and fetching ionosphere from "
            f"OpenML failed: {type(exc).__name__}: {exc}"
        ) from exc
    frame = bunch.frame.copy()
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(".tmp")
    frame.to_csv(tmp, header=False, index=False)
    tmp.replace(destination)


@functools.lru_cache(maxsize=4)
def cached_dataset(path: str | None) -> Dataset:
    """Load and validate a data file once per process."""
    return load_ionosphere(path)


def load_ionosphere(path: str | os.PathLike[str] | None = None) -> Dataset:
    """Read and validate an ionosphere CSV; raise InvalidInputError naming the file and problem."""
    csv_path = resolve_data_path(path)
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read data file {csv_path}: {exc.strerror}") from exc
    if not raw.strip():
        raise InvalidInputError(f"data file {csv_path} is empty")
    try:
        frame = pd.read_csv(csv_path, header=None, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise InvalidInputError(f"data file {csv_path} is not a valid CSV: {first_line}") from exc
    features, labels = _validate(frame, csv_path)
    return Dataset(
        features=features,
        labels=labels,
        source=str(csv_path),
        sha256=content_digest(features, labels),
    )


def content_digest(features: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the parsed values, so the same data formatted differently hashes the same."""
    digest = hashlib.sha256(np.ascontiguousarray(features).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def _validate(frame: pd.DataFrame, csv_path: Path) -> tuple[np.ndarray, np.ndarray]:
    if frame.shape[1] != N_FEATURES + 1:
        raise InvalidInputError(
            f"data file {csv_path} has {frame.shape[1]} columns; expected {N_FEATURES + 1} "
            f"({N_FEATURES} features and a g/b label)"
        )
    if len(frame) < 10:
        raise InvalidInputError(f"data file {csv_path} has only {len(frame)} rows; need 10+")
    numeric = frame.iloc[:, :N_FEATURES].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=float, na_value=np.nan))
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        value = frame.iat[row, col]
        raise InvalidInputError(
            f"data file {csv_path} row {row + 1} column {col + 1}: feature {value!r} is not a "
            f"finite number"
        )
    label_text = frame.iloc[:, N_FEATURES].str.strip()
    unknown = ~label_text.isin(list(LABELS))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InvalidInputError(
            f"data file {csv_path} row {row + 1}: label {frame.iat[row, N_FEATURES]!r} is not "
            f"'g' or 'b'"
        )
    labels = label_text.map(LABELS).to_numpy(dtype=np.float32)
    if len(np.unique(labels)) < 2:
        raise InvalidInputError(f"data file {csv_path} has only one class; need both g and b")
    return numeric.to_numpy(dtype=np.float32), labels


@dataclass(frozen=True)
class Split:
    """Row indices of a seeded, stratified train/validation split."""

    train: np.ndarray
    validation: np.ndarray


def check_validation_fraction(dataset: Dataset, validation_fraction: float) -> None:
    """Refuse a fraction that leaves fewer than one row per class on either side of a split
    (what a stratified split needs), before anything is written."""
    smallest = _smallest_class(dataset)
    if smallest < 2:
        raise InvalidInputError(
            f"a stratified split needs at least 2 rows of each class; {dataset.source} has a "
            f"class with {smallest}"
        )
    held_out = math.ceil(validation_fraction * len(dataset))
    if not 0.0 < validation_fraction < 1.0 or not 2 <= held_out <= len(dataset) - 2:
        raise InvalidInputError(
            f"validation fraction must hold out between 2 and {len(dataset) - 2} of the "
            f"{len(dataset)} rows; got {validation_fraction}"
        )


def _smallest_class(dataset: Dataset) -> int:
    return int(min(dataset.labels.sum(), len(dataset) - dataset.labels.sum()))


def check_folds(dataset: Dataset, folds: int) -> None:
    """Refuse a fold count a stratified split cannot honour (each fold needs every class)."""
    smallest = _smallest_class(dataset)
    if folds != 1 and not 2 <= folds <= smallest:
        raise InvalidInputError(
            f"--folds must be 1, or between 2 and {smallest} (the smaller class's rows); "
            f"got {folds}"
        )


def stratified_split(dataset: Dataset, validation_fraction: float, seed: int) -> Split:
    """Split rows so both parts keep the g/b ratio; the same seed gives the same split (the
    rows of scikit-learn's `train_test_split(stratify=...)`, `trainer.stratify`)."""
    check_validation_fraction(dataset, validation_fraction)
    validation = shuffle_split_validation(dataset.labels, validation_fraction, seed)
    return Split(train=np.setdiff1d(np.arange(len(dataset)), validation), validation=validation)


def stratified_folds(dataset: Dataset, folds: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """The validation rows of each of `folds` stratified folds (every row in exactly one); the
    same seed gives the same folds (scikit-learn's `StratifiedKFold(shuffle=True)`'s)."""
    if folds == 1:
        raise ValueError("one fold is a train/validation split: use stratified_split")
    check_folds(dataset, folds)
    assignment = kfold_assignment(dataset.labels, folds, seed)
    return tuple(
        tuple(int(row) for row in np.flatnonzero(assignment == fold)) for fold in range(folds)
    )


def validation_rows(
    dataset: Dataset,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> tuple[int, ...]:
    """The held-out rows of `stratified_split`, as a plain tuple a study can store."""
    return tuple(
        int(row) for row in stratified_split(dataset, validation_fraction, seed).validation
    )
