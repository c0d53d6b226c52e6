"""What Optuna keeps private on its `Study` and `FrozenTrial` objects: a study's storage and id,
and a trial's id in its storage.

A `FrozenTrial` takes its storage id as a public constructor argument (`trial_id=`) but gives it
back only as `_trial_id`; a `Study` holds its storage and id only as `_storage` and `_study_id`.
lrsweep needs them to write trials in bulk and to re-read a study. Checked against Optuna 5.0.0
(pinned in constraints.txt); tests/test_optuna_internals.py fails when any of them changes.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


def trial_id_of(trial: FrozenTrial) -> int:
    """The trial's id in its storage (unlike its number, unique across studies)."""
    return trial._trial_id


def set_trial_id(trial: FrozenTrial, trial_id: int) -> None:
    trial._trial_id = trial_id


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage the study reads and writes (for an RDB, Optuna's cache layer over it)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The study's id in its storage."""
    return study._study_id
