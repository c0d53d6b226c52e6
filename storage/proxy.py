"""Workers behind Optuna's gRPC storage proxy, with the same guarantees as over SQL.

Hundreds of workers holding database connections exhaust PostgreSQL; Optuna's gRPC proxy lets
them share one process's pool. Its API has no lock and no heartbeat, so the two things that
make lrsweep's studies exact and self-healing happen in the proxy process (`ProxyBackend`,
served by `sweeps proxy`), on requests the workers mark with reserved system-attribute keys:

- admission: a trial created with `CAP_KEY` is created under the study's claim lock only while
  the study holds fewer trials (finished, running or waiting) than the cap, so the study ends
  with exactly N trials however many workers race;
- heartbeats (`HEARTBEAT_KEY`) are recorded in Optuna's heartbeat table, and the proxy fails
  and re-queues stale trials itself, as workers on SQL do;
- annotations (`ANNOTATE_KEY`) set user attributes on finished trials (why a trial failed,
  which trial re-runs it), which Optuna's API refuses;
- batch writes (`EPOCH_KEY`, `FINISH_KEY`): a batch's epoch results, and its final states,
  travel as one request each (carried by the batch's first trial) and land in one transaction
  (`storage.bulk`), as over SQL, instead of one request and one transaction per trial.

Reserved keys never reach the database as attributes.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

from storage import bulk
from storage.bulk import Finished
from storage.errors import StorageError
from storage.slots import TrialSlots
from storage.trial_store import EpochValues, SystemAttrs, TrialStore

CAP_KEY = "lrsweep:cap"
HEARTBEAT_KEY = "lrsweep:heartbeat"
ANNOTATE_KEY = "lrsweep:annotate"
EPOCH_KEY = "lrsweep:epoch"
FINISH_KEY = "lrsweep:finish"
STUDY_FULL = "lrsweep: the study has reached its trial target"
OCCUPYING = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")
CONNECT_TIMEOUT_S = 10.0


class ProxyClient(optuna.storages.GrpcStorageProxy):
    """Optuna's gRPC client, plus the heartbeat interval its workers beat at."""

    def __init__(self, *, host: str, port: int, heartbeat_interval: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)
        self.heartbeat_interval = heartbeat_interval


def connect_proxy(host: str, port: int, heartbeat_interval: int) -> ProxyClient:
    """A client of a running `sweeps proxy`; a clear StorageError if none answers."""
    client = ProxyClient(host=host, port=port, heartbeat_interval=heartbeat_interval)
    try:
        client.wait_server_ready(timeout=CONNECT_TIMEOUT_S)
    except ConnectionError:
        client.close()
        raise StorageError(
            f"no storage proxy answering at grpc://{host}:{port} (start one with `sweeps proxy`)"
        ) from None
    return client


class ProxiedTrialStore(TrialStore):
    """A worker's trial writes as Optuna storage calls through the proxy."""

    def __init__(self, client: ProxyClient, study_name: str) -> None:
        self._client = client
        self.study_id = client.get_study_id_from_name(study_name)

    def exclusive(self) -> AbstractContextManager[None]:
        return nullcontext()  # the proxy admits each trial under the lock (CAP_KEY)

    def counts(self) -> Counter[str]:
        trials = self._client.get_all_trials(self.study_id, deepcopy=False)
        return Counter(trial.state.name for trial in trials)

    def finished_trial_ids(self) -> set[int]:
        finished = self._client.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )
        return {trial._trial_id for trial in finished}

    def create_trials(
        self, templates: Sequence[FrozenTrial], cap: int | None
    ) -> list[FrozenTrial]:
        created = []
        for template in templates:
            request = optuna.trial.create_trial(
                state=TrialState.RUNNING,
                params=template.params,
                distributions=template.distributions,
                user_attrs=template.user_attrs,
                system_attrs={**template.system_attrs, **({} if cap is None else {CAP_KEY: cap})},
            )
            try:
                trial_id = self._client.create_new_trial(self.study_id, request)
            except KeyError as exc:
                if _is_study_full(exc):
                    break
                raise
            created.append(self._client.get_trial(trial_id))
        return created

    def write_epoch(self, values: EpochValues, system_attrs: SystemAttrs = ()) -> None:
        if values or system_attrs:
            carrier = values[0][0] if values else system_attrs[0][0]
            batch = {"values": list(values), "system_attrs": list(system_attrs)}
            self._client.set_trial_system_attr(carrier, EPOCH_KEY, batch)

    def finish_trials(self, outcomes: Sequence[Finished]) -> None:
        if outcomes:
            batch = [
                {
                    "trial_id": o.trial_id,
                    "state": o.state.name,
                    "value": o.value,
                    "user_attrs": dict(o.user_attrs),
                }
                for o in outcomes
            ]
            self._client.set_trial_system_attr(outcomes[0].trial_id, FINISH_KEY, batch)

    def annotate_trial(self, trial_id: int, user_attrs: Mapping[str, Any]) -> None:
        self._client.set_trial_system_attr(trial_id, ANNOTATE_KEY, dict(user_attrs))

    def record_heartbeat(self, trial_id: int) -> None:
        self._client.set_trial_system_attr(trial_id, HEARTBEAT_KEY, True)

    @property
    def heartbeat_interval(self) -> int | None:
        return self._client.heartbeat_interval


class ProxyBackend(_CachedStorage):
    """The database side of `sweeps proxy`: Optuna's RDB storage in Optuna's own cache layer
    (what `optuna.storages.get_storage` builds, and what Optuna recommends behind the proxy: the
    proxy re-reads a study's trials on every worker's sync), doing on the workers' behalf what
    the gRPC API cannot carry (see the module docstring).

    Subclasses Optuna's private `_CachedStorage`; the Optuna release is pinned in
    constraints.txt and tests/test_proxy.py exercises every override.
    """

    def __init__(self, database: optuna.storages.RDBStorage) -> None:
        super().__init__(database)
        self.database = database

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None or CAP_KEY not in template_trial.system_attrs:
            return super().create_new_trial(study_id, template_trial)
        cap = int(template_trial.system_attrs[CAP_KEY])
        template = _without(template_trial, CAP_KEY)
        slots = TrialSlots(self.database, self.get_study_name_from_id(study_id))
        with slots.exclusive():
            counts = slots.counts()
            if sum(counts[state] for state in OCCUPYING) >= cap:
                raise KeyError(STUDY_FULL)  # the gRPC servicer turns KeyError into NOT_FOUND
            trial_id = super().create_new_trial(study_id, template)
            self.record_heartbeat(trial_id)  # as bulk.create_trials: stale-checkable at once
        return trial_id

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            self.record_heartbeat(trial_id)
        elif key == ANNOTATE_KEY:
            bulk.annotate_trial(self.database, trial_id, value)
        elif key == EPOCH_KEY:
            values = [(int(t), int(step), float(v)) for t, step, v in value["values"]]
            marks = [(int(t), str(k), v) for t, k, v in value["system_attrs"]]
            bulk.write_epoch(self.database, values, marks)
        elif key == FINISH_KEY:
            bulk.finish_trials(
                self.database,
                [
                    Finished(o["trial_id"], TrialState[o["state"]], o["value"], o["user_attrs"])
                    for o in value
                ],
            )
        else:
            super().set_trial_system_attr(trial_id, key, value)


def _without(trial: FrozenTrial, key: str) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=trial.state,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs={k: v for k, v in trial.system_attrs.items() if k != key},
    )


def _is_study_full(exc: KeyError) -> bool:
    """The gRPC client re-raises NOT_FOUND as a bare KeyError; the proxy's reason is on the
    RPC error it chains."""
    details = getattr(exc.__cause__, "details", None)
    return callable(details) and STUDY_FULL in str(details())
