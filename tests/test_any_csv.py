"""Any tabular classification CSV: header or not, the label anywhere, two or more classes, on
real data that ships with scikit-learn (wine: 13 features, 3 classes; breast cancer: 30
features, string labels)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_sweeps
from lrsweep.trainer import InvalidInputError, load_dataset


def test_a_header_names_the_features_and_the_label_is_the_last_column(
    sklearn_csv: Callable[[str], Path],
) -> None:
    wine = load_dataset(sklearn_csv("wine"))
    assert wine.features.shape == (178, 13)
    assert wine.schema.feature_names[:2] == ("alcohol", "malic_acid")
    assert wine.schema.classes == ("0", "1", "2") and wine.schema.n_outputs == 3
    assert wine.schema.label_column == "target"
    assert np.bincount(wine.labels.astype(int)).tolist() == [59, 71, 48]
    assert load_dataset(sklearn_csv("wine"), "target").sha256 == wine.sha256
    assert load_dataset(sklearn_csv("wine"), "-1").sha256 == wine.sha256


def test_string_labels_sort_into_classes_and_two_classes_keep_one_logit(
    sklearn_csv: Callable[[str], Path],
) -> None:
    cancer = load_dataset(sklearn_csv("breast_cancer"))
    assert cancer.features.shape == (569, 30)
    assert cancer.schema.classes == ("benign", "malignant") and cancer.schema.n_outputs == 1
    assert int(cancer.labels.sum()) == 212  # malignant, the positive (second) class


def test_the_label_column_can_stand_anywhere_with_or_without_a_header(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    wine = load_dataset(sklearn_csv("wine"))
    frame = pd.read_csv(sklearn_csv("wine"))
    moved = frame[["target", *frame.columns[:-1]]]
    moved.to_csv(tmp_path / "first.csv", index=False)
    moved.to_csv(tmp_path / "bare.csv", index=False, header=False)
    by_name = load_dataset(tmp_path / "first.csv", "target")
    by_position = load_dataset(tmp_path / "bare.csv", "0")
    for loaded in (by_name, by_position):
        assert loaded.sha256 == wine.sha256
    assert by_position.schema.label_column == "0"
    assert by_position.schema.feature_names[0] == "column 2"


@pytest.mark.parametrize(
    ("label_column", "headed", "message"),
    [
        ("nope", True, "has no column 'nope' \\(its header: alcohol, malic_acid"),
        ("Target", True, "has no column 'Target' \\(did you mean 'target'\\?\\)"),
        ("magnesum", True, "did you mean 'magnesium'\\?"),
        ("target", False, "has no header row; give --label-column as a 0-based position"),
        ("14", True, "has 14 columns; --label-column 14 is outside them"),
        ("-15", False, "has 14 columns; --label-column -15 is outside them"),
    ],
)
def test_a_label_column_that_is_not_there_is_refused(
    sklearn_csv: Callable[[str], Path],
    tmp_path: Path,
    label_column: str,
    headed: bool,
    message: str,
) -> None:
    path = tmp_path / "wine.csv"
    pd.read_csv(sklearn_csv("wine")).to_csv(path, index=False, header=headed)
    with pytest.raises(InvalidInputError, match=message) as raised:
        load_dataset(path, label_column)
    assert str(path) in str(raised.value)


def test_a_bad_cell_is_named_by_its_line_and_header_name(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    frame = pd.read_csv(sklearn_csv("wine")).astype(object)
    frame.loc[6, "magnesium"] = "12,5"  # a decimal comma: quoted in the CSV, one cell
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InvalidInputError, match="line 8 column 'magnesium': feature '12,5'"):
        load_dataset(tmp_path / "bad.csv")


@pytest.mark.slow
def test_wine_sweeps_exports_and_retrains_as_three_classes(
    sklearn_csv: Callable[[str], Path], data_path: Path, tmp_path: Path
) -> None:
    wine = str(sklearn_csv("wine"))
    result = run_sweeps(
        *("run", "--data", wine, "--label-column", "target", "--trials", "16"),
        *("--epochs", "8", "--workers", "1", "--quiet", "--top", "2", "--seeds", "2"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    assert document["data"]["classes"] == ["0", "1", "2"]
    assert document["data"]["label_column"] == "target"
    assert len(document["data"]["feature_names"]) == 13

    # The export carries the label column: `train` reads the CSV as the sweep did.
    retrained = run_sweeps(
        *("train", "--config", "best.json", "--data", wine, "--seeds", "2"), cwd=tmp_path
    )
    assert retrained.returncode == 0, retrained.stderr
    report = json.loads(retrained.stdout)
    assert report["test_rows"] == 54  # the 30% stratified split of 178 rows
    assert all(run["accuracy"] is not None for run in report["per_seed"])

    # Workers joining with other data are refused, one line each, nothing written.
    ionosphere = run_sweeps(
        *("worker", "--study", "lrsweep", "--data", str(data_path), "--trials", "20"),
        cwd=tmp_path,
    )
    assert ionosphere.returncode == 2
    assert ionosphere.stderr.strip().splitlines() == [
        f"error: data file {data_path} header names column '1' twice (reading it as this "
        "study does: label column 'target', first row a header)"
    ]
    cancer = str(sklearn_csv("breast_cancer"))
    other = run_sweeps(
        *("worker", "--study", "lrsweep", "--data", cancer, "--trials", "20"), cwd=tmp_path
    )
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"error: data file {cancer} differs from the data this study was created with "
        f"(sha256 of values {load_dataset(cancer).sha256[:12]} != "
        f"{load_dataset(wine).sha256[:12]}; the study's has 13 features and classes 0, 1, 2)"
    ]
    assert json.loads(_status(tmp_path))["trials"] == 16


def test_a_test_file_with_a_class_the_model_never_saw_is_refused(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    frame = pd.read_csv(sklearn_csv("wine"))
    frame.loc[3, "target"] = 7
    frame.to_csv(tmp_path / "test.csv", index=False)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "format": "lrsweep.train-config",
                "version": 1,
                "scheduler": {"kind": "constant", "kwargs": {}},
                "optimizer": {"lr": 0.01},
                "training": {"epochs": 2},
            }
        )
    )
    result = run_sweeps(
        *("train", "--config", str(config), "--data", str(sklearn_csv("wine"))),
        *("--test-csv", str(tmp_path / "test.csv")),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "line 5 column 'target': label '7' is not one of the classes the model was" in (
        result.stderr
    )


def _status(folder: Path) -> str:
    return run_sweeps("status", "--study", "lrsweep", "--json", cwd=folder).stdout


def test_a_worker_joining_without_label_column_reads_the_file_as_the_study_does(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    frame = pd.read_csv(sklearn_csv("wine"))
    first = tmp_path / "first.csv"
    frame[["target", *frame.columns[:-1]]].to_csv(first, index=False)
    common = ("--study", "w", "--epochs", "3", "--folds", "1", "--quiet")
    created = run_sweeps(
        "worker", *common, "--data", str(first), "--label-column", "target", "--trials", "4",
        cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    joined = run_sweeps("worker", *common, "--data", str(first), "--trials", "8", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    summary = run_sweeps("status", "--study", "w", cwd=tmp_path).stdout
    assert "8 trials" in summary
    assert (
        "data: 13 features, classes 0, 1, 2 (label column 'target'; preprocessing none)" in summary
    )


@pytest.mark.slow
def test_renamed_classes_are_other_data(data_path: Path, tmp_path: Path) -> None:
    """Same values, other class names: the digest alone would not tell; the schema does."""
    renamed = tmp_path / "renamed.csv"
    names = {"g": "good", "b": "bad"}
    lines = [line.rsplit(",", 1) for line in data_path.read_text().splitlines()]
    renamed.write_text("\n".join(f"{row},{names[label]}" for row, label in lines) + "\n")
    common = ("--study", "r", "--epochs", "2", "--folds", "1", "--quiet", "--trials", "2")
    assert run_sweeps("worker", *common, "--data", str(data_path), cwd=tmp_path).returncode == 0
    refused = run_sweeps("worker", *common, "--data", str(renamed), cwd=tmp_path)
    assert refused.returncode == 2
    assert "classes b, g" in refused.stderr and "Traceback" not in refused.stderr


def test_a_header_with_an_empty_name_is_refused(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    pd.read_csv(sklearn_csv("wine")).to_csv(tmp_path / "indexed.csv")  # pandas' row index too
    with pytest.raises(InvalidInputError, match="header has an empty name for column 1"):
        load_dataset(tmp_path / "indexed.csv")


def _ionosphere_frame(data_path: Path) -> pd.DataFrame:
    return pd.read_csv(data_path, header=None)


def test_text_labels_are_never_taken_for_a_feature(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(500, 4)), columns=["a", "b", "c", "d"])
    frame["letter"] = [chr(ord("A") + i % 26) for i in range(500)]  # 26 classes in 500 rows
    frame.to_csv(tmp_path / "letters.csv", index=False)
    assert len(load_dataset(tmp_path / "letters.csv").schema.classes) == 26


def test_a_label_named_column_that_is_not_last_is_not_passed_over(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    frame = pd.read_csv(sklearn_csv("digits"))
    frame[["target", *frame.columns[:-1]]].to_csv(tmp_path / "first.csv", index=False)
    with pytest.raises(InvalidInputError, match="--label-column target looks like one"):
        load_dataset(tmp_path / "first.csv")
    assert load_dataset(tmp_path / "first.csv", "target").schema.classes == tuple("0123456789")


def test_pandas_unnamed_columns_with_a_named_label_are_a_header(
    data_path: Path, tmp_path: Path
) -> None:
    frame = _ionosphere_frame(data_path)
    labels = (frame[34] == "g").astype(int)
    pd.concat([frame.drop(columns=[34]), labels], axis=1).to_csv(tmp_path / "xy.csv", index=False)
    loaded = load_dataset(tmp_path / "xy.csv")  # header 0,1,...,33,0
    assert len(loaded) == 351 and loaded.schema.has_header


@pytest.mark.parametrize(
    ("first_row", "message"),
    [
        ("?,NA,0.5,", "line 1 column 1: feature '?' is not a finite number"),
        ("x1,1,2,", "line 1 column 1: feature 'x1' is not a finite number"),
    ],
)
def test_a_first_row_with_gaps_or_one_name_is_data_refused_with_a_header_hint(
    first_row: str, message: str, data_path: Path, tmp_path: Path
) -> None:
    lines = data_path.read_text().splitlines()
    cells = first_row.split(",")
    edited = ",".join(cells[:3] + lines[0].split(",")[3:])
    (tmp_path / "gaps.csv").write_text("\n".join([edited, *lines[1:]]))
    with pytest.raises(InvalidInputError) as refused:
        load_dataset(tmp_path / "gaps.csv")
    assert message in str(refused.value)
    assert str(refused.value).endswith("(if the first row is a header, say --header yes)")
