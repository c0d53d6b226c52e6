"""Population Based Training inside an Optuna study: K members trained as one vectorized batch,
the worst taking over from the best every few epochs.

`sweeps run --population K --exploit-every E`: K members start from random draws of the
study's space at a constant lr, train together on the study's first validation split, and every
E epochs the bottom quarter by validation accuracy each take the weights, optimizer state and
settings of a random member of the top quarter and go on at its lr times 0.8 or 1.25, kept in
the space's lr range (PBT's truncation selection and perturbation; Jaderberg et al., 2017). The
lr a member's weights were trained with, epoch by epoch, is the schedule the population found.

Each member is a trial: its own accuracy per epoch as intermediate values (the dashboard and
the report read them as any study's), the exploits it underwent, and the recipe of its lineage
(`RECIPE_ATTR`: the lrs as a `recorded` LambdaLR) that `sweeps export` writes and `sweeps
train` rebuilds.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from lrsweep.storage.bulk import Finished
from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.sweeps.study.attributes import (
    EXPLOITS_ATTR,
    LR_USED_ATTR,
    RECIPE_ATTR,
    STOP_REASON_ATTR,
)
from lrsweep.sweeps.study.objective import EpochScores
from lrsweep.sweeps.study.open import OpenStudy, fold_tensors
from lrsweep.sweeps.study.space import SCHEDULER_PARAM, Range
from lrsweep.sweeps.worker.batch import majority_share
from lrsweep.sweeps.worker.options import PopulationOptions
from lrsweep.sweeps.worker.trackers import Trackers, TrackerSpec, prepare_trackers
from lrsweep.trainer import InvalidInputError, ScheduleConfig, TrainConfig
from lrsweep.trainer.data import DataSource
from lrsweep.trainer.training import (
    EpochResult,
    RunStatus,
    TrainResult,
    resolve_device,
    torch_threads,
)
from lrsweep.trainer.vectorized import BatchMember, BatchTraining

QUANTILE = 0.25  # the bottom quarter copies the top quarter
PERTURBATIONS = (0.8, 1.25)


@dataclass
class _Lineage:
    """What a member's current weights went through: their lrs per epoch and their settings."""

    config: TrainConfig
    lrs: list[float] = field(default_factory=list)

    def recipe(self) -> TrainConfig:
        """The settings with the lrs as a recorded schedule (a LambdaLR rebuilds them)."""
        lr0 = self.lrs[0]
        factors = [lr / lr0 for lr in self.lrs]
        return replace(
            self.config, lr=lr0, schedule=ScheduleConfig("recorded", {"factors": factors})
        )


def run_population(
    opened: OpenStudy,
    options: PopulationOptions,
    source: DataSource,
    device: str | None,
    seed: int,
    trackers: tuple[TrackerSpec, ...] = (),
) -> None:
    """Train one population in the study and store each member as a finished trial, logged to
    `trackers`. Refused (InvalidInputError) before any trial is made when the study cannot
    hold one; its trials are failed if training stops with an error or an interrupt."""
    settings, size = opened.settings, options.size
    assert size is not None, "population mode needs --population"
    _check_population_study(opened, options)
    prepare_trackers(trackers, opened.study.study_name)  # once the study takes the run
    tensors = fold_tensors(settings, settings.load_data(source), str(resolve_device(device)))[0]
    space, study = settings.space, opened.study
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.RandomSampler(seed + existing)  # new draws each run
    with warnings.catch_warnings():  # Optuna's advice to use Study.optimize for heartbeats
        warnings.simplefilter("ignore", UserWarning)
        trials = []
        for _ in range(size):  # constant between exploits, drawn from the space's choices
            study.enqueue_trial({SCHEDULER_PARAM: "constant"}, skip_if_exists=False)
            trials.append(study.ask())
    try:
        configs = [
            space.suggest(trial, epochs=settings.epochs, batch_size=settings.batch_size)
            for trial in trials
        ]
        population = _Population(trials, [_Lineage(config) for config in configs])
        with torch_threads(1):
            training = BatchTraining(
                [BatchMember(c, seed=t.number) for c, t in zip(configs, trials, strict=True)],
                [tensors],
                order_seed=trials[0].number,
                model_spec=settings.model_spec,
            )
            rng = random.Random(seed + existing)
            for results in training.epochs():
                population.record(results)
                epoch = max((r.epoch for r in results.values()), default=0)
                if (epoch + 1) % options.exploit_every or epoch + 1 == settings.epochs:
                    continue
                for target, winner in _pairs(results, rng):
                    lr = population.exploit(target, winner, epoch, rng, space.ranges["lr"])
                    training.exploit(target, winner, lr)
        outcome = training.results()
    except BaseException:
        for trial in trials:
            opened.study.tell(trial, state=TrialState.FAIL)
        raise
    values = [
        (trial._trial_id, r.epoch, _score(r).objective)
        for trial, result in zip(trials, outcome, strict=True)
        for r in result.history
    ]
    written = opened.store.write_epoch(
        values, finished=population.finished(outcome, majority_share(tensors.y_val))
    )
    if trackers:
        Trackers(trackers, study.study_name).log(
            tuple(
                t for t in study.get_trials(deepcopy=False) if trial_id_of(t) in written.finished
            )
        )
    best = max(outcome, key=lambda r: r.history[-1].validation_accuracy if r.history else -1.0)
    print(
        f"population: {size} members, exploits every {options.exploit_every} epochs, "
        f"{population.exploit_count} in all; best final accuracy {best.final_accuracy or 0.0:.4f}",
        file=sys.stderr,
    )


def _check_population_study(opened: OpenStudy, options: PopulationOptions) -> None:
    """A study population mode can train: its own (no TPE trials), one split, one optimizer
    at one mini-batch size (members copy each other's state), exploits that happen."""
    settings, name = opened.settings, opened.study.study_name
    options.check(settings.epochs)
    if any(EXPLOITS_ATTR not in t.user_attrs for t in opened.study.get_trials(deepcopy=False)):
        raise InvalidInputError(
            f"study {name!r} holds trials that are not a population's: population mode needs "
            "a study of its own (--study NAME)"
        )
    if settings.folds > 1:
        raise InvalidInputError(
            f"study {name!r} has {settings.folds} folds; population mode ranks its members on "
            "one split (--folds 1)"
        )
    if "constant" not in settings.space.schedulers:
        raise InvalidInputError(
            "population mode trains a constant lr between exploits: the space's schedulers "
            "must include constant"
        )
    if len(settings.space.optimizers) > 1 or "batch_size" in settings.space.ranges:
        raise InvalidInputError(
            "population mode trains one optimizer at one mini-batch size (members copy each "
            "other's state): list one optimizer and no batch_size range in the space"
        )


@dataclass
class _Population:
    """Each member's trial, lineage, own lrs and exploits, as the run goes."""

    trials: list[optuna.Trial]
    lineages: list[_Lineage]
    own_lrs: list[list[float]] = field(default_factory=list)
    exploits: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.own_lrs = [[] for _ in self.trials]
        self.exploits = [[] for _ in self.trials]

    @property
    def exploit_count(self) -> int:
        return sum(map(len, self.exploits))

    def record(self, results: Mapping[int, EpochResult]) -> None:
        for member, result in results.items():
            self.lineages[member].lrs.append(result.lr)
            self.own_lrs[member].append(result.lr)

    def exploit(
        self, target: int, winner: int, epoch: int, rng: random.Random, lr_range: Range
    ) -> float:
        """`target` takes `winner`'s lineage; its new lr (the winner's, perturbed, kept in the
        space's range) is returned."""
        perturbed = self.lineages[winner].lrs[-1] * rng.choice(PERTURBATIONS)
        lr = min(max(perturbed, lr_range.low), lr_range.high)
        self.lineages[target] = _Lineage(
            self.lineages[winner].config, list(self.lineages[winner].lrs)
        )
        self.exploits[target].append(
            {"epoch": epoch, "from_trial": self.trials[winner].number, "lr": lr}
        )
        return lr

    def finished(self, outcome: list[TrainResult], chance: float) -> list[Finished]:
        return [
            _finished(trial, result.status, result.history, lineage, own, events, chance)
            for trial, result, lineage, own, events in zip(
                self.trials, outcome, self.lineages, self.own_lrs, self.exploits, strict=True
            )
        ]


def _pairs(results: Mapping[int, EpochResult], rng: random.Random) -> list[tuple[int, int]]:
    """(target, source): each member of the bottom quarter and a random one of the top."""
    ranked = sorted(results, key=lambda member: _score(results[member]).objective, reverse=True)
    count = max(1, int(len(ranked) * QUANTILE))
    if len(ranked) < 2 * count:
        return []
    top = ranked[:count]
    return [(target, rng.choice(top)) for target in ranked[-count:]]


def _score(result: EpochResult) -> EpochScores:
    return EpochScores.of([result])


def _finished(
    trial: optuna.Trial,
    status: RunStatus,
    history: tuple[EpochResult, ...],
    lineage: _Lineage,
    own_lrs: list[float],
    exploits: list[dict[str, Any]],
    chance: float,
) -> Finished:
    """COMPLETE with the final epoch's score, or PRUNED (diverged) with its last; the lrs the
    member itself trained with (beside its values: the report draws them), its lineage's
    recipe, and `at_chance` when it learned nothing."""
    completed = status is RunStatus.COMPLETED
    scores = _score(history[-1]) if history else None
    attrs: dict[str, Any] = {
        STOP_REASON_ATTR: "finished" if completed else "diverged",
        EXPLOITS_ATTR: exploits,
        LR_USED_ATTR: [[lr] for lr in own_lrs],
        **(scores.user_attrs(chance) if scores else {}),
    }
    if completed:
        attrs[RECIPE_ATTR] = lineage.recipe().to_json_dict()
    return Finished(
        trial._trial_id,
        TrialState.COMPLETE if completed else TrialState.PRUNED,
        scores.objective if scores else None,
        attrs,
    )
