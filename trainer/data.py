"""Load, validate and split a tabular classification CSV (by default the UCI ionosphere data).

Any CSV works: with or without a header row, one label column (the last unless named), every
other column numeric, two or more classes. Every file is validated before use so a truncated
download or a wrong file fails loudly, naming the file, the line and the column, instead of
training on garbage.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep.errors import InvalidInputError
from lrsweep.trainer.preprocessing import AUTO, Preprocessing, PreprocessingRequest, encode
from lrsweep.trainer.stratify import kfold_assignment, shuffle_split_validation

DATA_ENV_VAR = "IONOSPHERE_CSV"
# Header names that say "the label" (lower case): a last column that is not one, while another
# column is, is not taken as the label without --label-column.
LABEL_NAMES = frozenset({"target", "label", "labels", "class", "y", "outcome", "category"})
# Cells that stand for a missing value: a first row of them is data with gaps, not a header.
MISSING_MARKERS = frozenset({"", "?", "na", "n/a", "nan", "null", "none", "-"})
DEFAULT_VALIDATION_FRACTION = 0.3
DEFAULT_SPLIT_SEED = 0
OPENML_DATA_ID = 59
MIN_ROWS = 10
MAX_AUTO_CATEGORIES = 50  # `--categorical auto` takes a text column with up to this many values


@dataclass(frozen=True)
class DataSchema:
    """What a data set looks like to a model: its feature columns, its classes (label values,
    sorted: numerically when they are integers), which column held the label and how the
    file's columns became the features.

    With two classes the second is the positive one (ionosphere: b = 0, g = 1). The features
    are the numeric columns in the file's order, then each one-hot encoded column's categories
    (`column=category`).
    """

    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    label_column: str  # the header's name, or the 0-based position in a file without one
    has_header: bool | None = None  # None: recorded before it was (auto-detected then)
    preprocessing: Preprocessing = Preprocessing()

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_numeric(self) -> int:
        """Features read as numbers (the first ones; standardized when asked)."""
        return self.n_features - self.preprocessing.one_hot_width

    def column_key(self, name: str) -> str | int:
        """How a frame of the raw file (`read_raw`) names a column, given its feature name
        (`column 3` in a file without a header) or its recorded reference (`2`): its header
        name, else its 0-based position."""
        if self.has_header is not False:
            return name
        return int(name) if name.isdigit() else int(name.removeprefix("column ")) - 1

    @property
    def n_outputs(self) -> int:
        """Logits a model emits: one for two classes (sigmoid, BCE), else one per class."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    def to_dict(self) -> dict[str, object]:
        return {
            "feature_names": list(self.feature_names),
            "classes": list(self.classes),
            "label_column": self.label_column,
            "has_header": self.has_header,
            **(
                {}
                if self.preprocessing.is_identity
                else {"preprocessing": self.preprocessing.to_dict()}
            ),
        }

    @classmethod
    def from_dict(cls, document: dict[str, object]) -> DataSchema:
        return cls(
            feature_names=tuple(document["feature_names"]),  # type: ignore[arg-type]
            classes=tuple(document["classes"]),  # type: ignore[arg-type]
            label_column=str(document["label_column"]),
            has_header=document.get("has_header"),  # type: ignore[arg-type]
            preprocessing=Preprocessing.from_dict(
                document.get("preprocessing", {})  # type: ignore[arg-type]
            ),
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """Validated features (float32, [N, F]) and labels (float32 class indices, [N]).

    Compared and hashed by identity, so a loaded data set can key per-process caches.
    """

    features: np.ndarray
    labels: np.ndarray
    source: str
    sha256: str  # of the parsed values; workers sharing a study must agree on it
    schema: DataSchema

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> Dataset:
        """The rows picked by an index array (keeps source, digest and schema of the whole)."""
        return Dataset(
            self.features[rows], self.labels[rows], self.source, self.sha256, self.schema
        )

    def aligned_to(self, schema: DataSchema) -> Dataset:
        """This (test) file's features in the order of `schema`'s (its training data's):
        matched by name when both files have headers, else by position. A missing or extra
        column is refused, not scored by position."""
        mine = self.schema
        if not (mine.has_header and schema.has_header):
            if mine.n_features != schema.n_features:
                raise InvalidInputError(
                    f"test file {self.source} has {mine.n_features} features; the training "
                    f"data has {schema.n_features}"
                )
            return self
        missing = [name for name in schema.feature_names if name not in mine.feature_names]
        extra = [name for name in mine.feature_names if name not in schema.feature_names]
        if missing or extra:
            raise InvalidInputError(
                f"test file {self.source} has other columns than the training data: missing "
                f"{_names(missing)}; extra {_names(extra)}"
            )
        order = [mine.feature_names.index(name) for name in schema.feature_names]
        features = self.features[:, order]
        return Dataset(
            features,
            self.labels,
            self.source,
            content_digest(features, self.labels),
            dataclasses.replace(mine, feature_names=schema.feature_names),
        )


def _names(names: list[str]) -> str:
    return ", ".join(map(repr, names)) or "none"


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


@dataclass(frozen=True)
class DataSource:
    """Where a data set comes from, as the command line names it.

    Args:
        path: the CSV (None: $IONOSPHERE_CSV, else the cached OpenML ionosphere copy).
        label_column: a header name or a 0-based position, negative from the end (None: the
            one a study or export recorded, else the last column).
        classes: the class names labels index into (None: the file's own, sorted); a test
            file is read with its training data's classes, so index k means the same class.
        header: whether the first row is a header (None: decided from the file, `_CsvTable`).
        preprocessing: columns dropped, one-hot encoded, standardized: all of it, or the
            flags given, laid over what a study or export recorded (None: as recorded, else
            none).
        test_file: a file scored with a model trained on another (`scored_with`): it may
            lack a column its training file dropped (an id).
    """

    path: str | None = None
    label_column: str | None = None
    classes: tuple[str, ...] | None = None
    header: bool | None = None
    preprocessing: Preprocessing | PreprocessingRequest | None = None
    test_file: bool = False

    def load(self) -> Dataset:
        """The validated data set, loaded once per process."""
        steps = self.preprocessing
        if isinstance(steps, PreprocessingRequest):
            steps = steps.over()
        return cached_dataset(
            self.path, self.label_column, self.classes, self.header, steps, self.test_file
        )

    def as_recorded(self, schema: DataSchema | None) -> DataSource:
        """This source reading its label column, header and preprocessing as `schema` (a
        study's or an export's) says, unless given."""
        if schema is None:
            return self
        return dataclasses.replace(
            self,
            label_column=schema.label_column if self.label_column is None else self.label_column,
            header=schema.has_header if self.header is None else self.header,
            preprocessing=(
                schema.preprocessing
                if self.preprocessing is None
                else self.preprocessing.over(schema.preprocessing)
                if isinstance(self.preprocessing, PreprocessingRequest)
                else self.preprocessing
            ),
        )

    @staticmethod
    def scored_with(path: str, schema: DataSchema) -> DataSource:
        """A test file read exactly as its training data (`schema`) was: same label column,
        header, classes and preprocessing (the training file's categories)."""
        return DataSource(
            path,
            schema.label_column,
            schema.classes,
            schema.has_header,
            schema.preprocessing,
            test_file=True,
        )


@functools.lru_cache(maxsize=4)
def cached_dataset(
    path: str | None,
    label_column: str | None = None,
    classes: tuple[str, ...] | None = None,
    header: bool | None = None,
    preprocessing: Preprocessing | None = None,
    test_file: bool = False,
) -> Dataset:
    """Load and validate a data file once per process."""
    return load_dataset(path, label_column, classes, header, preprocessing, test_file)


def load_dataset(
    path: str | os.PathLike[str] | None = None,
    label_column: str | None = None,
    classes: tuple[str, ...] | None = None,
    header: bool | None = None,
    preprocessing: Preprocessing | None = None,
    test_file: bool = False,
) -> Dataset:
    """Read and validate a CSV; raise InvalidInputError naming the file and the problem.
    The arguments after `path` are as in `DataSource`."""
    csv_path = resolve_data_path(path)
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read data file {csv_path}: {exc.strerror}") from exc
    if not raw.strip():
        raise InvalidInputError(f"data file {csv_path} is empty")
    try:
        frame = pd.read_csv(
            csv_path, header=None, dtype=str, skipinitialspace=True, keep_default_na=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise InvalidInputError(f"data file {csv_path} is not a valid CSV: {first_line}") from exc
    table = _CsvTable(frame, csv_path, header)
    return table.dataset(label_column, classes, preprocessing or Preprocessing(), test_file)


def read_raw(path: str | os.PathLike[str], schema: DataSchema) -> pd.DataFrame:
    """A CSV as lrsweep reads it, for `preprocessing_pipeline` in your own code: columns named
    by the header (else numbered from 0), cells stripped, a missing cell empty text (`NA` and
    `?` kept as written: a category of their own), the numeric features as numbers."""
    frame = pd.read_csv(
        path,
        header=0 if schema.has_header is not False else None,
        dtype=str,
        skipinitialspace=True,
        keep_default_na=False,
    )
    frame = frame.rename(columns=lambda name: name.strip() if isinstance(name, str) else name)
    frame = frame.apply(lambda column: column.str.strip())
    numeric = [schema.column_key(name) for name in schema.feature_names[: schema.n_numeric]]
    frame[numeric] = frame[numeric].apply(pd.to_numeric)
    return frame


def content_digest(features: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the parsed values, so the same data formatted differently hashes the same."""
    digest = hashlib.sha256(np.ascontiguousarray(features).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


class _CsvTable:
    """A CSV read as text cells, its header row (if any) told apart from its data rows."""

    def __init__(self, frame: pd.DataFrame, path: Path, header: bool | None = None) -> None:
        self.path = path
        cells = frame.fillna("").apply(lambda column: column.str.strip())  # short rows: empty
        parsed = cells.apply(pd.to_numeric, errors="coerce")  # each cell's number, else NaN
        self.has_header = _reads_as_header(cells, parsed) if header is None else header
        self.names = (
            tuple(cells.iloc[0])
            if self.has_header
            else tuple(f"column {i + 1}" for i in range(cells.shape[1]))
        )
        self.cells = cells.iloc[1:] if self.has_header else cells
        self.numbers = parsed.iloc[1:] if self.has_header else parsed
        if self.has_header and "" in self.names:
            raise self.fail(
                f"header has an empty name for column {self.names.index('') + 1} (a row index "
                "written with the data? pandas: to_csv(index=False))"
            )
        repeated = [name for k, name in enumerate(self.names) if name in self.names[:k]]
        if self.has_header and repeated:
            raise self.fail(f"header names column {repeated[0]!r} twice")

    def _where(self, row: int, column: int) -> str:
        """A cell's place as an editor shows it: the file's line and the column's name."""
        line = row + 1 + int(self.has_header)
        name = repr(self.names[column]) if self.has_header else str(column + 1)
        return f"line {line} column {name}"

    def fail(self, problem: str) -> InvalidInputError:
        return InvalidInputError(f"data file {self.path} {problem}")

    def _closest_names(self, wanted: str) -> str:
        """The header's names closest to a mistyped one (ignoring case), else its first 12."""
        by_lower = {name.lower(): name for name in self.names}
        close = difflib.get_close_matches(wanted.lower(), by_lower, n=3, cutoff=0.5)
        if close:
            return "did you mean " + " or ".join(repr(by_lower[name]) for name in close) + "?"
        width = len(self.names)
        return "its header: " + ", ".join(self.names[:12]) + (", ..." if width > 12 else "")

    def label_position(self, label_column: str | None) -> int:
        if label_column is None:
            return len(self.names) - 1
        return self.column_position(label_column, "--label-column")

    def column_position(self, reference: str, flag: str) -> int:
        """The column a flag names: a header name, else a 0-based position (negative from the
        end)."""
        width = len(self.names)
        if self.has_header and reference in self.names:
            return self.names.index(reference)
        try:
            position = int(reference)
        except ValueError:
            raise self.fail(
                f"has no column {reference!r} ({self._closest_names(reference)})"
                if self.has_header
                else f"has no header row; give {flag} as a 0-based position"
            ) from None
        if not -width <= position < width:
            raise self.fail(f"has {width} columns; {flag} {position} is outside them")
        return position % width

    def _preprocessed_positions(
        self, preprocessing: Preprocessing, label_at: int, test_file: bool
    ) -> tuple[list[int], list[int]]:
        """The positions of the dropped columns and of the one-hot encoded ones (each once);
        neither may be the label, nor one column both. A test file, read as its training file
        was, may lack a dropped column (an id the training file had)."""
        dropped = sorted(
            {
                self.column_position(name, "--drop-columns")
                for name in preprocessing.drop_columns
                if not (test_file and self.has_header and name not in self.names)
            }
        )
        if preprocessing.categorical == AUTO:
            encoded = [
                k
                for k in range(len(self.names))
                if k != label_at and k not in dropped and self._holds_text(k)
            ]
            self._refuse_id_like(encoded)
        else:
            encoded = list(
                dict.fromkeys(
                    self.column_position(name, "--categorical")
                    for name in preprocessing.categorical
                )
            )
        for flag, positions in (("--drop-columns", dropped), ("--categorical", encoded)):
            if label_at in positions:
                raise self.fail(f"has its label column {self._column_ref(label_at)} in {flag}")
        both = set(dropped) & set(encoded)
        if both:
            raise self.fail(
                f"column {self._column_ref(min(both))} is in both --drop-columns and --categorical"
            )
        return dropped, encoded

    def _holds_text(self, column: int) -> bool:
        """Whether a column has a cell that is neither a number nor a missing-value mark."""
        cells = self.cells.iloc[:, column]
        missing = cells.str.lower().isin(MISSING_MARKERS)
        return bool((self.numbers.iloc[:, column].isna() & ~missing).any())

    def _refuse_id_like(self, encoded: list[int]) -> None:
        """`--categorical auto` encodes categories, not names or ids: a text column with more
        distinct values than half its rows would add a feature per row."""
        for k in encoded:
            distinct = self.cells.iloc[:, k].nunique()
            if distinct > max(MAX_AUTO_CATEGORIES, len(self.cells) // 2):
                name = self._column_ref(k)
                raise self.fail(
                    f"column {name} holds text with {distinct} distinct values in "
                    f"{len(self.cells)} rows, like an id or free text: --drop-columns {name}, "
                    f"or name it in --categorical to encode it anyway"
                )

    def dataset(
        self,
        label_column: str | None,
        classes: tuple[str, ...] | None,
        preprocessing: Preprocessing = Preprocessing(),
        test_file: bool = False,
    ) -> Dataset:
        if len(self.names) < 2:
            raise self.fail("has one column; need features and a label")
        if len(self.cells) < MIN_ROWS:
            raise self.fail(f"has only {len(self.cells)} rows; need {MIN_ROWS}+")
        label_at = self.label_position(label_column)
        dropped, encoded = self._preprocessed_positions(preprocessing, label_at, test_file)
        if label_column is None:
            self._refuse_a_feature_as_default_label(label_at, set(dropped) | set(encoded))
        feature_at = [
            i for i in range(len(self.names)) if i != label_at and i not in dropped + encoded
        ]
        if not feature_at and not encoded:
            raise self.fail("has no feature column left after --drop-columns")
        values = self._numeric_features(feature_at)
        categories = preprocessing.categories
        if categories is None:  # a training file: its own categories, sorted
            categories = tuple(
                (self._column_ref(k), tuple(sorted(set(self.cells.iloc[:, k])))) for k in encoded
            )
        one_hot = encode(self.cells.iloc[:, encoded], categories)
        labels, classes = self._labels(label_at, classes)
        schema = DataSchema(
            feature_names=tuple(self.names[i] for i in feature_at)
            + tuple(
                f"{self.names[k]}={value}"
                for k, (_, values) in zip(encoded, categories, strict=True)
                for value in values
            ),
            classes=classes,
            label_column=self.names[label_at] if self.has_header else str(label_at),
            has_header=self.has_header,
            preprocessing=Preprocessing(
                drop_columns=(
                    preprocessing.drop_columns
                    if test_file
                    else tuple(self._column_ref(k) for k in dropped)
                ),
                categorical=tuple(self._column_ref(k) for k in encoded),
                standardize=preprocessing.standardize,
                categories=categories,
            ),
        )
        features = np.hstack([values.astype(np.float32), one_hot])
        return Dataset(features, labels, str(self.path), content_digest(features, labels), schema)

    def _numeric_features(self, feature_at: list[int]) -> np.ndarray:
        """The numeric feature columns, every cell a finite number (else refused, naming it)."""
        text = self.cells.iloc[:, feature_at]
        values = self.numbers.iloc[:, feature_at].to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if not bad.any():
            return values
        row, column = np.argwhere(bad)[0]
        cell = text.iat[row, column]
        hint = self._header_hint(row)
        if cell and not hint and self._holds_text(feature_at[column]):
            name = self._column_ref(feature_at[column])
            hint = (
                f" (a text column: --categorical auto one-hot encodes it, --drop-columns {name} "
                "leaves it out)"
            )
        raise self.fail(
            f"{self._where(row, feature_at[column])}: feature "
            f"{cell!r} is {'empty' if not cell else 'not a finite number'}{hint}"
        )

    def _labels(
        self, label_at: int, known: tuple[str, ...] | None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Class indices (float32) and the class names: `known`, else the file's own, sorted
        (integers as numbers)."""
        text = self.cells.iloc[:, label_at]
        empty = np.flatnonzero((text == "").to_numpy())
        if len(empty):
            raise self.fail(f"{self._where(int(empty[0]), label_at)}: the label is empty")
        numbers = self.numbers.iloc[:, label_at]
        integers = _all_integers(numbers)
        if integers:
            text = numbers.astype("int64").astype(str)
        if known is not None:
            unknown = np.flatnonzero(~text.isin(known).to_numpy())
            if len(unknown):
                row = int(unknown[0])
                raise self.fail(
                    f"{self._where(row, label_at)}: label {text.iat[row]!r} is not one of the "
                    f"classes the model was trained on ({', '.join(known)})"
                )
        classes = known if known is not None else self._classes(text, integers)
        index = {name: float(k) for k, name in enumerate(classes)}
        return text.map(index).to_numpy(dtype=np.float32), classes

    def _classes(self, text: pd.Series, integers: bool) -> tuple[str, ...]:
        """The sorted class names of a training file, each with 2+ rows."""
        names, counts = np.unique(text.to_numpy(dtype=str), return_counts=True)
        key = int if integers else str
        order = sorted(range(len(names)), key=lambda i: key(names[i]))  # type: ignore[operator]
        classes = tuple(str(names[i]) for i in order)
        if len(classes) < 2:
            raise self.fail(f"has only one class ({classes[0]!r}); need two or more")
        rare = [classes[k] for k, i in enumerate(order) if counts[i] < 2]
        if rare:
            raise self.fail(
                f"has {len(rare)} classes with a single row (e.g. {rare[0]!r}) among "
                f"{len(classes)}; each class needs 2+ rows: is the label column right?"
                + self._header_hint(0 if text.iat[0] in rare else -1)
            )
        return classes

    def _refuse_a_feature_as_default_label(self, label_at: int, chosen: set[int]) -> None:
        """The last column is the label by default, but not one that reads as a feature while
        another column reads as the label. A feature-like last column holds non-integer
        numbers, or integers with more distinct values than the square root of the rows (a
        class per few rows); a label-like column is named like one (`target`, `label`,
        `class`, `y`, ...) or holds text, which no feature may (unless `chosen` to be dropped or
        encoded). Naming the label column takes it as it is."""
        text = self.cells.iloc[:, label_at]
        numbers = self.numbers.iloc[:, label_at]
        others = [k for k in range(len(self.names)) if k != label_at and k not in chosen]
        named = [k for k in others if self.has_header and self.names[k].lower() in LABEL_NAMES]
        texts = [k for k in others if self.numbers.iloc[:, k].isna().all()]
        if numbers.isna().any():
            return  # text: a label, never a feature
        if not _all_integers(numbers):
            problem = "holds non-integer numbers, like a feature"
        elif text.nunique() > math.sqrt(len(text)):
            problem = f"has {text.nunique()} distinct values in {len(text)} rows, like a feature"
        elif named or texts:
            problem = "holds numbers"
        else:
            return
        likely = named + texts
        hint = (
            f": --label-column {self._column_ref(likely[0])} looks like one "
            f"({self.cells.iloc[:, likely[0]].nunique()} values)"
            if likely
            else " (--label-column NAME|INDEX)"
        )
        raise self.fail(
            f"has as its last column ({self._column_ref(label_at)}) one that {problem}; name "
            f"the label column{hint}"
        )

    def _header_hint(self, row: int) -> str:
        """For a problem on the first data row of a file read without a header."""
        if row != 0 or self.has_header:
            return ""
        return " (if the first row is a header, say --header yes)"

    def _column_ref(self, column: int) -> str:
        """How --label-column names a column: its header name, else its 0-based position."""
        return self.names[column] if self.has_header else str(column)


def _all_integers(numbers: pd.Series) -> bool:
    """Whether a column parsed by `pd.to_numeric(errors="coerce")` is integers throughout."""
    return bool(numbers.notna().all() and (numbers % 1 == 0).all())


def _reads_as_header(cells: pd.DataFrame, parsed: pd.DataFrame) -> bool:
    """Whether the first row is a header, as a person reading the file decides: it is when
    more of its cells above all-number columns are names than numbers (a missing-value mark
    such as `?` or `NA` is no name: a data row with gaps stays data, validated as such), or
    when it is names only, none of which recurs in its column (a file of text columns), or
    when its cells before the last are the positions 0, 1, ... that pandas writes for a frame
    without column names (the last, the label's, may be named anything: `concat([X, y])`).
    `--header` decides the rest: numbers only (`1990,1991,...`), which a data row could also
    be."""
    if len(cells) < 2:
        return False
    top = cells.iloc[0]
    numeric = parsed.notna().to_numpy()
    numbers_below = numeric[1:].all(0)
    named = ~numeric[0] & ~top.str.lower().isin(MISSING_MARKERS).to_numpy()
    if (named & numbers_below).sum() > (numeric[0] & numbers_below).sum():
        return True
    below = cells.iloc[1:]
    if named.all() and not any(top.iloc[k] in set(below.iloc[:, k]) for k in range(len(top))):
        return True  # names only, none of them a value of its column: text columns' header
    return list(top.iloc[:-1]) == [str(position) for position in range(cells.shape[1] - 1)]


@dataclass(frozen=True)
class Split:
    """Row indices of a seeded, stratified train/validation split."""

    train: np.ndarray
    validation: np.ndarray


def check_validation_fraction(dataset: Dataset, validation_fraction: float) -> None:
    """Refuse a fraction that leaves fewer than one row per class on either side of a split
    (what a stratified split needs), before anything is written."""
    smallest = smallest_class(dataset)
    if smallest < 2:
        raise InvalidInputError(
            f"a stratified split needs at least 2 rows of each class; {dataset.source} has a "
            f"class with {smallest}"
        )
    held_out = math.ceil(validation_fraction * len(dataset))
    classes = len(np.unique(dataset.labels))  # each side of the split needs every class
    if not 0.0 < validation_fraction < 1.0 or not classes <= held_out <= len(dataset) - classes:
        raise InvalidInputError(
            f"validation fraction must hold out between {classes} and "
            f"{len(dataset) - classes} of the {len(dataset)} rows; got {validation_fraction}"
        )


def smallest_class(dataset: Dataset) -> int:
    """Rows of the rarest class: at most that many stratified folds can each hold every class."""
    return int(np.unique(dataset.labels, return_counts=True)[1].min())


def check_folds(dataset: Dataset, folds: int) -> None:
    """Refuse a fold count a stratified split cannot honour (each fold needs every class)."""
    smallest = smallest_class(dataset)
    if folds != 1 and not 2 <= folds <= smallest:
        raise InvalidInputError(
            f"--folds must be 1, or between 2 and {smallest} (the smallest class's rows); "
            f"got {folds}"
        )


def stratified_split(dataset: Dataset, validation_fraction: float, seed: int) -> Split:
    """Split rows so both parts keep the class ratios; the same seed gives the same split (the
    rows of scikit-learn's `train_test_split(stratify=...)`, `lrsweep.trainer.stratify`)."""
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
