"""Batch writes that Optuna makes one transaction (and several queries) per trial per call.

A batch of K trials trained together is created in one transaction, stores each epoch's K
validation accuracies (and any pruner marks) in one, and is finished in one. Rows are written
into Optuna's own tables through Optuna's own table definitions and value encoders, so what
lands there is what Optuna itself would write; tests read it back through Optuna (the schema
is pinned by the Optuna release in constraints.txt).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import bindparam, delete, func, insert, select, text, update


def create_trials(
    storage: optuna.storages.RDBStorage, study_id: int, templates: Sequence[FrozenTrial]
) -> list[FrozenTrial]:
    """Create one RUNNING trial per template (params, user and system attributes, a first
    heartbeat) in one transaction.

    Trial numbers follow Optuna's rule (how many trials of the study have a smaller id), set
    in the same transaction. Optuna also checks each parameter's distribution against earlier
    trials; lrsweep fixes the search space per study, so that check cannot fail here.
    """
    if not templates:
        return []
    trials = models.TrialModel.__table__
    now = datetime.now()
    with storage.engine.begin() as connection:
        rows = connection.execute(
            insert(trials).returning(trials.c.trial_id, sort_by_parameter_order=True),
            [{"study_id": study_id, "state": TrialState.RUNNING, "datetime_start": now}]
            * len(templates),
        )
        trial_ids = [int(trial_id) for (trial_id,) in rows]
        earlier = trials.alias("earlier")
        past = (
            select(func.count())
            .where(earlier.c.study_id == trials.c.study_id)
            .where(earlier.c.trial_id < trials.c.trial_id)
            .scalar_subquery()
        )
        connection.execute(
            update(trials).where(trials.c.trial_id.in_(trial_ids)).values(number=past)
        )
        numbers: dict[int, int] = dict(
            connection.execute(
                select(trials.c.trial_id, trials.c.number).where(trials.c.trial_id.in_(trial_ids))
            ).all()
        )
        params, attrs, system_attrs = [], [], []
        for trial_id, template in zip(trial_ids, templates, strict=True):
            for name, value in template.params.items():
                distribution = template.distributions[name]
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": distribution.to_internal_repr(value),
                        "distribution_json": distribution_to_json(distribution),
                    }
                )
            attrs += [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in template.user_attrs.items()
            ]
            system_attrs += [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in template.system_attrs.items()
            ]
        if params:
            connection.execute(insert(models.TrialParamModel.__table__), params)
        if attrs:
            connection.execute(insert(models.TrialUserAttributeModel.__table__), attrs)
        if system_attrs:
            connection.execute(insert(models.TrialSystemAttributeModel.__table__), system_attrs)
        # A first heartbeat in the same transaction: Optuna's stale check ignores trials that
        # never beat, so a worker killed right after claiming would leave them RUNNING forever.
        connection.execute(
            insert(models.TrialHeartbeatModel.__table__), [{"trial_id": i} for i in trial_ids]
        )
    created = []
    for trial_id, template in zip(trial_ids, templates, strict=True):
        frozen = copy.deepcopy(template)
        frozen.number, frozen.datetime_start, frozen._trial_id = numbers[trial_id], now, trial_id
        created.append(frozen)
    return created


def write_epoch(
    storage: optuna.storages.RDBStorage,
    values: Sequence[tuple[int, int, float]],
    system_attrs: Sequence[tuple[int, str, Any]] = (),
) -> None:
    """Store (trial_id, step, value) intermediate values and (trial_id, key, value) system
    attributes in one transaction."""
    if not values and not system_attrs:
        return
    records = []
    for trial_id, step, value in values:
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        records.append(
            {
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    attrs = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for trial_id, key, value in system_attrs
    ]
    with storage.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Per-epoch values need not wait for the WAL flush: a server crash can lose the
            # last fraction of a second of them, never corrupt anything; trial creation and
            # final results stay fully durable.
            connection.execute(text("SET LOCAL synchronous_commit TO OFF"))
        if records:
            connection.execute(insert(models.TrialIntermediateValueModel.__table__), records)
        if attrs:
            # The pruner writes each rung mark once per trial, so these are always new rows.
            connection.execute(insert(models.TrialSystemAttributeModel.__table__), attrs)


@dataclass(frozen=True)
class Finished:
    """How one trial ended: its final state, value (None for none) and user attributes."""

    trial_id: int
    state: TrialState
    value: float | None
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


def finish_trials(storage: optuna.storages.RDBStorage, outcomes: Sequence[Finished]) -> int:
    """Set final states, values and user attributes of many trials in one transaction.

    Only trials still RUNNING are finished (one failed meanwhile, say as stale by another
    worker, keeps its state); returns how many were.
    """
    trials = models.TrialModel.__table__
    ids = [outcome.trial_id for outcome in outcomes]
    now = datetime.now()
    with storage.engine.begin() as connection:
        running = {
            int(trial_id)
            for (trial_id,) in connection.execute(
                select(trials.c.trial_id)
                .where(trials.c.trial_id.in_(ids))
                .where(trials.c.state == TrialState.RUNNING)
            )
        }
        finishing = [outcome for outcome in outcomes if outcome.trial_id in running]
        if not finishing:
            return 0
        connection.execute(
            update(trials)
            .where(trials.c.trial_id == bindparam("id"))
            .where(trials.c.state == TrialState.RUNNING)
            .values(state=bindparam("new_state"), datetime_complete=now),
            [{"id": o.trial_id, "new_state": o.state} for o in finishing],
        )
        values = []
        for outcome in finishing:
            if outcome.value is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(outcome.value)
                values.append(
                    {
                        "trial_id": outcome.trial_id,
                        "objective": 0,
                        "value": stored,
                        "value_type": kind,
                    }
                )
        if values:
            connection.execute(insert(models.TrialValueModel.__table__), values)
        attrs = [
            {"trial_id": o.trial_id, "key": key, "value_json": json.dumps(value)}
            for o in finishing
            for key, value in o.user_attrs.items()
        ]
        if attrs:
            connection.execute(insert(models.TrialUserAttributeModel.__table__), attrs)
    return len(finishing)


def annotate_trial(
    storage: optuna.storages.RDBStorage, trial_id: int, user_attrs: Mapping[str, Any]
) -> None:
    """Set user attributes on a trial in any state (Optuna refuses once it has finished):
    how lrsweep records why a trial failed and which trial re-runs it."""
    table = models.TrialUserAttributeModel.__table__
    with storage.engine.begin() as connection:
        connection.execute(
            delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(user_attrs)))
        )
        connection.execute(
            insert(table),
            [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in user_attrs.items()
            ],
        )
