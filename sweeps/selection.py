"""The robust choice (what `sweeps run` exports, and `sweeps export --top K`): retrain the
study's best K trials over fresh seeds on every validation split of the study (its folds),
and choose the best mean, so the exported schedule is not the one that drew a lucky seed or
lucky validation rows. The choice is recorded in the study, for `status` and the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from sweeps.export import top_trials, trial_config
from sweeps.retrain import SeedScores, score_over_seeds
from sweeps.study import OpenStudy, fold_tensors
from trainer.data import cached_dataset
from trainer.training import resolve_device


@dataclass(frozen=True)
class Candidate:
    trial: optuna.trial.FrozenTrial
    scores: SeedScores


def rank_top_trials(
    opened: OpenStudy, *, top_k: int, seeds: int, data: str | None, device: str | None
) -> list[Candidate]:
    """The top K trials retrained over `seeds` seeds on the study's own validation splits,
    best mean objective first (mean accuracy, ties broken by loss; then the study's order)."""
    top = top_trials(opened, top_k)
    dataset = cached_dataset(data)
    opened.settings.check_data(dataset)
    folds = fold_tensors(opened.settings, dataset, str(resolve_device(device)))
    scores = score_over_seeds([trial_config(opened, trial) for trial in top], folds, seeds)
    candidates = [Candidate(trial, score) for trial, score in zip(top, scores, strict=True)]
    return sorted(candidates, key=lambda candidate: -candidate.scores.mean_objective)


SELECTION_ATTR = "lrsweep.selection"


def selection_record(opened: OpenStudy, candidates: list[Candidate], seeds: int) -> dict[str, Any]:
    """What the export records about the choice: every candidate's mean and spread, the
    chosen trial and the study's raw best (its single-run best trial)."""
    return {
        "method": f"best mean validation accuracy over seeds 0-{seeds - 1} and the study's "
        f"validation splits, among its top {len(candidates)} trials",
        "chosen_trial": candidates[0].trial.number,
        "raw_best_trial": min(candidates, key=_study_rank).trial.number,
        "finished_trials": _finished_count(opened),
        "candidates": [
            {
                "trial_number": candidate.trial.number,
                "study_accuracy": candidate.trial.value,
                **candidate.scores.to_json_dict(),
            }
            for candidate in candidates
        ],
    }


def _study_rank(candidate: Candidate) -> tuple[float, int]:
    """The study's own order of the candidates (`export.top_trials`): best value, earliest."""
    return (-float(candidate.trial.value or 0.0), candidate.trial.number)


def _finished_count(opened: OpenStudy) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(opened.study.get_trials(deepcopy=False, states=states))


def record_selection(opened: OpenStudy, record: dict[str, Any]) -> None:
    """Keep the choice in the study, where `sweeps status` and the report show it."""
    opened.study.set_user_attr(SELECTION_ATTR, record)
