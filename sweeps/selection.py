"""The robust choice (what `sweeps run` exports, and `sweeps export --top K`): retrain the
study's best K trials over fresh seeds on the study's rows split again into stratified folds
(drawn with the study's split seed + 1), and choose the best mean, so the exported schedule is
not the one that drew a lucky seed or a lucky split: the study's own folds chose the
candidates, so scoring them again on those folds would reward the same luck. The rows are the
same ones, so re-drawn folds reduce that luck, not remove it (bench/NOTES.md, step 11). The
choice is recorded in the study, for `status` and the report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import optuna

from sweeps.export import top_trials, trial_config
from sweeps.retrain import SeedScores, score_over_seeds
from sweeps.settings import StudySettings
from sweeps.study import OpenStudy, fold_tensors
from trainer.data import Dataset, DataSource, smallest_class, stratified_folds
from trainer.training import resolve_device


@dataclass(frozen=True)
class Candidate:
    trial: optuna.trial.FrozenTrial
    scores: SeedScores


@dataclass(frozen=True)
class Ranking:
    """The candidates, best mean objective first, and what they were retrained on."""

    candidates: list[Candidate]
    seeds: int
    folds: int

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]


def rank_top_trials(
    opened: OpenStudy, *, top_k: int, seeds: int, data: DataSource, device: str | None
) -> Ranking:
    """The top K trials retrained over `seeds` seeds on `reevaluation_folds`, best mean
    objective first (mean accuracy, ties broken by loss; then the study's order)."""
    top = top_trials(opened, top_k)
    dataset = opened.settings.load_data(data)
    settings = reevaluation_folds(opened.settings, dataset)
    folds = fold_tensors(settings, dataset, str(resolve_device(device)))
    configs = [trial_config(opened, trial) for trial in top]
    scores = score_over_seeds(configs, folds, seeds, opened.settings.model_spec)
    candidates = [Candidate(trial, score) for trial, score in zip(top, scores, strict=True)]
    ranked = sorted(candidates, key=lambda candidate: -candidate.scores.mean_objective)
    return Ranking(ranked, seeds, settings.folds)


SELECTION_ATTR = "lrsweep.selection"
REEVALUATION_FOLDS = 5  # for a study of one split; a cross-validated study keeps its count


def reevaluation_folds(settings: StudySettings, dataset: Dataset) -> StudySettings:
    """The study's settings with its rows split into folds anew, for re-ranking candidates. A
    study of one split is re-ranked on 5 folds, or as many as its smallest class has rows."""
    count = settings.folds
    if count == 1:
        count = min(REEVALUATION_FOLDS, smallest_class(dataset))
    rows = stratified_folds(dataset, count, settings.split_seed + 1)
    return replace(settings, folds=count, fold_rows=rows)


def selection_record(opened: OpenStudy, ranking: Ranking) -> dict[str, Any]:
    """What the export records about the choice: every candidate's mean and spread, the
    chosen trial, the study's raw best (its single-run best trial) and the folds used."""
    candidates = ranking.candidates
    return {
        "method": f"best mean validation accuracy over seeds 0-{ranking.seeds - 1} on "
        f"{ranking.folds} re-drawn stratified folds, among the study's top {len(candidates)} "
        "trials",
        "chosen_trial": ranking.chosen.trial.number,
        "raw_best_trial": min(candidates, key=_study_rank).trial.number,
        "finished_trials": _finished_count(opened),
        "folds": ranking.folds,
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
