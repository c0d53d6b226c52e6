from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.model_selection import StratifiedKFold, train_test_split

from lrsweep.trainer import InvalidInputError, load_dataset, stratified_split
from lrsweep.trainer.stratify import kfold_assignment, shuffle_split_validation


def test_shared_file_loads_with_expected_shape_and_labels(data_path: Path) -> None:
    dataset = load_dataset(data_path)
    assert dataset.features.shape == (351, 34)
    assert dataset.features.dtype == np.float32
    assert set(np.unique(dataset.labels)) == {0.0, 1.0}
    assert int(dataset.labels.sum()) == 225  # 225 good, 126 bad in the UCI file


def test_environment_variable_names_the_file(
    data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IONOSPHERE_CSV", str(data_path))
    assert load_dataset().source == str(data_path)


def test_digest_depends_on_values_not_formatting(data_path: Path, tmp_path: Path) -> None:
    reformatted = tmp_path / "spaced.csv"
    reformatted.write_text(data_path.read_text().replace(",", ", ") + "\n")
    assert load_dataset(reformatted).sha256 == load_dataset(data_path).sha256


def _with_cell(lines: list[str], row: int, column: int, value: str) -> list[str]:
    cells = lines[row].split(",")
    cells[column] = value
    return [*lines[:row], ",".join(cells), *lines[row + 1 :]]


def _rewrite(data_path: Path, tmp_path: Path, edit: object) -> Path:
    lines = data_path.read_text().splitlines()
    out = tmp_path / "bad.csv"
    out.write_text("\n".join(edit(lines)) + "\n")  # type: ignore[operator]
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: [line.split(",")[-1] for line in lines], "has one column"),
        (
            lambda lines: _with_cell(lines, 4, 1, "abc"),
            "line 5 column 2: feature 'abc' is not a finite number",
        ),
        (lambda lines: _with_cell(lines, 0, 2, ""), "line 1 column 3: feature '' is empty"),
        (lambda lines: [lines[0][:-1]] + lines[1:], "line 1 column 35: the label is empty"),
        (lambda lines: [lines[0][:-1] + "x"] + lines[1:], "single row \\(e.g. 'x'\\)"),
        (lambda lines: [lines[0].replace("0.99539", "nan")] + lines[1:], "not a finite number"),
        (lambda lines: [line for line in lines if line.endswith("g")], "only one class"),
        (lambda lines: lines[:3], "only 3 rows"),
        (lambda lines: [], "is empty"),
        (lambda lines: ["a,b"] + lines, "not a valid CSV"),
    ],
    ids=[
        *("one-column", "text", "empty-cell", "empty-label", "lone-class", "nan", "one-class"),
        *("short", "empty", "ragged"),
    ],
)
def test_bad_files_are_refused_naming_file_and_problem(
    data_path: Path, tmp_path: Path, edit: object, message: str
) -> None:
    bad = _rewrite(data_path, tmp_path, edit)
    with pytest.raises(InvalidInputError, match=message) as raised:
        load_dataset(bad)
    assert str(bad) in str(raised.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read data file"):
        load_dataset(tmp_path / "nope.csv")


def test_split_is_seeded_stratified_and_disjoint(data_path: Path) -> None:
    dataset = load_dataset(data_path)
    split = stratified_split(dataset, 0.3, seed=0)
    again = stratified_split(dataset, 0.3, seed=0)
    other = stratified_split(dataset, 0.3, seed=1)
    assert np.array_equal(split.validation, again.validation)
    assert not np.array_equal(split.validation, other.validation)
    assert set(split.train).isdisjoint(split.validation)
    assert len(split.train) + len(split.validation) == 351
    assert len(split.validation) == 106
    ratio = dataset.labels[split.validation].mean()
    assert abs(ratio - dataset.labels.mean()) < 0.01


def test_without_a_path_the_openml_copy_is_fetched_once_and_cached(
    data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No network here: stand in for OpenML with the same table, the loader does the rest."""
    import pandas as pd
    import sklearn.datasets
    from sklearn.utils import Bunch

    calls = []

    def fake_fetch_openml(**kwargs: object) -> Bunch:
        calls.append(kwargs)
        frame = pd.read_csv(data_path, header=None)
        frame.columns = [f"a{i:02d}" for i in range(1, 35)] + ["class"]
        return Bunch(frame=frame)

    monkeypatch.delenv("IONOSPHERE_CSV", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch_openml)
    first = load_dataset()
    second = load_dataset()
    assert len(calls) == 1 and calls[0]["data_id"] == 59
    assert first.source == str(tmp_path / "lrsweep" / "ionosphere.csv")
    assert first.sha256 == second.sha256 == load_dataset(data_path).sha256


def test_failed_fetch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    def offline(**kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.delenv("IONOSPHERE_CSV", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(InvalidInputError, match="fetching ionosphere from OpenML failed"):
        load_dataset()


@st.composite
def _labels(draw: st.DrawFn, least: int) -> np.ndarray:
    """Labels of 2-4 classes (floats, as datasets hold them), each class at least `least`
    rows, in any order."""
    counts = draw(st.lists(st.integers(least, 60), min_size=2, max_size=4))
    labels = np.repeat(np.arange(len(counts), dtype=np.float32), counts)
    return np.asarray(draw(st.permutations(labels.tolist())), dtype=np.float32)


@settings(max_examples=200, deadline=None)
@given(
    labels=_labels(least=4),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_split_holds_out_exactly_scikit_learns_rows(
    labels: np.ndarray, fraction: float, seed: int
) -> None:
    n_test = math.ceil(fraction * len(labels))
    assume(len(set(labels.tolist())) <= min(n_test, len(labels) - n_test))
    _, expected = train_test_split(
        np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels
    )
    assert shuffle_split_validation(labels, fraction, seed).tolist() == sorted(expected.tolist())


@settings(max_examples=200, deadline=None)
@given(labels=_labels(least=5), folds=st.integers(2, 5), seed=st.integers(0, 2**31 - 1))
def test_the_folds_are_exactly_scikit_learns(labels: np.ndarray, folds: int, seed: int) -> None:
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    expected = [held.tolist() for _, held in splitter.split(np.zeros(len(labels)), labels)]
    assignment = kfold_assignment(labels, folds, seed)
    assert [np.flatnonzero(assignment == fold).tolist() for fold in range(folds)] == expected


@pytest.mark.parametrize(("fraction", "seed"), [(0.3, 0), (0.25, 7), (0.5, 1)])
def test_the_real_labels_split_as_scikit_learn_splits_them(
    data_path: Path, fraction: float, seed: int
) -> None:
    labels = load_dataset(data_path).labels
    _, expected = train_test_split(
        np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels
    )
    assert shuffle_split_validation(labels, fraction, seed).tolist() == sorted(expected.tolist())
    for folds in (2, 5, 10, 126):
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        held = [h.tolist() for _, h in splitter.split(np.zeros(len(labels)), labels)]
        assignment = kfold_assignment(labels, folds, seed)
        assert [np.flatnonzero(assignment == f).tolist() for f in range(folds)] == held


def test_a_class_of_one_row_cannot_be_split(data_path: Path) -> None:
    dataset = load_dataset(data_path)
    rows = np.concatenate([np.flatnonzero(dataset.labels == 1), [np.argmin(dataset.labels)]])
    with pytest.raises(InvalidInputError, match="at least 2 rows of each class"):
        stratified_split(dataset.take(rows), 0.3, 0)
