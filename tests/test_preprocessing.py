"""Preprocessing as part of the recipe (issue 23): columns dropped, text one-hot encoded,
numeric features standardized on each split's training rows, recorded in the study and the
export, and rebuilt for the user's own code by scikit-learn."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_refused, opened_storage, refused_with_imports, run_sweeps
from lrsweep.sweeps.study.open import fold_tensors
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer import Tensors, preprocessing_pipeline, stratified_split
from lrsweep.trainer.config import load_export
from lrsweep.trainer.data import DataSource, load_dataset, read_raw
from lrsweep.trainer.preprocessing import AUTO, Preprocessing

PREPROCESS = ("--drop-columns", "patient_id", "--categorical", "auto", "--standardize")


@pytest.fixture(scope="module")
def patients(sklearn_csv: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Breast cancer as a hospital would export it: an id column first and the tumour size as
    text (binned from the real mean radius)."""
    frame = pd.read_csv(sklearn_csv("breast_cancer"))
    frame.insert(0, "patient_id", np.arange(len(frame)) + 1000)
    sizes = pd.cut(frame["mean radius"], 3, labels=["small", "medium", "large"])
    frame.insert(3, "size", sizes.astype(str))
    path = tmp_path_factory.mktemp("patients") / "patients.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_text_column_is_refused_naming_the_flags_that_take_it(
    patients: Path, tmp_path: Path
) -> None:
    result = run_sweeps("run", "--data", str(patients), "--trials", "2", cwd=tmp_path)
    assert_refused(
        result,
        "column 'size': feature 'medium' is not a finite number (a text column: --categorical "
        "auto one-hot encodes it, --drop-columns size leaves it out)",
    )
    assert not (tmp_path / "lrsweep.db").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--drop-columns", "patient"), "has no column 'patient' (did you mean 'patient_id'?)"),
        (("--drop-columns", "target"), "has its label column target in --drop-columns"),
        (("--categorical", "size,sise"), "has no column 'sise' (did you mean 'size'?)"),
        (
            ("--categorical", "size", "--drop-columns", "size"),
            "column size is in both --drop-columns and --categorical",
        ),
    ],
)
def test_preprocessing_flags_naming_wrong_columns_are_refused(
    patients: Path, tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    result = run_sweeps("run", "--data", str(patients), *flags, "--trials", "2", cwd=tmp_path)
    assert_refused(result, message)
    assert not (tmp_path / "lrsweep.db").exists()


def test_standardized_digits_learn_where_raw_ones_sat_at_chance(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    """The tutorial's baselines (lr 0.1, momentum 0.8/0.9) on digits' raw 0-16 pixels end at
    chance; the same trials on standardized pixels learn."""
    accuracies = {}
    for name, flags in (("raw", ()), ("standardized", ("--standardize",))):
        storage = tmp_path / f"{name}.db"
        worker = run_sweeps(
            "worker", "--study", name, "--storage", str(storage), "--data",
            str(sklearn_csv("digits")), *flags, "--trials", "3", "--epochs", "3", "--folds",
            "1", "--baselines", "--quiet", cwd=tmp_path,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        with opened_storage(f"sqlite:///{storage}") as opened:
            trials = optuna.load_study(study_name=name, storage=opened).trials
        baselines = [t for t in trials if t.params.get("momentum") in (0.8, 0.9)]
        assert len(baselines) >= 2
        accuracies[name] = [t.user_attrs["validation_accuracy"] for t in baselines]
        at_chance = [bool(t.user_attrs.get("at_chance")) for t in baselines]
        assert all(at_chance) if name == "raw" else not any(at_chance)
    assert max(accuracies["raw"]) < 0.2 < 0.9 < min(accuracies["standardized"])


def test_the_study_and_export_record_it_and_scikit_learn_rebuilds_it(
    patients: Path, tmp_path: Path
) -> None:
    """A sweep with every step: each fold trained on features standardized with its own
    training rows; the export's pipeline, fitted as the user would, gives the same features;
    `sweeps train` applies it to a test file with no flag; a joining worker takes it, and one
    asking for another is refused."""
    run = run_sweeps(
        "run", "--data", str(patients), *PREPROCESS, "--trials", "4", "--epochs", "3",
        "--folds", "3", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    exported = load_export(tmp_path / "best.json")
    assert exported.schema is not None
    steps = exported.schema.preprocessing
    assert steps.drop_columns == ("patient_id",) and steps.standardize
    assert steps.categories == (("size", ("large", "medium", "small")),)
    document = json.loads((tmp_path / "best.json").read_text())
    assert "preprocessing_pipeline" in document["data"]["preprocessing"]["rebuild"]

    frame = read_raw(patients, exported.schema)  # as the user's code reads it
    with opened_storage(f"sqlite:///{tmp_path / 'lrsweep.db'}") as storage:
        study = optuna.load_study(study_name="lrsweep", storage=storage)
        study_settings = StudySettings.of_study(study)
    dataset = study_settings.load_data(DataSource(str(patients)))
    folds = fold_tensors(study_settings, dataset, "cpu")
    assert len(folds) == 3
    for validation, tensors in zip(study_settings.fold_rows, folds, strict=True):
        training = np.setdiff1d(np.arange(len(frame)), validation)
        pipeline = preprocessing_pipeline(exported.schema).fit(frame.iloc[training])
        expected = pipeline.transform(frame.iloc[list(validation)])
        np.testing.assert_allclose(tensors.x_val.numpy(), expected, atol=2e-5)
        np.testing.assert_allclose(
            tensors.x_train.numpy(), pipeline.transform(frame.iloc[training]), atol=2e-5
        )
        assert abs(tensors.x_val.numpy()[:, 0].mean()) > 1e-4  # not fitted on these rows

    test_csv = tmp_path / "test.csv"
    test = frame.sample(60, random_state=1).assign(
        size=lambda f: f["size"].mask(f.index % 7 == 0, "huge")
    )
    unseen = np.asarray(test.index % 7 == 0)
    test.drop(columns="patient_id").to_csv(test_csv, index=False)  # no id: none needed
    test = read_raw(test_csv, exported.schema)
    trained = run_sweeps(
        "train", "--config", "best.json", "--test-csv", str(test_csv), cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["mean_accuracy"] > 0.9
    raw = run_sweeps(  # one flag changes one step: the columns stay dropped and encoded
        "train", "--config", "best.json", "--test-csv", str(test_csv), "--no-standardize",
        "--seeds", "1", cwd=tmp_path,
    )  # fmt: skip
    assert raw.returncode == 0, raw.stderr
    train_set = DataSource(str(patients)).as_recorded(exported.schema).load()
    scored = DataSource.scored_with(str(test_csv), exported.schema).load()
    import torch

    tensors = Tensors.from_arrays(
        train_set, scored.aligned_to(exported.schema), torch.device("cpu")
    )
    pipeline = preprocessing_pipeline(exported.schema).fit(frame)
    np.testing.assert_allclose(tensors.x_val.numpy(), pipeline.transform(test), atol=2e-5)
    assert (tensors.x_val.numpy()[unseen, -3:] == 0).all()  # an unseen size

    joined = run_sweeps(
        "worker", "--study", "lrsweep", "--data", str(patients), "--trials", "6", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    by_position = run_sweeps(  # the same column, named another way
        "worker", "--study", "lrsweep", "--data", str(patients), "--drop-columns", "0",
        "--trials", "7", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert by_position.returncode == 0, by_position.stderr
    typo = run_sweeps(
        "worker", "--study", "lrsweep", "--data", str(patients), "--drop-columns",
        "patient_ix", "--trials", "8", cwd=tmp_path,
    )  # fmt: skip
    assert_refused(typo, "has no column 'patient_ix' (did you mean 'patient_id'?)")
    other = run_sweeps(
        "worker", "--study", "lrsweep", "--data", str(patients), "--drop-columns",
        "patient_id", "--categorical", "auto", "--no-standardize", "--trials", "8",
        cwd=tmp_path,
    )  # fmt: skip
    assert_refused(
        other,
        "this study preprocesses its data as drop patient_id; one-hot size (3); standardize; "
        "asked for drop patient_id; one-hot size (3)",
    )


def test_a_column_named_twice_is_encoded_once(patients: Path) -> None:
    twice = load_dataset(patients, preprocessing=Preprocessing(categorical=("size", "3", "size")))
    once = load_dataset(patients, preprocessing=Preprocessing(categorical=("size",)))
    assert twice.schema == once.schema
    np.testing.assert_array_equal(twice.features, once.features)


numbers = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def tables(draw: st.DrawFn) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """A table with an id, numeric columns (one may be constant), category columns (text,
    numbers, missing-value marks, empty cells) and a label of two or three classes with 2+
    rows each; and the category columns' names."""
    rows = draw(st.integers(12, 40))
    classes = draw(st.integers(2, 3))
    labels = [f"c{k % classes}" for k in range(rows)]
    frame = pd.DataFrame({"id": range(rows)})
    for k in range(draw(st.integers(1, 4))):
        values = draw(st.lists(numbers, min_size=rows, max_size=rows))
        frame[f"x{k}"] = values if draw(st.booleans()) or k else [values[0]] * rows
    text = tuple(f"t{k}" for k in range(draw(st.integers(0, 2))))
    for name in text:
        categories = st.sampled_from(["a", "b", "c d", "NA", "?", "", "10", "7"])
        frame[name] = draw(st.lists(categories, min_size=rows, max_size=rows))
    frame["label"] = draw(st.permutations(labels))
    return frame, text


@settings(max_examples=40, deadline=None)
@given(table=tables(), seed=st.integers(0, 100))
def test_scikit_learns_pipeline_fitted_on_the_training_rows_gives_what_trained(
    table: tuple[pd.DataFrame, tuple[str, ...]],
    seed: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    frame, text = table
    categorical = text  # named: a column of `10`, `7` and `NA` holds no text to detect
    path = tmp_path_factory.mktemp("table") / "table.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(
        path, "label", preprocessing=Preprocessing(("id",), categorical, standardize=True)
    )
    frame = read_raw(path, dataset.schema)  # as the user's code reads it
    assert dataset.schema.preprocessing.categorical == text
    split = stratified_split(dataset, 0.3, seed)
    import torch

    tensors = Tensors.from_arrays(
        dataset.take(split.train), dataset.take(split.validation), torch.device("cpu")
    )
    pipeline = preprocessing_pipeline(dataset.schema).fit(frame.iloc[split.train])
    scale = np.maximum(1.0, np.abs(pipeline.transform(frame)).max())
    np.testing.assert_allclose(
        tensors.x_train.numpy(), pipeline.transform(frame.iloc[split.train]), atol=1e-4 * scale
    )
    np.testing.assert_allclose(
        tensors.x_val.numpy(), pipeline.transform(frame.iloc[split.validation]), atol=1e-4 * scale
    )


def test_standardizing_only_one_hot_features_leaves_them_as_they_are(tmp_path: Path) -> None:
    import torch

    frame = pd.DataFrame({"colour": ["red", "blue", "green"] * 6, "label": ["a", "b"] * 9})
    frame.to_csv(tmp_path / "t.csv", index=False)
    dataset = load_dataset(
        tmp_path / "t.csv", preprocessing=Preprocessing(categorical=AUTO, standardize=True)
    )
    assert dataset.schema.n_numeric == 0
    split = stratified_split(dataset, 0.3, 0)
    tensors = Tensors.from_arrays(
        dataset.take(split.train), dataset.take(split.validation), torch.device("cpu")
    )
    np.testing.assert_array_equal(tensors.x_train.numpy(), dataset.features[split.train])


@pytest.mark.slow
def test_auto_encodes_text_not_gaps_and_refuses_an_id_like_column(tmp_path: Path) -> None:
    rows = 120
    frame = pd.DataFrame(
        {
            "dose": [str(k % 7) if k % 11 else "NA" for k in range(rows)],
            "ward": ["east", "west", "north"] * (rows // 3),
            "label": ["yes", "no"] * (rows // 2),
        }
    )
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    result = run_sweeps(
        "run", "--data", "gaps.csv", "--categorical", "auto", "--trials", "1", cwd=tmp_path
    )
    assert_refused(result, "line 2 column 'dose': feature 'NA' is not a finite number")
    frame.assign(name=[f"patient {k}" for k in range(rows)]).to_csv(
        tmp_path / "ids.csv", index=False
    )
    named = run_sweeps(
        "run", "--data", "ids.csv", "--label-column", "label", "--drop-columns", "dose",
        "--categorical", "auto", "--trials", "1", cwd=tmp_path,
    )  # fmt: skip
    assert_refused(
        named,
        "column name holds text with 120 distinct values in 120 rows, like an id or free text: "
        "--drop-columns name, or name it in --categorical to encode it anyway",
    )
    assert not (tmp_path / "lrsweep.db").exists()


@pytest.mark.slow
def test_a_file_without_a_header_is_read_again_as_recorded(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    """Columns named by position (`--drop-columns 0`): a joining worker and `sweeps train`
    read the file again with no flag, and the export's pipeline rebuilds the features."""
    frame = pd.read_csv(sklearn_csv("wine"))
    frame.insert(0, "id", range(len(frame)))
    frame.insert(2, "grade", np.where(frame["alcohol"] > 13, "high", "low"))
    bare = tmp_path / "bare.csv"
    frame.to_csv(bare, index=False, header=False)
    label = str(frame.shape[1] - 1)
    run = run_sweeps(
        "run", "--data", str(bare), "--label-column", label, "--drop-columns", "0",
        "--categorical", "2", "--standardize", "--trials", "3", "--epochs", "2", "--folds", "1",
        "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    exported = load_export(tmp_path / "best.json")
    assert exported.schema is not None
    steps = exported.schema.preprocessing
    assert (steps.drop_columns, steps.categories) == (("0",), (("2", ("high", "low")),))
    assert exported.schema.feature_names[-2:] == ("column 3=high", "column 3=low")
    joined = run_sweeps(
        "worker", "--study", "lrsweep", "--data", str(bare), "--trials", "4", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    trained = run_sweeps("train", "--config", "best.json", "--seeds", "1", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    dataset = DataSource(str(bare)).as_recorded(exported.schema).load()
    rebuilt = preprocessing_pipeline(exported.schema).fit_transform(
        read_raw(bare, exported.schema)
    )
    scale = np.abs(dataset.features).max()
    import torch

    whole = Tensors.from_arrays(dataset, dataset, torch.device("cpu"))
    np.testing.assert_allclose(whole.x_train.numpy(), rebuilt, atol=1e-5 * max(1.0, scale))


def test_a_data_typo_is_refused_before_torch_is_imported(patients: Path, tmp_path: Path) -> None:
    lines, imported = refused_with_imports(
        "run", "--data", str(patients), "--drop-columns", "patient", cwd=tmp_path
    )
    assert lines == [
        f"error: data file {patients} has no column 'patient' (did you mean 'patient_id'?)"
    ]
    assert "torch" not in imported
