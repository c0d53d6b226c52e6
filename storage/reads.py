"""Trials read in bulk with SQLAlchemy Core, for what a worker's sampler and pruner read.

Optuna's `get_trial` and `_get_trials` build every trial through the ORM (one object per
parameter, attribute and intermediate value): about 1.4 ms per 50-epoch trial, which a worker
paid for every trial another worker finished. Here the same rows come from one query per table
and are decoded with Optuna's own decoders (distributions, value types, timestamps stored as
naive UTC and handed out as naive local time); user attributes are left out unless asked for
(neither TPE nor a pruner reads them), and only the first objective's value is read (studies
here have one).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterator
from datetime import datetime, timezone
from typing import Any

from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, Table, select

from lrsweep.storage.optuna_rdb import (
    INTERMEDIATE_VALUES,
    PARAMS,
    SYSTEM_ATTRS,
    TRIALS,
    USER_ATTRS,
    VALUES,
    decode_intermediate_value,
    decode_value,
)

CHUNK = 500  # ids per IN (...) list, well within every database's limit


def trials_by_id(
    connection: Connection, trial_ids: Collection[int], *, user_attrs: bool = False
) -> Iterator[FrozenTrial]:
    """The trials with these ids, in id order, with their user attributes only if asked; read
    CHUNK at a time, so a caller that keeps only part of each trial never holds them all."""
    ordered = sorted(trial_ids)
    for start in range(0, len(ordered), CHUNK):
        yield from _read(connection, ordered[start : start + CHUNK], user_attrs)


def _read(connection: Connection, ids: list[int], with_user_attrs: bool) -> Iterator[FrozenTrial]:
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    distributions: dict[int, dict[str, BaseDistribution]] = defaultdict(dict)
    for trial_id, name, stored, distribution_json in _rows(
        connection, PARAMS, ids, "param_name", "param_value", "distribution_json"
    ):
        distribution = json_to_distribution(distribution_json)
        distributions[trial_id][name] = distribution
        params[trial_id][name] = distribution.to_external_repr(stored)
    values = {
        trial_id: decode_value(value, value_type)
        for trial_id, objective, value, value_type in _rows(
            connection, VALUES, ids, "objective", "value", "value_type"
        )
        if objective == 0
    }
    intermediate: dict[int, dict[int, float]] = defaultdict(dict)
    columns = ("step", "intermediate_value", "intermediate_value_type")
    for trial_id, step, value, value_type in _rows(connection, INTERMEDIATE_VALUES, ids, *columns):
        intermediate[trial_id][step] = decode_intermediate_value(value, value_type)
    system_attrs = _attrs(connection, SYSTEM_ATTRS, ids)
    user_attrs = _attrs(connection, USER_ATTRS, ids) if with_user_attrs else defaultdict(dict)
    rows = connection.execute(
        select(
            TRIALS.c.trial_id,
            TRIALS.c.number,
            TRIALS.c.state,
            TRIALS.c.datetime_start,
            TRIALS.c.datetime_complete,
        )
        .where(TRIALS.c.trial_id.in_(ids))
        .order_by(TRIALS.c.trial_id)
    )
    for trial_id, number, state, started, completed in rows:
        yield FrozenTrial(
            number=number,
            state=TrialState(state),
            value=values.get(trial_id),
            datetime_start=_local(started),
            datetime_complete=_local(completed),
            params=params[trial_id],
            distributions=distributions[trial_id],
            user_attrs=user_attrs[trial_id],
            system_attrs=system_attrs[trial_id],
            intermediate_values=intermediate[trial_id],
            trial_id=trial_id,
        )


def _attrs(connection: Connection, table: Table, ids: list[int]) -> dict[int, dict[str, Any]]:
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    for trial_id, key, value_json in _rows(connection, table, ids, "key", "value_json"):
        attrs[trial_id][key] = json.loads(value_json)
    return attrs


def _rows(connection: Connection, table: Table, ids: list[int], *columns: str) -> Any:
    """The rows of `table` for `ids`, in insertion order (as Optuna's relationships load)."""
    selected = [table.c.trial_id, *(table.c[name] for name in columns)]
    key = table.primary_key.columns.values()[0]
    return connection.execute(
        select(*selected).where(table.c.trial_id.in_(ids)).order_by(table.c.trial_id, key)
    )


def _local(stored: datetime | None) -> datetime | None:
    """Optuna's conversion of a stored naive-UTC timestamp to naive local time."""
    if stored is None:
        return None
    return stored.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)
