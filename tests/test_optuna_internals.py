"""Every Optuna internal lrsweep uses, exercised for real through its adapter module.

Each test names the internal it guards: when an Optuna upgrade renames, removes or changes one,
the failure says which, and which adapter (`lrsweep.storage.optuna_*`,
`lrsweep.sweeps.worker.optuna_*`) to fix.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Table, UniqueConstraint, select, update

from conftest import free_port
from lrsweep.storage.optuna_cache import CachedStorage, uncached
from lrsweep.storage.optuna_grpc import add_storage_service
from lrsweep.storage.optuna_objects import set_trial_id, study_id_of, study_storage, trial_id_of
from lrsweep.storage.optuna_rdb import (
    HEARTBEATS,
    INTERMEDIATE_VALUES,
    PARAMS,
    SYSTEM_ATTRS,
    TRIALS,
    USER_ATTRS,
    VALUES,
    decode_intermediate_value,
    decode_value,
    encode_intermediate_value,
    encode_value,
    stale_trial_ids,
)
from lrsweep.sweeps.worker.optuna_percentile import (
    PercentileSettings,
    best_intermediate_value,
    is_first_in_interval_step,
    percentile_settings,
)
from lrsweep.sweeps.worker.optuna_tpe import ExposedTPESampler, ParzenEstimator, split_trials
from lrsweep.sweeps.worker.sampling import BatchTPESampler

SPACE: dict[str, BaseDistribution] = {
    "x": FloatDistribution(1e-4, 1.0, log=True),
    "kind": CategoricalDistribution(["a", "b", "c"]),
}


def _rdb(tmp_path: Path, **kwargs: Any) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}", **kwargs)


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _history(sampler: optuna.samplers.BaseSampler | None = None, size: int = 30) -> optuna.Study:
    """A maximized in-memory study: `size` trials over SPACE, a fifth of them pruned."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = random.Random(0)
    for number in range(size):
        state = TrialState.PRUNED if number % 5 == 4 else TrialState.COMPLETE
        value = rng.random()
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                params={"x": 10 ** rng.uniform(-4, 0), "kind": rng.choice("abc")},
                distributions=SPACE,
                intermediate_values={0: value / 2, 1: value},
            )
        )
    return study


# --- lrsweep.sweeps.worker.optuna_tpe -------------------------------------------------------


def test_split_trials_puts_the_n_best_below_and_running_trials_above() -> None:
    study = _history()
    asked = study.ask()  # a running trial
    trials = study.get_trials(deepcopy=False)
    below, above = split_trials(study, trials, 4)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best = sorted(completed, key=lambda t: t.value or 0.0, reverse=True)[:4]
    assert [t.number for t in below] == sorted(t.number for t in best), (
        "optuna.samplers._tpe.sampler._split_trials no longer puts the n_below best completed "
        "trials (maximized) below, in number order"
    )
    assert [t.number for t in above] == sorted(
        t.number for t in trials if t.number not in {b.number for b in best}
    ) and asked.number in {t.number for t in above}, (
        "optuna.samplers._tpe.sampler._split_trials no longer puts every other trial, running "
        "ones included, above in number order"
    )


def test_parzen_estimators_sample_and_score_a_search_space() -> None:
    sampler = ExposedTPESampler(seed=1)
    study = _history(sampler)
    trials = study.get_trials(deepcopy=False)
    below = sampler.build_parzen_estimator(study, SPACE, trials[:5], below=True)
    above = sampler.build_parzen_estimator(study, SPACE, trials[5:], below=False)
    assert isinstance(below, ParzenEstimator) and isinstance(above, ParzenEstimator), (
        "TPESampler._build_parzen_estimator no longer builds an "
        "optuna.samplers._tpe.parzen_estimator._ParzenEstimator"
    )
    samples = below.sample(np.random.RandomState(0), 7)
    assert set(samples) == set(SPACE) and all(len(v) == 7 for v in samples.values()), (
        "_ParzenEstimator.sample(rng, size) no longer gives `size` internal values per parameter"
    )
    scores = below.log_pdf(samples) - above.log_pdf(samples)
    assert scores.shape == (7,) and np.isfinite(scores).all(), (
        "_ParzenEstimator.log_pdf(samples) no longer gives one finite log density per sample"
    )


def test_tpe_s_step_is_a_split_two_fits_and_the_best_of_n_ei_candidates() -> None:
    """What BatchTPESampler does once per batch must be what TPE's private `_sample` does."""
    sampler = ExposedTPESampler(seed=3, n_ei_candidates=11, constant_liar=False)
    study = _history(sampler)
    trial = _frozen(study, study.ask().number)
    rng = copy.deepcopy(sampler.rng)
    proposed = sampler.sample_search_space(study, trial, SPACE)

    history = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    below_trials, above_trials = split_trials(study, history, sampler.gamma(len(history)))
    below = sampler.build_parzen_estimator(study, SPACE, below_trials, below=True)
    above = sampler.build_parzen_estimator(study, SPACE, above_trials, below=False)
    samples = below.sample(rng, sampler.n_ei_candidates)
    best = int(np.argmax(below.log_pdf(samples) - above.log_pdf(samples)))
    rebuilt = {name: d.to_external_repr(samples[name][best].item()) for name, d in SPACE.items()}
    assert rebuilt == proposed, (
        "TPESampler._sample is no longer _split_trials by gamma, a _ParzenEstimator on each "
        "side and the best of n_ei_candidates draws from `_rng` by log l(x) - log g(x): "
        "BatchTPESampler's batch fits would no longer be TPE's"
    )


@pytest.mark.parametrize("multivariate", [True, False])
def test_tpe_proposals_come_from_sample_search_space(multivariate: bool) -> None:
    """Relative (multivariate) and independent sampling must both end in TPE's `_sample`,
    which ExposedTPESampler routes to `sample_search_space`."""
    seen: list[set[str]] = []
    fixed = {"x": 0.125, "kind": "b"}

    class Fixed(ExposedTPESampler):
        def sample_search_space(
            self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
        ) -> dict[str, Any]:
            seen.append(set(search_space))
            return {name: fixed[name] for name in search_space}

    study = _history(Fixed(multivariate=multivariate, n_startup_trials=5))
    trial = study.ask(SPACE)
    assert trial.params == fixed and seen, (
        "TPESampler no longer samples through its private `_sample` "
        f"({'relative' if multivariate else 'independent'} sampling): BatchTPESampler's "
        "override would be bypassed"
    )


def test_exposed_tpe_sampler_proposes_what_tpe_proposes() -> None:
    def proposals(sampler: optuna.samplers.TPESampler) -> list[dict[str, Any]]:
        study = _history(sampler)
        return [study.ask(SPACE).params for _ in range(5)]

    arguments: dict[str, Any] = {"seed": 5, "n_startup_trials": 5, "multivariate": True}
    assert proposals(ExposedTPESampler(**arguments)) == proposals(
        optuna.samplers.TPESampler(**arguments)
    ), "overriding TPESampler._sample changed TPE's proposals (its signature changed?)"


def test_reseed_sets_both_of_tpe_s_random_streams() -> None:
    """Before its startup trials are done TPE samples through its own RandomSampler: a copy
    reseeded on TPE's stream alone would propose what the original does."""

    def startup_proposals(sampler: ExposedTPESampler) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=sampler)
        return [study.ask(SPACE).params for _ in range(4)]

    original = ExposedTPESampler(seed=3, n_startup_trials=10)
    same, other = copy.deepcopy(original), copy.deepcopy(original)
    same.reseed(11)
    other.reseed(12)
    again = copy.deepcopy(original)
    again.reseed(11)
    assert startup_proposals(same) == startup_proposals(again)
    assert startup_proposals(same) != startup_proposals(other)
    assert startup_proposals(other) != startup_proposals(copy.deepcopy(original))


def test_tpe_settings_read_through_public_names() -> None:
    sampler = ExposedTPESampler(seed=7, n_ei_candidates=11, constant_liar=False)
    assert (sampler.n_ei_candidates, sampler.constant_liar) == (11, False), (
        "TPESampler no longer keeps `n_ei_candidates` and `constant_liar` as "
        "`_n_ei_candidates` and `_constant_liar`"
    )
    assert ExposedTPESampler(constant_liar=True).constant_liar is True
    assert [sampler.gamma(n) for n in (0, 1, 10, 11, 100, 1000)] == [0, 1, 1, 2, 10, 25], (
        "TPE's default gamma (optuna.samplers._tpe.sampler.default_gamma: min(ceil(n/10), 25)) "
        "changed"
    )
    assert isinstance(sampler.rng, np.random.RandomState), "TPESampler._rng.rng changed"
    assert sampler.rng.random_sample() == np.random.RandomState(7).random_sample(), (
        "TPESampler._rng.rng is no longer the RandomState seeded with `seed`"
    )


def test_our_names_do_not_shadow_tpe_s_own() -> None:
    ours = [
        *("sample_search_space", "build_parzen_estimator", "gamma", "n_ei_candidates"),
        *("constant_liar", "rng"),  # ExposedTPESampler's
        *("_fit", "_fits", "_draw_chunk"),  # BatchTPESampler's
    ]
    assert all(hasattr(BatchTPESampler(), name) for name in ours)
    tpe = optuna.samplers.TPESampler()
    taken = {name for name in ours if hasattr(tpe, name)}
    assert not taken, f"TPESampler now has attributes of its own named {taken}"


# --- lrsweep.sweeps.worker.optuna_percentile -------------------------------------------------


def test_percentile_settings_are_what_the_pruner_was_built_with() -> None:
    pruner = optuna.pruners.PercentilePruner(
        25.0, n_startup_trials=3, n_warmup_steps=2, interval_steps=4, n_min_trials=5
    )
    assert percentile_settings(pruner) == PercentileSettings(25.0, 3, 2, 4, 5), (
        "PercentilePruner no longer keeps its settings as _percentile, _n_startup_trials, "
        "_n_warmup_steps, _interval_steps, _n_min_trials"
    )
    median = percentile_settings(optuna.pruners.MedianPruner(n_startup_trials=7))
    assert (median.percentile, median.n_startup_trials) == (50.0, 7), (
        "MedianPruner is no longer a PercentilePruner at the 50th percentile"
    )


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([0, 1, 2], True),  # the warm-up's end
        ([0, 1, 2, 3], False),
        ([0, 1, 2, 3, 4, 5], True),  # 2 + 3
        ([2, 7], True),  # 7 is the first report in [5, 8)
        ([5, 6], False),
    ],
)
def test_pruners_decide_at_the_first_report_of_each_interval(
    steps: list[int], expected: bool
) -> None:
    reported = {step: 0.5 for step in steps}
    decides = is_first_in_interval_step(steps[-1], reported.keys(), 2, 3)
    assert decides == expected, (
        "optuna.pruners._percentile._is_first_in_interval_step changed: "
        f"steps {steps}, warm-up 2, interval 3 gave {decides}"
    )


def test_best_intermediate_value_ignores_nans() -> None:
    trial = optuna.trial.create_trial(value=0.0, intermediate_values={0: 0.3, 1: math.nan, 2: 0.9})
    nans = optuna.trial.create_trial(value=0.0, intermediate_values={0: math.nan})
    name = "optuna.pruners._percentile._get_best_intermediate_result_over_steps"
    assert best_intermediate_value(trial, StudyDirection.MAXIMIZE) == 0.9, name
    assert best_intermediate_value(trial, StudyDirection.MINIMIZE) == 0.3, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice
        assert math.isnan(best_intermediate_value(nans, StudyDirection.MAXIMIZE)), name


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_percentile_pruning_is_still_the_rule_batch_pruner_follows(direction: str) -> None:
    """BatchPruner re-implements PercentilePruner.prune from these pieces and
    np.nanpercentile of the completed values at the step (100 - p when maximizing)."""
    pruner = optuna.pruners.PercentilePruner(
        30.0, n_startup_trials=2, n_warmup_steps=1, interval_steps=2, n_min_trials=3
    )
    study = optuna.create_study(direction=direction, pruner=pruner)
    rng = random.Random(1)
    for _ in range(6):
        curve = {step: rng.random() for step in range(rng.randint(1, 8))}
        study.add_trial(optuna.trial.create_trial(value=0.5, intermediate_values=curve))
    settings = percentile_settings(pruner)
    completed = study.get_trials(states=(TrialState.COMPLETE,))
    for _ in range(40):
        curve = {step: rng.random() for step in range(rng.randint(1, 8))}
        trial = optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=curve)
        step = max(curve)
        expected = False
        if step >= settings.n_warmup_steps and is_first_in_interval_step(
            step,
            trial.intermediate_values.keys(),
            settings.n_warmup_steps,
            settings.interval_steps,
        ):
            values = [
                t.intermediate_values[step] for t in completed if step in t.intermediate_values
            ]
            maximize = study.direction == StudyDirection.MAXIMIZE
            p = 100 - settings.percentile if maximize else settings.percentile
            enough = len(values) >= settings.n_min_trials
            threshold = np.nanpercentile(values, p) if enough else math.nan
            best = best_intermediate_value(trial, study.direction)
            expected = not math.isnan(threshold) and (
                best < threshold if maximize else best > threshold
            )
        assert pruner.prune(study, trial) == expected, (
            f"PercentilePruner.prune changed its rule (optuna.pruners._percentile): curve {curve}"
        )


# --- lrsweep.storage.optuna_objects -----------------------------------------------------------


def test_trial_and_study_ids_are_the_storage_s(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    study = optuna.create_study(study_name="s", storage=rdb)
    optuna.create_study(study_name="other", storage=rdb).ask()  # ids differ from numbers
    for _ in range(2):
        study.ask()
    storage = study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage), "Study._storage changed"
    assert uncached(storage) is rdb, "Study._storage is no longer the cache over the RDB"
    assert storage.get_study_id_from_name("s") == study_id_of(study), "Study._study_id changed"
    for trial in study.get_trials():
        trial_id = trial_id_of(trial)
        assert trial_id == rdb.get_trial_id_from_study_id_trial_number(
            study_id_of(study), trial.number
        ), "FrozenTrial._trial_id is no longer the trial's id in its storage"
        assert trial_id != trial.number


def test_a_set_trial_id_is_the_one_optuna_reads(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    study = optuna.create_study(storage=rdb)
    study.ask()
    stored = study.ask()
    copied = copy.deepcopy(_frozen(study, 0))
    set_trial_id(copied, trial_id_of(_frozen(study, stored.number)))
    assert trial_id_of(copied) == trial_id_of(copy.deepcopy(copied)), (
        "FrozenTrial._trial_id no longer survives a copy"
    )
    built = FrozenTrial(
        number=0,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id_of(copied),
    )
    assert trial_id_of(built) == trial_id_of(copied), (
        "FrozenTrial(trial_id=...) no longer sets FrozenTrial._trial_id"
    )
    assert rdb.get_trial(trial_id_of(copied)).number == stored.number


# --- lrsweep.storage.optuna_cache -------------------------------------------------------------


def test_cached_storage_wraps_an_rdb_and_can_be_subclassed(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    cached = optuna.storages.get_storage(rdb)
    assert isinstance(cached, CachedStorage), (
        "optuna.storages.get_storage no longer wraps an RDB in "
        "optuna.storages._cached_storage._CachedStorage"
    )
    assert uncached(cached) is rdb, "_CachedStorage no longer keeps its RDB as `_backend`"
    assert uncached(rdb) is rdb

    class Counting(CachedStorage):
        reads = 0

        def get_trial(self, trial_id: int) -> FrozenTrial:
            Counting.reads += 1
            return super().get_trial(trial_id)

    storage = Counting(rdb)
    study = optuna.create_study(study_name="cached", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    assert uncached(storage) is rdb, "a _CachedStorage subclass no longer keeps `_backend`"
    assert len(optuna.load_study(study_name="cached", storage=rdb).trials) == 3, (
        "_CachedStorage(rdb) no longer writes through to the RDB"
    )
    assert Counting.reads > 0, "Study no longer reads trials through the storage's get_trial"


# --- lrsweep.storage.optuna_grpc --------------------------------------------------------------


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[tuple[int, optuna.storages.RDBStorage]]:
    rdb = _rdb(tmp_path)
    port = free_port()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_storage_service(server, CachedStorage(rdb))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield port, rdb
    server.stop(grace=None)


def test_the_storage_service_answers_optuna_s_grpc_client(
    grpc_server: tuple[int, optuna.storages.RDBStorage],
) -> None:
    port, rdb = grpc_server
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        client = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
    try:
        client.wait_server_ready(timeout=10)
        study = optuna.create_study(study_name="proxied", storage=client)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    finally:
        client.close()
    trials = optuna.load_study(study_name="proxied", storage=rdb).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, (
        "optuna.storages._grpc (api_pb2_grpc.add_StorageServiceServicer_to_server, "
        "servicer.OptunaStorageProxyService) no longer serves GrpcStorageProxy clients"
    )


# --- lrsweep.storage.optuna_rdb ---------------------------------------------------------------


def _unique_keys(table: Table) -> set[tuple[str, ...]]:
    return {tuple(c.columns.keys()) for c in table.constraints if isinstance(c, UniqueConstraint)}


@pytest.mark.parametrize(
    ("table", "columns", "unique"),
    [
        (TRIALS, {"trial_id", "number", "study_id", "state", "datetime_start"}, None),
        (PARAMS, {"trial_id", "param_name", "param_value", "distribution_json"}, None),
        (USER_ATTRS, {"trial_id", "key", "value_json"}, ("trial_id", "key")),
        (SYSTEM_ATTRS, {"trial_id", "key", "value_json"}, ("trial_id", "key")),
        (
            INTERMEDIATE_VALUES,
            {"trial_id", "step", "intermediate_value", "intermediate_value_type"},
            ("trial_id", "step"),
        ),
        (VALUES, {"trial_id", "objective", "value", "value_type"}, None),
        (HEARTBEATS, {"trial_id", "heartbeat"}, ("trial_id",)),
    ],
    ids=lambda v: v.name if isinstance(v, Table) else None,
)
def test_the_tables_have_the_columns_and_keys_bulk_sql_uses(
    table: Table, columns: set[str], unique: tuple[str, ...] | None
) -> None:
    missing = columns - set(table.c.keys())
    assert not missing, f"optuna.storages._rdb.models: table {table.name} lost {missing}"
    if unique is not None:
        assert unique in _unique_keys(table), (
            f"optuna.storages._rdb.models: table {table.name} has no unique key {unique} "
            "(lrsweep's ON CONFLICT clauses name it)"
        )


def test_stored_values_decode_and_encode_as_optuna_stores_them(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    study = optuna.create_study(storage=rdb)
    curve = {0: 0.5, 1: math.inf, 2: -math.inf, 3: math.nan}
    finals = [0.25, math.inf, -math.inf]
    for final in finals:
        trial = study.ask(SPACE)
        for step, value in curve.items():
            trial.report(value, step)
        study.tell(trial, final)
    with rdb.engine.connect() as connection:
        values = connection.execute(
            select(VALUES.c.value, VALUES.c.value_type).order_by(VALUES.c.trial_id)
        ).all()
        intermediate = connection.execute(
            select(
                INTERMEDIATE_VALUES.c.intermediate_value,
                INTERMEDIATE_VALUES.c.intermediate_value_type,
            ).order_by(INTERMEDIATE_VALUES.c.trial_id, INTERMEDIATE_VALUES.c.step)
        ).all()
        rows = connection.execute(select(TRIALS.c.number, TRIALS.c.state)).all()
    name = "optuna.storages._rdb.models.TrialValueModel"
    assert [decode_value(*row) for row in values] == finals, f"{name}.stored_repr_to_value"
    assert [encode_value(v) for v in finals] == [tuple(row) for row in values], (
        f"{name}.value_to_stored_repr"
    )
    name = "optuna.storages._rdb.models.TrialIntermediateValueModel"
    expected = list(curve.values()) * len(finals)
    decoded = [decode_intermediate_value(*row) for row in intermediate]
    assert np.array_equal(decoded, expected, equal_nan=True), (
        f"{name}.stored_repr_to_intermediate_value"
    )
    assert [encode_intermediate_value(v) for v in expected] == [tuple(r) for r in intermediate], (
        f"{name}.intermediate_value_to_stored_repr"
    )
    assert sorted(rows) == [(n, TrialState.COMPLETE) for n in range(3)], (
        "optuna.storages._rdb.models.TrialModel no longer stores number and TrialState"
    )


def test_stale_trial_ids_are_running_trials_whose_last_beat_is_too_old(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path, heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=rdb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # heartbeats outside optimize()
        old, fresh, never, finished = (
            trial_id_of(_frozen(study, study.ask().number)) for _ in range(4)
        )
        for trial_id in (old, fresh, finished):
            rdb.record_heartbeat(trial_id)
    rdb.set_trial_state_values(finished, TrialState.COMPLETE, [1.0])
    with rdb.engine.begin() as connection:
        connection.execute(
            update(HEARTBEATS)
            .where(HEARTBEATS.c.trial_id.in_([old, finished]))
            .values(heartbeat=datetime(2000, 1, 1))
        )
    assert stale_trial_ids(rdb, study_id_of(study)) == [old], (
        "RDBStorage._get_stale_trial_ids(study_id) no longer lists exactly the RUNNING trials "
        "whose heartbeat is older than the grace period (never-beaten ones excluded)"
    )
