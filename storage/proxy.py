"""Workers behind Optuna's gRPC storage proxy, with the same guarantees as over SQL.

Hundreds of workers holding database connections exhaust PostgreSQL; Optuna's gRPC proxy lets
them share one process's pool. Its API has no lock and no heartbeat, so what makes
lrsweep's studies exact and self-healing happens in the proxy process (`ProxyBackend`,
served by `sweeps proxy`), on requests the workers mark with reserved system-attribute keys:

- claims (`CLAIM_KEY`, on the study): a batch of trials is created in one transaction under the
  study's claim lock, only as many as keep the study's trials (finished, running or waiting)
  within the worker's target, so the study ends with exactly N however many workers race; each
  created trial keeps the claim's id as a system attribute, by which the worker finds it;
- heartbeats (`HEARTBEAT_KEY`) are recorded in Optuna's heartbeat table, and the proxy fails
  and re-queues stale trials itself, as workers on SQL do;
- hand-backs (`HAND_BACK_KEY`, on the study): an interrupted worker's trials are failed,
  annotated with why and re-queued under the claim lock, as stale ones are;
- batch writes (`EPOCH_KEY`, `FINISH_KEY`): a batch's epoch results, and its final states,
  travel as one request each (carried by the batch's first trial) and land in one transaction
  (`storage.bulk`), as over SQL, instead of one request and one transaction per trial.

Apart from the claim id, reserved keys never reach the database as attributes.
"""

from __future__ import annotations

import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

from storage import bulk
from storage.bulk import Finished
from storage.errors import StorageError
from storage.retry import hand_back
from storage.slots import TrialSlots
from storage.trial_store import EpochValues, SystemAttrs, TrialStore

CLAIM_KEY = "lrsweep:claim"
HEARTBEAT_KEY = "lrsweep:heartbeat"
EPOCH_KEY = "lrsweep:epoch"
FINISH_KEY = "lrsweep:finish"
HAND_BACK_KEY = "lrsweep:hand_back"
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
    """A worker's trial writes as requests to the proxy (see the module docstring)."""

    def __init__(self, client: ProxyClient, study_name: str) -> None:
        self._client = client
        self.study_id = client.get_study_id_from_name(study_name)

    def exclusive(self) -> AbstractContextManager[None]:
        return nullcontext()  # the proxy takes the lock for each claim (CLAIM_KEY)

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
        if not templates:
            return []
        claim = uuid.uuid4().hex
        request = {"claim": claim, "cap": cap, "templates": [_template_json(t) for t in templates]}
        self._client.set_study_system_attr(self.study_id, CLAIM_KEY, request)
        running = self._client.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        return [trial for trial in running if trial.system_attrs.get(CLAIM_KEY) == claim]

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

    def hand_back(self, study: optuna.Study, trial_ids: Sequence[int], reason: str) -> None:
        request = {"trial_ids": list(trial_ids), "reason": reason}
        self._client.set_study_system_attr(self.study_id, HAND_BACK_KEY, request)

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

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key not in (CLAIM_KEY, HAND_BACK_KEY):
            super().set_study_system_attr(study_id, key, value)
            return
        study_name = self.get_study_name_from_id(study_id)
        slots = TrialSlots(self.database, study_name)
        with slots.exclusive():
            if key == HAND_BACK_KEY:
                study = optuna.load_study(study_name=study_name, storage=self)
                hand_back(study, value["trial_ids"], value["reason"], self.database)
                return
            templates = [_template_from_json(t, value["claim"]) for t in value["templates"]]
            if value["cap"] is not None:
                counts = slots.counts()
                room = int(value["cap"]) - sum(counts[state] for state in OCCUPYING)
                templates = templates[: max(0, room)]
            bulk.create_trials(self.database, study_id, templates)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            self.record_heartbeat(trial_id)
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


def _template_json(template: FrozenTrial) -> dict[str, Any]:
    return {
        "params": template.params,
        "distributions": {
            name: distribution_to_json(d) for name, d in template.distributions.items()
        },
        "user_attrs": template.user_attrs,
    }


def _template_from_json(document: Mapping[str, Any], claim: str) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params=document["params"],
        distributions={
            name: json_to_distribution(d) for name, d in document["distributions"].items()
        },
        user_attrs=document["user_attrs"],
        system_attrs={CLAIM_KEY: claim},
    )
