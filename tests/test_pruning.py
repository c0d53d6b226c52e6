"""BatchPruner makes exactly the decisions of Optuna's own report + should_prune.

Each generated case builds a study population with Optuna itself (an in-memory study, its real
pruner): trials that completed, were pruned, are still RUNNING part-way (another worker's), FAILED
part-way, or failed and were re-queued as WAITING copies carrying their system attributes (as
`storage.requeue` and Optuna's retry callback do). Then a batch of new trials (which pops the
WAITING copies first, as `study.ask` and lrsweep's claims do) reports epoch by epoch in lock-step,
once through Optuna's `should_prune` and once through `BatchPruner` over a snapshot of the same
population (its finished trials kept as a worker keeps them, `FinishedTrials`). Decisions and the
rung marks written must be identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage import StorageSettings
from lrsweep.sweeps.results.summary import summarize
from lrsweep.sweeps.study.open import create_or_join
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker.pruning import BatchPruner, FinishedTrials
from lrsweep.trainer import load_dataset

STUDY_NAME = "same-name"
FATES = ("complete", "complete", "running", "fail", "requeue")

PrunerFactory = Callable[[int], optuna.pruners.BasePruner]


@dataclass(frozen=True)
class Member:
    """One trial of a generated case: how its population run ends, and its learning curve."""

    fate: str
    stop_at: int
    curve: tuple[float, ...]


def _pruners() -> st.SearchStrategy[PrunerFactory]:
    """Every pruner kind the product offers, with generated constructor arguments."""
    median = st.builds(
        lambda startup, warmup, interval: (
            lambda _epochs: optuna.pruners.MedianPruner(
                n_startup_trials=startup, n_warmup_steps=warmup, interval_steps=interval
            )
        ),
        st.integers(0, 6),
        st.integers(0, 4),
        st.integers(1, 3),
    )
    percentile = st.builds(
        lambda pct, startup, warmup, n_min: (
            lambda _epochs: optuna.pruners.PercentilePruner(
                pct, n_startup_trials=startup, n_warmup_steps=warmup, n_min_trials=n_min
            )
        ),
        st.floats(1.0, 99.0),
        st.integers(0, 6),
        st.integers(0, 4),
        st.integers(1, 4),
    )
    halving = st.builds(
        lambda r, eta, rate, boot: (
            lambda _epochs: optuna.pruners.SuccessiveHalvingPruner(
                min_resource=r,
                reduction_factor=eta,
                min_early_stopping_rate=rate,
                bootstrap_count=boot,
            )
        ),
        st.integers(1, 3),
        st.integers(2, 4),
        st.integers(0, 2),
        st.integers(0, 2),
    )
    hyperband = st.builds(
        lambda r, eta: (
            lambda epochs: optuna.pruners.HyperbandPruner(
                min_resource=r, max_resource=epochs, reduction_factor=eta
            )
        ),
        st.integers(1, 2),
        st.integers(2, 4),
    )
    return st.one_of(median, percentile, halving, hyperband)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[PrunerFactory, int, list[Member], list[Member], str]:
    epochs = draw(st.integers(3, 12))
    # Few distinct levels, so ties (common with accuracies on a few hundred rows) are frequent,
    # and now and then a NaN (a diverged epoch).
    value = st.integers(0, 21).map(lambda v: v / 20 if v < 21 else math.nan)
    curve = st.lists(value, min_size=epochs, max_size=epochs).map(tuple)
    member = st.builds(Member, st.sampled_from(FATES), st.integers(0, epochs - 1), curve)
    population = draw(st.lists(member, max_size=30))
    batch = draw(st.lists(member, min_size=1, max_size=12))
    direction = draw(st.sampled_from(["maximize", "minimize"]))
    return draw(_pruners()), epochs, population, batch, direction


def _build_population(study: optuna.Study, members: list[Member]) -> None:
    """Run each member through Optuna until its fate; see the module docstring."""
    for member in members:
        trial = study.ask()
        for step, value in enumerate(member.curve):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
            if step == member.stop_at and member.fate != "complete":
                _end_early(study, trial, member.fate)
                break
        else:
            study.tell(trial, member.curve[-1])


def _end_early(study: optuna.Study, trial: optuna.Trial, fate: str) -> None:
    if fate == "running":
        return  # left RUNNING: another worker's trial, part-way through
    study.tell(trial, state=TrialState.FAIL)
    if fate == "requeue":
        failed = study._storage.get_trial(trial._trial_id)
        system_attrs: dict[str, Any] = {
            **failed.system_attrs,
            "failed_trial": failed.number,
            "retry_history": [failed.number],
        }
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING, params={}, distributions={}, system_attrs=system_attrs
            )
        )


def _optuna_lockstep(
    study: optuna.Study, trials: list[optuna.Trial], batch: list[Member], epochs: int
) -> dict[int, int | None]:
    """The batch through Optuna's own report + should_prune, one epoch at a time."""
    pruned_at: dict[int, int | None] = {t.number: None for t in trials}
    active = list(zip(trials, batch, strict=True))
    for step in range(epochs):
        for trial, member in list(active):
            trial.report(member.curve[step], step)
            if trial.should_prune():
                pruned_at[trial.number] = step
                study.tell(trial, state=TrialState.PRUNED)
                active.remove((trial, member))
    return pruned_at


def _batched_lockstep(
    batch_pruner: BatchPruner, running: list[FrozenTrial], batch: list[Member], epochs: int
) -> dict[int, int | None]:
    pruned_at: dict[int, int | None] = {t.number: None for t in running}
    active = list(zip(running, batch, strict=True))
    for step in range(epochs):
        for trial, member in list(active):
            batch_pruner.report(trial._trial_id, step, member.curve[step])
            if batch_pruner.should_prune(trial._trial_id):
                pruned_at[trial.number] = step
                active.remove((trial, member))
    return pruned_at


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_batched_decisions_equal_optuna_for_every_pruner_and_population(
    case: tuple[PrunerFactory, int, list[Member], list[Member], str],
) -> None:
    make, epochs, population, batch, direction = case
    study = optuna.create_study(
        study_name=STUDY_NAME, direction=direction, pruner=make(epochs), sampler=None
    )
    _build_population(study, population)
    trials = [study.ask() for _ in batch]  # pops the re-queued WAITING copies first
    snapshot = study.get_trials(deepcopy=True)
    batch_ids = {t._trial_id for t in trials}
    others = [t for t in snapshot if t._trial_id not in batch_ids]
    running = [t for t in snapshot if t._trial_id in batch_ids]
    running.sort(key=lambda t: t.number)

    reference = _optuna_lockstep(study, trials, batch, epochs)
    pruner = make(epochs)
    finished = FinishedTrials(pruner)  # as a worker keeps them: stripped to what pruners read
    for trial in others:
        if trial.state.is_finished():
            finished.add(trial)
    live = [t for t in others if not t.state.is_finished()]
    batch_pruner = BatchPruner(pruner, STUDY_NAME, study.direction, finished, live, running)
    assert _batched_lockstep(batch_pruner, running, batch, epochs) == reference

    written = batch_pruner.take_system_attrs()
    for trial in running:
        expected = {
            key: value
            for key, value in study._storage.get_trial(trial._trial_id).system_attrs.items()
            if key.startswith("completed_rung_") and key not in trial.system_attrs
        }
        marks = {key: value for trial_id, key, value in written if trial_id == trial._trial_id}
        assert marks == expected


def test_a_study_keeps_the_pruner_it_was_created_with(tmp_path: Path, data_path: Path) -> None:
    """The pruner's class and arguments are stored at creation: a worker joining later builds
    that pruner and `status` reports it, whatever today's defaults are."""
    dataset = load_dataset(data_path)
    spec = {"class": "PercentilePruner", "percentile": 40.0, "n_startup_trials": 2}
    settings = StudySettings(data_sha256=dataset.sha256, pruner_spec=spec)
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    created = create_or_join(StorageSettings(url), "kept", settings, dataset)
    joined = create_or_join(StorageSettings(url), "kept", StudySettings(dataset.sha256), dataset)
    for opened in (created, joined):
        pruner = opened.study.pruner
        assert isinstance(pruner, optuna.pruners.PercentilePruner)
        assert (pruner._percentile, pruner._n_startup_trials) == (40.0, 2)
        assert summarize(opened)["settings"]["pruner"] == spec
        assert isinstance(opened.storage, optuna.storages.RDBStorage)
        opened.storage.engine.dispose()
