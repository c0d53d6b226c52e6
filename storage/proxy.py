"""Workers behind Optuna's gRPC storage proxy, with the same guarantees as over SQL.

Hundreds of workers holding database connections exhaust PostgreSQL; Optuna's gRPC proxy lets
them share one process's pool. Its API has no lock, no heartbeat and no batch writes, so what
makes lrsweep's studies exact and self-healing happens in the proxy process (`ProxyBackend`,
served by `sweeps proxy`), which runs the very `SqlTrialStore` methods a worker on SQL runs.

The protocol: each request is one `set_*_system_attr` call whose key is reserved (it never
reaches the database as an attribute) and whose value is a JSON document:

- `lrsweep:claim` on the study, `{claim, cap, user_attrs, proposals: [{params,
  distributions}]}`: `SqlTrialStore.claim` (each started trial keeps the `claim` id, as over
  SQL; a repeated request starts nothing more);
- `lrsweep:enqueue` on the study, `{templates: [{params, distributions, user_attrs}]}`:
  `SqlTrialStore.enqueue`;
- `lrsweep:epoch` on the batch's first trial, `{values, system_attrs, finished: [{trial_id,
  state, value, user_attrs}]}`: `SqlTrialStore.write_epoch`, whose answer (`EpochWrite`: the
  trials finished, and those failed meanwhile by another worker) the worker reads back as the
  system attribute `lrsweep:epoch_answer` of that trial (`get_trial`, kept by the proxy in
  memory until read; without it, e.g. after a proxy restart, from the trials' states), so a
  lost trial is noticed at every write, as over SQL;
- `lrsweep:heartbeat` on any trial, `[trial_id, ...]`: `SqlTrialStore.record_heartbeats`;
- `lrsweep:hand_back` on the study, `{trial_ids, reason}`: `SqlTrialStore.hand_back`.

A worker learns what a request did by reading trials back with Optuna's own calls: the RUNNING
trials carrying its claim id, and an epoch write's answer. Dead workers' trials are failed and
re-queued by the proxy itself (`lrsweep.sweeps.servers`), every heartbeat interval.

Messages: gRPC refuses a request over 4 MiB by default, and a 4096-trial claim over every
schedule kind is about 4.2 MiB, the final write of 4096 plateau trials (5 folds x 50 epochs of
lrs) about 18 MiB. The proxy accepts requests up to `MAX_MESSAGE_BYTES` (`GRPC_OPTIONS`); a
worker's channel (Optuna's) already sends and receives messages of any size.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from lrsweep.errors import StorageError
from lrsweep.storage import bulk
from lrsweep.storage.bulk import CLAIM_KEY, EpochValues, EpochWrite, Finished, SystemAttrs
from lrsweep.storage.optuna_cache import CachedStorage
from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.storage.trial_store import SqlTrialStore, TrialStore

ENQUEUE_KEY = "lrsweep:enqueue"
EPOCH_KEY = "lrsweep:epoch"
HEARTBEAT_KEY = "lrsweep:heartbeat"
HAND_BACK_KEY = "lrsweep:hand_back"
EPOCH_ANSWER_KEY = "lrsweep:epoch_answer"
MAX_EPOCH_ANSWERS = 100_000
CONNECT_TIMEOUT_S = 10.0
# The largest request the proxy takes (gRPC's default is 4 MiB): protobuf's own limit is
# 2 GiB, and a batch's final write grows with trials x folds x epochs.
MAX_MESSAGE_BYTES = 1 << 30
GRPC_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


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

    def counts(self) -> Counter[str]:
        trials = self._client.get_all_trials(self.study_id, deepcopy=False)
        return Counter(trial.state.name for trial in trials)

    def states_from(self, first_id: int) -> dict[int, TrialState]:
        # The proxy answers with the whole study (from its cache); filtered here.
        trials = self._client.get_all_trials(self.study_id, deepcopy=False)
        return {trial_id_of(t): t.state for t in trials if trial_id_of(t) >= first_id}

    def trials_by_id(self, trial_ids: Collection[int]) -> Iterator[FrozenTrial]:
        if not trial_ids:
            return
        wanted = set(trial_ids)
        trials = self._client.get_all_trials(self.study_id, deepcopy=False)
        yield from sorted((t for t in trials if trial_id_of(t) in wanted), key=trial_id_of)

    def claim(
        self,
        proposals: Sequence[FrozenTrial],
        cap: int | None,
        user_attrs: Mapping[str, Any],
        claim_id: str,
    ) -> list[FrozenTrial]:
        if not proposals:
            return []
        request = {
            "claim": claim_id,
            "cap": cap,
            "user_attrs": dict(user_attrs),
            "proposals": [template_json(t) for t in proposals],
        }
        self._client.set_study_system_attr(self.study_id, CLAIM_KEY, request)
        running = self._client.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        return [trial for trial in running if trial.system_attrs.get(CLAIM_KEY) == claim_id]

    def enqueue(self, templates: Sequence[FrozenTrial]) -> None:
        request = {"templates": [template_json(t) for t in templates]}
        self._client.set_study_system_attr(self.study_id, ENQUEUE_KEY, request)

    def write_epoch(
        self,
        values: EpochValues,
        system_attrs: SystemAttrs = (),
        finished: Sequence[Finished] = (),
    ) -> EpochWrite:
        ids = [t for t, _, _ in values] + [t for t, _, _ in system_attrs]
        ids += [o.trial_id for o in finished]
        if not ids:
            return EpochWrite()
        request = {
            "values": list(values),
            "system_attrs": list(system_attrs),
            "finished": [
                {
                    "trial_id": o.trial_id,
                    "state": o.state.name,
                    "value": o.value,
                    "user_attrs": dict(o.user_attrs),
                }
                for o in finished
            ],
        }
        self._client.set_trial_system_attr(ids[0], EPOCH_KEY, request)
        answer = self._client.get_trial(ids[0]).system_attrs.get(EPOCH_ANSWER_KEY)
        if answer is not None:
            return EpochWrite(frozenset(answer["finished"]), frozenset(answer["lost"]))
        # No answer kept (the proxy restarted, or another proxy took the write): the same
        # answer from the trials' states, as `bulk.write_epoch` computes it.
        states = {trial_id_of(t): t.state for t in self.trials_by_id(set(ids))}
        done = frozenset(o.trial_id for o in finished if states[o.trial_id] == o.state)
        running = {i for i, state in states.items() if state == TrialState.RUNNING}
        return EpochWrite(done, frozenset(states) - running - done)

    def fail_stale_trials(self, study: optuna.Study) -> None:
        """The proxy does this for every study (`lrsweep.sweeps.servers`)."""

    def hand_back(self, study: optuna.Study, trial_ids: Sequence[int], reason: str) -> int:
        request = {"trial_ids": list(trial_ids), "reason": reason}
        self._client.set_study_system_attr(self.study_id, HAND_BACK_KEY, request)
        return sum(self._client.get_trial(i).state == TrialState.FAIL for i in trial_ids)

    def record_heartbeats(self, trial_ids: Sequence[int]) -> None:
        if trial_ids:
            self._client.set_trial_system_attr(trial_ids[0], HEARTBEAT_KEY, list(trial_ids))

    @property
    def heartbeat_interval(self) -> int | None:
        return self._client.heartbeat_interval


class ProxyBackend(CachedStorage):
    """The database side of `sweeps proxy`: Optuna's RDB storage in Optuna's own cache layer
    (what `optuna.storages.get_storage` builds, and what Optuna recommends behind the proxy: the
    proxy re-reads a study's trials on every worker's sync), answering the protocol in the
    module docstring.

    Subclasses Optuna's private cache layer (`lrsweep.storage.optuna_cache`);
    tests/test_proxy.py exercises every request.
    """

    def __init__(self, database: optuna.storages.RDBStorage) -> None:
        super().__init__(database)
        self.database = database
        # By the write's first trial, until read; the oldest dropped past MAX_EPOCH_ANSWERS
        # (a worker that died before reading its answer).
        self._epoch_answers: OrderedDict[int, dict[str, list[int]]] = OrderedDict()
        self._answers_lock = threading.Lock()

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The trial; with the answer of the epoch write last sent to it, once."""
        trial = super().get_trial(trial_id)
        with self._answers_lock:
            answer = self._epoch_answers.pop(trial_id, None)
        if answer is None:
            return trial
        trial = copy.copy(trial)  # the cached trial stays as stored
        trial.system_attrs = {**trial.system_attrs, EPOCH_ANSWER_KEY: answer}
        return trial

    def trial_store(self, study_name: str) -> SqlTrialStore:
        return SqlTrialStore(self.database, study_name)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key not in (CLAIM_KEY, ENQUEUE_KEY, HAND_BACK_KEY):
            super().set_study_system_attr(study_id, key, value)
            return
        study_name = self.get_study_name_from_id(study_id)
        store = self.trial_store(study_name)
        if key == CLAIM_KEY:
            proposals = [_template_from_json(t, TrialState.RUNNING) for t in value["proposals"]]
            store.claim(proposals, value["cap"], value["user_attrs"], value["claim"])
        elif key == ENQUEUE_KEY:
            store.enqueue([_template_from_json(t, TrialState.WAITING) for t in value["templates"]])
        else:
            study = optuna.load_study(study_name=study_name, storage=self)
            store.hand_back(study, value["trial_ids"], value["reason"])

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            bulk.record_heartbeats(self.database, [int(t) for t in value])
        elif key == EPOCH_KEY:
            written = bulk.write_epoch(
                self.database,
                [(int(t), int(step), float(v)) for t, step, v in value["values"]],
                [(int(t), str(k), v) for t, k, v in value["system_attrs"]],
                [
                    Finished(o["trial_id"], TrialState[o["state"]], o["value"], o["user_attrs"])
                    for o in value["finished"]
                ],
            )
            answer = {"finished": sorted(written.finished), "lost": sorted(written.lost)}
            with self._answers_lock:
                self._epoch_answers[trial_id] = answer
                if len(self._epoch_answers) > MAX_EPOCH_ANSWERS:
                    self._epoch_answers.popitem(last=False)
        else:
            super().set_trial_system_attr(trial_id, key, value)


def template_json(template: FrozenTrial) -> dict[str, Any]:
    return {
        "params": template.params,
        "distributions": {
            name: distribution_to_json(d) for name, d in template.distributions.items()
        },
        "user_attrs": template.user_attrs,
    }


def _template_from_json(document: Mapping[str, Any], state: TrialState) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        params=document["params"],
        distributions={
            name: json_to_distribution(d) for name, d in document["distributions"].items()
        },
        user_attrs=document.get("user_attrs", {}),
    )
