from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer import InvalidInputError, load_ionosphere, stratified_split


def test_shared_file_loads_with_expected_shape_and_labels(data_path: Path) -> None:
    dataset = load_ionosphere(data_path)
    assert dataset.features.shape == (351, 34)
    assert dataset.features.dtype == np.float32
    assert set(np.unique(dataset.labels)) == {0.0, 1.0}
    assert int(dataset.labels.sum()) == 225  # 225 good, 126 bad in the UCI file


def test_environment_variable_names_the_file(
    data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IONOSPHERE_CSV", str(data_path))
    assert load_ionosphere().source == str(data_path)


def test_digest_depends_on_values_not_formatting(data_path: Path, tmp_path: Path) -> None:
    reformatted = tmp_path / "spaced.csv"
    reformatted.write_text(data_path.read_text().replace(",", ", ") + "\n")
    assert load_ionosphere(reformatted).sha256 == load_ionosphere(data_path).sha256


def _rewrite(data_path: Path, tmp_path: Path, edit: object) -> Path:
    lines = data_path.read_text().splitlines()
    out = tmp_path / "bad.csv"
    out.write_text("\n".join(edit(lines)) + "\n")  # type: ignore[operator]
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: [",".join(line.split(",")[1:]) for line in lines], "has 34 columns"),
        (lambda lines: [lines[0].replace("0.99539", "abc")] + lines[1:], "'abc' is not a finite"),
        (lambda lines: [lines[0][:-1] + "x"] + lines[1:], "label 'x'"),
        (lambda lines: [lines[0].replace("0.99539", "nan")] + lines[1:], "not a finite number"),
        (lambda lines: [line for line in lines if line.endswith("g")], "only one class"),
        (lambda lines: lines[:3], "only 3 rows"),
        (lambda lines: [], "is empty"),
    ],
    ids=["columns", "text", "label", "nan", "one-class", "short", "empty"],
)
def test_bad_files_are_refused_naming_file_and_problem(
    data_path: Path, tmp_path: Path, edit: object, message: str
) -> None:
    bad = _rewrite(data_path, tmp_path, edit)
    with pytest.raises(InvalidInputError, match=message) as raised:
        load_ionosphere(bad)
    assert str(bad) in str(raised.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read data file"):
        load_ionosphere(tmp_path / "nope.csv")


def test_split_is_seeded_stratified_and_disjoint(data_path: Path) -> None:
    dataset = load_ionosphere(data_path)
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
    first = load_ionosphere()
    second = load_ionosphere()
    assert len(calls) == 1 and calls[0]["data_id"] == 59
    assert first.source == str(tmp_path / "lrsweep" / "ionosphere.csv")
    assert first.sha256 == second.sha256 == load_ionosphere(data_path).sha256


def test_failed_fetch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    def offline(**kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.delenv("IONOSPHERE_CSV", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(InvalidInputError, match="fetching ionosphere from OpenML failed"):
        load_ionosphere()
