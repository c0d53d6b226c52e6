"""Optuna's RDB storage internals that lrsweep's bulk SQL uses: its tables, its encoding of
float values, and its query for heartbeat-stale trials.

lrsweep writes and reads a batch of trials in one transaction (`lrsweep.storage.bulk`,
`lrsweep.storage.reads`), which Optuna's public API cannot, so it needs the very tables and
value encodings Optuna's RDBStorage uses (`optuna.storages._rdb.models`): rows must be what
Optuna itself would write. Its stale-trial sweep fails trials with a conditional UPDATE, so it
needs Optuna's list of stale trials (`RDBStorage._get_stale_trial_ids`) without Optuna's own
failing. Checked against Optuna 5.0.0 (pinned in constraints.txt);
tests/test_optuna_internals.py fails when any of them changes.
"""

from __future__ import annotations

import optuna
from optuna.storages._rdb import models
from sqlalchemy import Table

TRIALS: Table = models.TrialModel.__table__
PARAMS: Table = models.TrialParamModel.__table__
USER_ATTRS: Table = models.TrialUserAttributeModel.__table__
SYSTEM_ATTRS: Table = models.TrialSystemAttributeModel.__table__
INTERMEDIATE_VALUES: Table = models.TrialIntermediateValueModel.__table__
VALUES: Table = models.TrialValueModel.__table__
HEARTBEATS: Table = models.TrialHeartbeatModel.__table__
ValueType = models.TrialValueModel.TrialValueType
IntermediateValueType = models.TrialIntermediateValueModel.TrialIntermediateValueType


def encode_value(value: float) -> tuple[float | None, ValueType]:
    """A trial value as stored: (finite value or None, value type)."""
    return models.TrialValueModel.value_to_stored_repr(value)


def decode_value(stored: float | None, value_type: ValueType) -> float:
    return models.TrialValueModel.stored_repr_to_value(stored, value_type)


def encode_intermediate_value(value: float) -> tuple[float | None, IntermediateValueType]:
    """An intermediate value as stored: (finite value or None, value type, NaN included)."""
    return models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)


def decode_intermediate_value(stored: float | None, value_type: IntermediateValueType) -> float:
    decode = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    return decode(stored, value_type)


def stale_trial_ids(storage: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    """The study's RUNNING trials whose last heartbeat is older than the grace period (trials
    that never beat are not listed); the storage must have a heartbeat interval."""
    return storage._get_stale_trial_ids(study_id)
