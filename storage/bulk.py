"""Batch writes Optuna makes one transaction at a time.

`trial.report` costs a transaction per trial per epoch; a batch of K trials writes its epoch in
one. Rows go into Optuna's own table through Optuna's own model, encoded by the model's own
helper, so the dashboard and Optuna's readers see ordinary intermediate values.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.storages._rdb.models import TrialIntermediateValueModel
from sqlalchemy import insert


def insert_intermediate_values(
    storage: optuna.storages.RDBStorage, rows: Sequence[tuple[int, int, float]]
) -> None:
    """Store (trial_id, step, value) rows in one transaction."""
    if not rows:
        return
    records = []
    for trial_id, step, value in rows:
        stored, kind = TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        records.append(
            {
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    with storage.engine.begin() as connection:
        connection.execute(insert(TrialIntermediateValueModel.__table__), records)
