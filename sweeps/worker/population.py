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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from lrsweep.storage.bulk import Finished
from lrsweep.sweeps.study.attributes import RECIPE_ATTR, STOP_REASON_ATTR
from lrsweep.sweeps.study.objective import EpochScores
from lrsweep.sweeps.study.open import OpenStudy, fold_tensors
from lrsweep.sweeps.worker.options import PopulationOptions
from lrsweep.trainer import InvalidInputError, ScheduleConfig, TrainConfig
from lrsweep.trainer.data import DataSource
from lrsweep.trainer.training import EpochResult, RunStatus, resolve_device, torch_threads
from lrsweep.trainer.vectorized import BatchMember, BatchTraining

QUANTILE = 0.25  # the bottom quarter copies the top quarter
PERTURBATIONS = (0.8, 1.25)
EXPLOITS_ATTR = "exploits"


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
) -> None:
    """Train one population in the study and store each member as a finished trial."""
    settings = opened.settings
    options.check(settings.epochs)
    space = settings.space
    if len(space.optimizers) > 1 or "batch_size" in space.ranges:
        raise InvalidInputError(
            "population mode trains one optimizer at one mini-batch size (members copy each "
            "other's state): list one optimizer and no batch_size range in the space"
        )
    size = options.size
    assert size is not None, "population mode needs --population"
    space = replace(space, schedulers=("constant",))
    opened.study.sampler = optuna.samplers.RandomSampler(seed)
    trials = [opened.study.ask() for _ in range(size)]
    configs = [
        space.suggest(trial, epochs=settings.epochs, batch_size=settings.batch_size)
        for trial in trials
    ]
    lineages = [_Lineage(config) for config in configs]
    exploits: list[list[dict[str, Any]]] = [[] for _ in trials]
    dataset = settings.load_data(source)
    tensors = fold_tensors(settings, dataset, str(resolve_device(device)))[0]
    members = [BatchMember(c, seed=t.number) for c, t in zip(configs, trials, strict=True)]
    rng, lr_range = random.Random(seed), space.ranges["lr"]
    with torch_threads(1):
        training = BatchTraining(
            members, [tensors], order_seed=trials[0].number, model_spec=settings.model_spec
        )
        for results in training.epochs():
            for member, result in results.items():
                lineages[member].lrs.append(result.lr)
            epoch = max((r.epoch for r in results.values()), default=0)
            if (epoch + 1) % options.exploit_every or epoch + 1 == settings.epochs:
                continue
            for target, winner in _pairs(results, rng):
                lr = lineages[winner].lrs[-1] * rng.choice(PERTURBATIONS)
                lr = min(max(lr, lr_range.low), lr_range.high)
                training.exploit(target, winner, lr)
                lineages[target] = _Lineage(lineages[winner].config, list(lineages[winner].lrs))
                exploits[target].append(
                    {"epoch": epoch, "from_trial": trials[winner].number, "lr": lr}
                )
    outcome = training.results()
    values = [
        (trial._trial_id, r.epoch, _score(r).objective)
        for trial, result in zip(trials, outcome, strict=True)
        for r in result.history
    ]
    finished = [
        _finished(trial, result.status, result.history, lineage, events)
        for trial, result, lineage, events in zip(trials, outcome, lineages, exploits, strict=True)
    ]
    opened.store.write_epoch(values, finished=finished)
    best = max(outcome, key=lambda r: r.history[-1].validation_accuracy if r.history else -1.0)
    print(
        f"population: {size} members, exploits every {options.exploit_every} epochs, "
        f"{sum(map(len, exploits))} in all; best final accuracy "
        f"{best.final_accuracy or 0.0:.4f}",
        file=sys.stderr,
    )


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
    exploits: list[dict[str, Any]],
) -> Finished:
    """COMPLETE with the final epoch's score, or PRUNED (diverged) with its last."""
    completed = status is RunStatus.COMPLETED
    scores = _score(history[-1]) if history else None
    attrs: dict[str, Any] = {
        STOP_REASON_ATTR: "finished" if completed else "diverged",
        EXPLOITS_ATTR: exploits,
        **(scores.user_attrs() if scores else {}),
    }
    if completed:
        attrs[RECIPE_ATTR] = lineage.recipe().to_json_dict()
    return Finished(
        trial._trial_id,
        TrialState.COMPLETE if completed else TrialState.PRUNED,
        scores.objective if scores else None,
        attrs,
    )
