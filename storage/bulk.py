"""Batch writes that Optuna makes one transaction (and several queries) per trial per call.

A batch of K trials is claimed in one transaction, stores the K validation accuracies of one or
more epochs (with any pruner marks, and the final state of every trial that ended in them) in
one, and beats in one statement. Rows are written into Optuna's own tables through Optuna's own
table definitions and value encoders (`lrsweep.storage.optuna_rdb`), and timestamps as Optuna's
RDB storage writes them (naive UTC), so what lands there is what Optuna itself would write;
tests read it back through Optuna (the schema is pinned by the Optuna release in
constraints.txt).

Epoch writes are idempotent: a retry after a commit whose acknowledgement was lost inserts no
row twice and reports the same trials finished.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import optuna
from optuna.distributions import distribution_to_json
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, Table, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from lrsweep.storage.optuna_objects import set_trial_id
from lrsweep.storage.optuna_rdb import (
    HEARTBEATS,
    INTERMEDIATE_VALUES,
    PARAMS,
    SYSTEM_ATTRS,
    TRIALS,
    USER_ATTRS,
    VALUES,
    encode_intermediate_value,
    encode_value,
)
from lrsweep.storage.reads import trials_by_id

CLAIM_KEY = "lrsweep:claim"
"""System attribute naming the claim that started a trial (how a retried claim finds it)."""
EpochValues = Sequence[tuple[int, int, float]]
"""(trial_id, step, validation accuracy) of one epoch."""
SystemAttrs = Sequence[tuple[int, str, Any]]
"""(trial_id, key, value) system attributes, such as the pruner's rung marks."""


def utc_now() -> datetime:
    """Now as Optuna's RDB storage stores it: naive UTC (FrozenTrials hold naive local time)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Finished:
    """How one trial ended: its final state, value (None for none) and user attributes."""

    trial_id: int
    state: TrialState
    value: float | None
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochWrite:
    """What an epoch write did.

    Args:
        finished: ids of trials it was asked to finish that are now in that final state.
        lost: ids of the batch's trials that were failed meanwhile (as stale, by another
            worker or the proxy): nothing is written to them, their copies are queued, so
            their results are not the study's and training them can stop.
    """

    finished: frozenset[int] = frozenset()
    lost: frozenset[int] = frozenset()


def counts(connection: Connection, study_id: int) -> Counter[str]:
    """Trials of a study by state name, in one query."""
    rows = connection.execute(
        select(TRIALS.c.state, func.count())
        .where(TRIALS.c.study_id == study_id)
        .group_by(TRIALS.c.state)
    )
    return Counter({TrialState(state).name: int(n) for state, n in rows})


def claim_trials(
    connection: Connection,
    study_id: int,
    proposals: Sequence[FrozenTrial],
    cap: int | None,
    user_attrs: Mapping[str, Any],
    claim_id: str,
) -> list[FrozenTrial]:
    """Start up to len(proposals) trials in one transaction: the oldest WAITING ones first
    (re-queued copies, baselines), then new ones from `proposals`; with a `cap`, only as many as
    keep finished + running trials within it, and no new trial takes a place a WAITING one is
    owed. Each started trial gets a first heartbeat (Optuna's stale check skips trials that
    never beat, so a worker killed right after claiming would leave them RUNNING forever),
    `user_attrs` (the worker's name) and `claim_id`; a claim retried after its commit landed
    but its answer was lost returns the trials it started instead of starting more.

    `connection` is in the transaction that holds the study's claim lock (`SqlTrialStore.claim`):
    counting and starting must not interleave with another claim.
    """
    started = claimed_by(connection, study_id, claim_id)
    if started:
        new: Sequence[FrozenTrial] = []
        waiting, created = started, []
    else:
        by_state = counts(connection, study_id)
        take = len(proposals)
        if cap is not None:
            finished = by_state["COMPLETE"] + by_state["PRUNED"]
            take = max(0, min(take, cap - finished - by_state["RUNNING"]))
        waiting = list(
            connection.execute(
                select(TRIALS.c.trial_id)
                .where(TRIALS.c.study_id == study_id, TRIALS.c.state == TrialState.WAITING)
                .order_by(TRIALS.c.trial_id)
                .limit(take)
            ).scalars()
        )
        now = utc_now()
        if waiting:
            connection.execute(
                update(TRIALS)
                .where(TRIALS.c.trial_id.in_(waiting))
                .values(state=TrialState.RUNNING, datetime_start=now)
            )
        new = proposals[: take - len(waiting)]
        created = _insert_trials(connection, study_id, new, now)
        started = [*waiting, *created]
        marks = {CLAIM_KEY: claim_id}
        _upsert_attrs(
            connection, USER_ATTRS, [(i, k, v) for i in started for k, v in user_attrs.items()]
        )
        _upsert_attrs(
            connection, SYSTEM_ATTRS, [(i, k, v) for i in started for k, v in marks.items()]
        )
        _insert_ignoring_duplicates(
            connection, HEARTBEATS, [{"trial_id": i} for i in started], ("trial_id",)
        )
    numbers = _numbers(connection, created)
    popped = list(trials_by_id(connection, waiting, user_attrs=True))  # few: copies, baselines
    return popped + [
        _started(template, trial_id, numbers[trial_id], user_attrs, {CLAIM_KEY: claim_id})
        for template, trial_id in zip(new, created, strict=True)
    ]


def claimed_by(connection: Connection, study_id: int, claim_id: str) -> list[int]:
    """Ids of the study's RUNNING trials that claim `claim_id` started."""
    return list(
        connection.execute(
            select(TRIALS.c.trial_id)
            .join(SYSTEM_ATTRS, SYSTEM_ATTRS.c.trial_id == TRIALS.c.trial_id)
            .where(
                TRIALS.c.study_id == study_id,
                TRIALS.c.state == TrialState.RUNNING,
                SYSTEM_ATTRS.c.key == CLAIM_KEY,
                SYSTEM_ATTRS.c.value_json == json.dumps(claim_id),
            )
            .order_by(TRIALS.c.trial_id)
        ).scalars()
    )


def enqueue_trials(
    connection: Connection, study_id: int, templates: Sequence[FrozenTrial]
) -> dict[int, int]:
    """Add WAITING trials with fixed parameters; returns their numbers by id. `connection` is in
    the transaction that holds the claim lock, so numbers never collide with a claim's."""
    created = _insert_trials(connection, study_id, templates, None, state=TrialState.WAITING)
    return _numbers(connection, created)


def _numbers(connection: Connection, trial_ids: Sequence[int]) -> dict[int, int]:
    """Trial numbers by id."""
    if not trial_ids:
        return {}
    rows = select(TRIALS.c.trial_id, TRIALS.c.number).where(TRIALS.c.trial_id.in_(trial_ids))
    return {int(trial_id): int(number) for trial_id, number in connection.execute(rows)}


def _insert_trials(
    connection: Connection,
    study_id: int,
    templates: Sequence[FrozenTrial],
    started: datetime | None,
    state: TrialState = TrialState.RUNNING,
) -> list[int]:
    """Insert trials with their params and attributes. Numbers follow Optuna's rule (how many
    trials of the study have a smaller id). Optuna also checks each parameter's distribution
    against earlier trials; lrsweep fixes the search space per study, so that cannot fail."""
    if not templates:
        return []
    rows = connection.execute(
        insert(TRIALS).returning(TRIALS.c.trial_id, sort_by_parameter_order=True),
        [{"study_id": study_id, "state": state, "datetime_start": started}] * len(templates),
    )
    trial_ids = [int(trial_id) for (trial_id,) in rows]
    earlier = TRIALS.alias("earlier")
    past = (
        select(func.count())
        .where(earlier.c.study_id == TRIALS.c.study_id)
        .where(earlier.c.trial_id < TRIALS.c.trial_id)
        .scalar_subquery()
    )
    connection.execute(update(TRIALS).where(TRIALS.c.trial_id.in_(trial_ids)).values(number=past))
    params = [
        {
            "trial_id": trial_id,
            "param_name": name,
            "param_value": template.distributions[name].to_internal_repr(value),
            "distribution_json": distribution_to_json(template.distributions[name]),
        }
        for trial_id, template in zip(trial_ids, templates, strict=True)
        for name, value in template.params.items()
    ]
    if params:
        connection.execute(insert(PARAMS), params)
    for table, attribute in ((USER_ATTRS, "user_attrs"), (SYSTEM_ATTRS, "system_attrs")):
        _upsert_attrs(
            connection,
            table,
            [
                (trial_id, key, value)
                for trial_id, template in zip(trial_ids, templates, strict=True)
                for key, value in getattr(template, attribute).items()
            ],
        )
    return trial_ids


def write_epoch(
    storage: optuna.storages.RDBStorage,
    values: EpochValues,
    system_attrs: SystemAttrs = (),
    finished: Sequence[Finished] = (),
) -> EpochWrite:
    """Store epochs of a batch in one transaction: (trial_id, step, value) intermediate
    values, (trial_id, key, value) system attributes, and the final state of each trial in
    `finished`. Only trials still RUNNING are written to; see `EpochWrite` for the rest.

    The transaction first records the batch's heartbeat (an epoch is a sign of life), which
    takes SQLite's write lock, and reads the trials' states FOR UPDATE on PostgreSQL: no stale
    check can fail a trial between reading its state and finishing it.
    """
    ids = {trial_id for trial_id, _, _ in values} | {o.trial_id for o in finished}
    ids |= {trial_id for trial_id, _, _ in system_attrs}
    if not ids:
        return EpochWrite()
    with storage.engine.begin() as connection:
        if not finished and connection.dialect.name == "postgresql":
            # Per-epoch values need not wait for the WAL flush: a server crash can lose the
            # last fraction of a second of them, never corrupt anything; claims and final
            # states stay fully durable.
            connection.execute(text("SET LOCAL synchronous_commit TO OFF"))
        _beat(connection, ids)
        states = dict(
            connection.execute(
                select(TRIALS.c.trial_id, TRIALS.c.state)
                .where(TRIALS.c.trial_id.in_(ids))
                .with_for_update()
            ).all()
        )
        running = {i for i, state in states.items() if state == TrialState.RUNNING}
        records = []
        for trial_id, step, value in values:
            if trial_id in running:
                stored, kind = encode_intermediate_value(value)
                records.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": stored,
                        "intermediate_value_type": kind,
                    }
                )
        _insert_ignoring_duplicates(connection, INTERMEDIATE_VALUES, records, ("trial_id", "step"))
        _upsert_attrs(connection, SYSTEM_ATTRS, [a for a in system_attrs if a[0] in running])
        _finish(connection, [o for o in finished if o.trial_id in running])
    asked = {o.trial_id: o.state for o in finished}
    done = {i for i, state in asked.items() if i in running or states.get(i) == state}
    return EpochWrite(frozenset(done), frozenset(ids - running - done))


def _finish(connection: Connection, finishing: Sequence[Finished]) -> None:
    """Final states, values and user attributes of RUNNING trials."""
    if not finishing:
        return
    connection.execute(
        update(TRIALS)
        .where(TRIALS.c.trial_id == bindparam("id"))
        .where(TRIALS.c.state == TrialState.RUNNING)
        .values(state=bindparam("new_state"), datetime_complete=utc_now()),
        [{"id": o.trial_id, "new_state": o.state} for o in finishing],
    )
    values = []
    for outcome in finishing:
        if outcome.value is not None:
            stored, kind = encode_value(outcome.value)
            values.append(
                {"trial_id": outcome.trial_id, "objective": 0, "value": stored, "value_type": kind}
            )
    if values:
        connection.execute(insert(VALUES), values)
    _upsert_attrs(
        connection,
        USER_ATTRS,
        [(o.trial_id, key, value) for o in finishing for key, value in o.user_attrs.items()],
    )


def fail_if_running(
    connection: Connection, trial_ids: Sequence[int], *, silent_for_s: float | None = None
) -> list[int]:
    """Fail those of `trial_ids` still RUNNING, in one statement, and return them: a worker that
    finished one a moment ago keeps its result (Optuna's own check reads, then overwrites, and on
    SQLite the read is outside the write's transaction). With `silent_for_s`, only those whose
    last heartbeat is older than that by the database's clock: a slow worker that beat since
    its trials were listed as stale keeps them."""
    if not trial_ids:
        return []
    condition = [TRIALS.c.trial_id.in_(trial_ids), TRIALS.c.state == TrialState.RUNNING]
    if silent_for_s is not None:
        now = connection.execute(select(func.now())).scalar_one().replace(tzinfo=None)
        last_beat = select(HEARTBEATS.c.heartbeat).where(
            HEARTBEATS.c.trial_id == TRIALS.c.trial_id
        )
        condition.append(last_beat.scalar_subquery() < now - timedelta(seconds=silent_for_s))
    failed = connection.execute(
        update(TRIALS)
        .where(*condition)
        .values(state=TrialState.FAIL, datetime_complete=utc_now())
        .returning(TRIALS.c.trial_id)
    )
    return sorted(int(trial_id) for (trial_id,) in failed)


def record_heartbeats(storage: optuna.storages.RDBStorage, trial_ids: Sequence[int]) -> None:
    """One statement for a whole batch, with the database's clock as Optuna's own
    `record_heartbeat` uses (every claimed trial has a heartbeat row from its claim)."""
    if trial_ids:
        with storage.engine.begin() as connection:
            _beat(connection, trial_ids)


def _beat(connection: Connection, trial_ids: Iterable[int]) -> None:
    connection.execute(
        update(HEARTBEATS)
        .where(HEARTBEATS.c.trial_id.in_(list(trial_ids)))
        .values(heartbeat=func.now())
    )


def annotate_trial(connection: Connection, trial_id: int, user_attrs: Mapping[str, Any]) -> None:
    """Set user attributes on a trial in any state (Optuna refuses once it has finished):
    how lrsweep records why a trial failed and which trial re-runs it."""
    _upsert_attrs(connection, USER_ATTRS, [(trial_id, k, v) for k, v in user_attrs.items()])


def _started(
    template: FrozenTrial,
    trial_id: int,
    number: int,
    user_attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any],
) -> FrozenTrial:
    """`template` as the RUNNING trial it became, without reading it back (times in naive local
    time, as Optuna's FrozenTrials hold them)."""
    trial = copy.deepcopy(template)
    trial.number, trial.datetime_start = number, datetime.now()
    set_trial_id(trial, trial_id)
    trial.user_attrs.update(user_attrs)
    trial.system_attrs.update(system_attrs)
    return trial


def _upsert_attrs(
    connection: Connection, table: Table, attrs: Sequence[tuple[int, str, Any]]
) -> None:
    """Set (trial_id, key, value) attributes, replacing any value a key already has."""
    rows = {(trial_id, key): json.dumps(value) for trial_id, key, value in attrs}
    if rows:
        statement = _dialect(connection).insert(table)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["trial_id", "key"],
                set_={"value_json": statement.excluded.value_json},
            ),
            [{"trial_id": t, "key": k, "value_json": value} for (t, k), value in rows.items()],
        )


def _insert_ignoring_duplicates(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect at hand."""
    if not rows:
        return
    statement = _dialect(connection).insert(table)
    connection.execute(statement.on_conflict_do_nothing(index_elements=list(keys)), list(rows))


def _dialect(connection: Connection) -> Any:
    """The dialect module whose `insert` has ON CONFLICT clauses (the two lrsweep supports)."""
    return postgresql if connection.dialect.name == "postgresql" else sqlite
