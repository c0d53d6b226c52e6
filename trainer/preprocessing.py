"""Preprocessing as part of the recipe: columns dropped, text columns one-hot encoded, numeric
columns standardized, with scikit-learn doing the work.

Raw features train badly (digits' 0-16 pixels leave the tutorial's lr 0.1 at chance), yet a
scaler fitted on every row leaks the validation rows into training. So the one-hot encoding is
applied when the file is read (its categories, a vocabulary and no statistic, are those of the
training file, recorded), and the scaler is fitted on each split's training rows only
(`standardized`). What was done is recorded in the data schema, so a worker joining the study,
`sweeps train` and the export all apply the same transform; `preprocessing_pipeline` rebuilds
it as one scikit-learn `ColumnTransformer` for the user's own code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lrsweep.errors import InvalidInputError

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer

    from lrsweep.trainer.data import DataSchema

AUTO = "auto"  # --categorical auto: every feature column that holds text
HOW_TO_REBUILD = (
    "schema = lrsweep.trainer.config.load_export(FILE).schema; pipeline = "
    "lrsweep.trainer.preprocessing_pipeline(schema) (an unfitted scikit-learn ColumnTransformer)"
    "; x = pipeline.fit_transform(lrsweep.trainer.read_raw(TRAINING_CSV, schema)) on your "
    "training rows, then pipeline.transform(read_raw(OTHER_CSV, schema))"
)


@dataclass(frozen=True)
class Preprocessing:
    """How a file's columns become a model's features.

    Args:
        drop_columns: columns left out (an id, a leak), by header name or 0-based position.
        categorical: columns one-hot encoded: names or positions, or AUTO for every feature
            column holding text; no column is read as text otherwise (text is refused).
        standardize: scale each numeric feature to mean 0 and variance 1 with the mean and
            variance of the training rows of each split (one-hot columns stay 0/1).
        categories: each encoded column's categories (sorted texts), as recorded from the
            training file; None in a request, where the file gives them.
    """

    drop_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] | str = ()
    standardize: bool = False
    categories: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.categorical, str) and self.categorical != AUTO:
            raise InvalidInputError(
                f"--categorical must be {AUTO}, none or column names; got {self.categorical!r}"
            )

    @property
    def is_identity(self) -> bool:
        """Whether the features are the file's columns as they are (nothing recorded then)."""
        return not (self.drop_columns or self.categories or self.categorical or self.standardize)

    @property
    def one_hot_width(self) -> int:
        """Features the one-hot encoding adds, placed after the numeric ones."""
        return sum(len(values) for _, values in self.categories or ())

    def describe(self) -> str:
        """One line for messages: `drop id; one-hot color (3); standardize`, or `none`."""
        parts = []
        if self.drop_columns:
            parts.append(f"drop {', '.join(self.drop_columns)}")
        if self.categories:
            one_hot = (f"{column} ({len(values)})" for column, values in self.categories)
            parts.append(f"one-hot {', '.join(one_hot)}")
        if self.standardize:
            parts.append("standardize")
        return "; ".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop_columns": list(self.drop_columns),
            "one_hot": {column: list(values) for column, values in self.categories or ()},
            "standardize": self.standardize,
            "rebuild": HOW_TO_REBUILD,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Preprocessing:
        one_hot = dict(document.get("one_hot", {}))
        return cls(
            drop_columns=tuple(str(column) for column in document.get("drop_columns", ())),
            categorical=tuple(one_hot),
            standardize=bool(document.get("standardize", False)),
            categories=tuple(
                (column, tuple(map(str, values))) for column, values in one_hot.items()
            ),
        )


@dataclass(frozen=True)
class PreprocessingRequest:
    """Preprocessing flags as given: each None field keeps what it is laid over (a study's or
    an export's recorded preprocessing, else none), so `--standardize` alone keeps the
    recorded dropped and encoded columns."""

    drop_columns: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | str | None = None
    standardize: bool | None = None

    def over(self, base: Preprocessing | None = None) -> Preprocessing:
        base = base or Preprocessing()
        return Preprocessing(
            drop_columns=base.drop_columns if self.drop_columns is None else self.drop_columns,
            categorical=base.categorical if self.categorical is None else self.categorical,
            standardize=base.standardize if self.standardize is None else self.standardize,
            categories=base.categories if self.categorical is None else None,
        )


def parse_column_list(text: str) -> tuple[str, ...]:
    """`a,b , c` -> ("a", "b", "c"): how --drop-columns and --categorical name columns."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise InvalidInputError(f"an empty column name in {text!r}")
    return names


def categorical_request(text: str) -> tuple[str, ...] | str:
    """--categorical's value: AUTO, none (no column) or column names."""
    if text in (AUTO, "none"):
        return AUTO if text == AUTO else ()
    return parse_column_list(text)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as the loader reads them: text, stripped, a missing cell empty (a category of its
    own). Module level, so a fitted pipeline pickles."""
    return (
        frame.astype(object)
        .where(frame.notna(), "")
        .astype(str)
        .apply(lambda column: column.str.strip())
    )


def one_hot_encoder(categories: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    """The encoder of the recorded categories: a category the training file lacked encodes
    as all zeros, as scikit-learn's `handle_unknown="ignore"` does."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    return make_pipeline(
        FunctionTransformer(as_text, feature_names_out="one-to-one"),
        OneHotEncoder(
            categories=[list(values) for _, values in categories],
            handle_unknown="ignore",
            sparse_output=False,
            dtype=np.float32,
        ),
    )


def encode(cells: pd.DataFrame, categories: tuple[tuple[str, tuple[str, ...]], ...]) -> np.ndarray:
    """Text columns `cells` (in `categories`' order) one-hot encoded, float32."""
    if not categories:
        return np.zeros((len(cells), 0), dtype=np.float32)
    return one_hot_encoder(categories).fit_transform(cells)  # type: ignore[no-any-return]


def standardized(
    train: np.ndarray, validation: np.ndarray, numeric: int
) -> tuple[np.ndarray, np.ndarray]:
    """`train` and `validation` with their first `numeric` columns scaled by the mean and
    variance of `train`'s rows (scikit-learn's StandardScaler: a constant column is centred,
    not divided by zero), computed in float64 as on the raw file's numbers, then float32."""
    from sklearn.preprocessing import StandardScaler

    if not numeric:  # every feature one-hot: nothing to scale
        return train, validation
    scaler = StandardScaler().fit(train[:, :numeric].astype(np.float64))

    def scaled(features: np.ndarray) -> np.ndarray:
        result = features.copy()
        result[:, :numeric] = scaler.transform(features[:, :numeric].astype(np.float64))
        return result

    return scaled(train), scaled(validation)


def preprocessing_pipeline(schema: DataSchema) -> ColumnTransformer:
    """What the sweep did to the data, for your own code: an unfitted `ColumnTransformer` over a
    frame of the raw CSV as `read_raw` reads it that drops, standardizes and one-hot encodes as
    the sweep did, the features in the model's order. Fit it on your training rows only."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    steps = schema.preprocessing
    numeric = [schema.column_key(name) for name in schema.feature_names[: schema.n_numeric]]
    encoded = [schema.column_key(column) for column, _ in steps.categories or ()]
    return ColumnTransformer(
        [
            ("numeric", StandardScaler() if steps.standardize else "passthrough", numeric),
            ("one_hot", one_hot_encoder(steps.categories or ()), encoded),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
