"""BatchPruner makes the same decisions as Optuna's own report + should_prune."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from sweeps.pruning import BatchPruner
from sweeps.study import make_pruner

EPOCHS = 20
POPULATION = 40
BATCH = 12


def _curve(number: int) -> list[float]:
    """A deterministic learning curve per trial number: plateau level and speed vary."""
    rng = np.random.default_rng(number)
    level, speed = rng.uniform(0.55, 0.95), rng.uniform(1.0, 8.0)
    if number >= POPULATION and number % 4 == 0:
        level, speed = 0.99, 1.0  # a few clear winners in the batch under test
    steps = np.arange(EPOCHS)
    noise = rng.normal(0.0, 0.01, EPOCHS)
    return [float(v) for v in level * (1 - np.exp(-(steps + 1) / speed)) + noise]


def _populated_study(path: Path, pruner_name: str) -> optuna.Study:
    """A study whose first trials ran the ordinary way, pruner included."""
    study = optuna.create_study(
        study_name="same-name",
        storage=f"sqlite:///{path}",
        direction="maximize",
        pruner=make_pruner(pruner_name, EPOCHS),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial: optuna.Trial) -> float:
        curve = _curve(trial.number)
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return curve[-1]

    study.optimize(objective, n_trials=POPULATION)
    return study


def _reference_prune_steps(study: optuna.Study) -> dict[int, int | None]:
    """A batch run in lock-step with Optuna's own report + should_prune."""
    trials = [study.ask() for _ in range(BATCH)]
    pruned_at: dict[int, int | None] = {t.number: None for t in trials}
    active = list(trials)
    for step in range(EPOCHS):
        for trial in list(active):
            trial.report(_curve(trial.number)[step], step)
            if trial.should_prune():
                pruned_at[trial.number] = step
                study.tell(trial, state=TrialState.PRUNED)
                active.remove(trial)
    return pruned_at


def _batched_prune_steps(study: optuna.Study) -> dict[int, int | None]:
    finished = study.get_trials(deepcopy=True, states=(TrialState.COMPLETE, TrialState.PRUNED))
    asked = [study.ask() for _ in range(BATCH)]
    running = [study._storage.get_trial(t._trial_id) for t in asked]
    batch = BatchPruner(study.pruner, study.study_name, study.direction, finished, running)
    pruned_at: dict[int, int | None] = {t.number: None for t in running}
    active = list(running)
    for step in range(EPOCHS):
        for trial in list(active):
            batch.report(trial._trial_id, step, _curve(trial.number)[step])
            if batch.should_prune(trial._trial_id):
                pruned_at[trial.number] = step
                active.remove(trial)
    return pruned_at


@pytest.mark.parametrize("pruner_name", ["median", "hyperband", "successive_halving"])
def test_batched_decisions_equal_should_prune(pruner_name: str, tmp_path: Path) -> None:
    reference = _reference_prune_steps(_populated_study(tmp_path / "a.db", pruner_name))
    batched = _batched_prune_steps(_populated_study(tmp_path / "b.db", pruner_name))
    assert batched == reference
    pruned = [step for step in reference.values() if step is not None]
    assert pruned, "the test population must make the pruner prune something"
    assert len(pruned) < BATCH, "and let something finish"


def test_rung_marks_are_handed_back_for_storage(tmp_path: Path) -> None:
    study = _populated_study(tmp_path / "c.db", "successive_halving")
    asked = study.ask()
    trial = study._storage.get_trial(asked._trial_id)
    batch = BatchPruner(
        study.pruner, study.study_name, study.direction, study.trials[:-1], [trial]
    )
    for step in (0, 1):
        batch.report(trial._trial_id, step, 0.99)
        batch.should_prune(trial._trial_id)
    marks = batch.take_system_attrs()
    assert marks and all(trial_id == trial._trial_id for trial_id, _, _ in marks)
    assert marks[0][1].startswith("completed_rung_")
    assert batch.take_system_attrs() == []
