"""scikit-learn's stratified splits, row for row, without importing scikit-learn.

A study's rows are split once, when it is created, by `train_test_split(stratify=...)` (one
validation split) or `StratifiedKFold(shuffle=True)` (folds). Importing scikit-learn for that
costs about 0.55 s on the path of every new sweep; these functions draw the same random numbers
in the same order from the same `RandomState`, so they give the same rows (the pinned
scikit-learn release is the reference: tests/test_data.py compares the two over generated
labels, sizes, fractions and seeds).
"""

from __future__ import annotations

import math

import numpy as np


def shuffle_split_validation(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The sorted held-out rows of `train_test_split(rows, test_size=fraction,
    random_state=seed, stratify=labels)` (StratifiedShuffleSplit's first split)."""
    n_test = math.ceil(fraction * len(labels))
    n_train = len(labels) - n_test
    _, class_of_row, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    rows_by_class = np.split(np.argsort(class_of_row, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, n_train, rng)
    test_counts = _approximate_mode(class_counts - train_counts, n_test, rng)
    held_out: list[int] = []
    for rows, count, n_train_i, n_test_i in zip(
        rows_by_class, class_counts, train_counts, test_counts, strict=True
    ):
        shuffled = rows.take(rng.permutation(count), mode="clip")
        held_out.extend(shuffled[n_train_i : n_train_i + n_test_i])
    return np.sort(np.asarray(held_out, dtype=int))


def kfold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each row under `StratifiedKFold(folds, shuffle=True, random_state=seed)`."""
    rng = np.random.RandomState(seed)
    _, first_row, class_of_row = np.unique(labels, return_index=True, return_inverse=True)
    _, order_of_appearance = np.unique(first_row, return_inverse=True)
    encoded = order_of_appearance[class_of_row]
    n_classes = len(first_row)
    by_class = np.sort(encoded)
    allocation = np.asarray(
        [np.bincount(by_class[i::folds], minlength=n_classes) for i in range(folds)]
    )
    assignment = np.empty(len(labels), dtype="i")
    for k in range(n_classes):
        folds_for_class = np.arange(folds).repeat(allocation[:, k])
        rng.shuffle(folds_for_class)
        assignment[encoded == k] = folds_for_class
    return assignment


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `_approximate_mode`: per-class draws proportional to `counts`, the
    remainder given by largest fractional part, ties broken by `rng`."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            take = min(len(tied), need)
            floored[rng.choice(tied, size=take, replace=False)] += 1
            need -= take
            if need == 0:
                break
    return floored.astype(int)
