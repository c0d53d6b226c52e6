"""`sweeps export --top K`: choose among the study's best K trials by their mean validation
accuracy over fresh seeds, so the exported schedule is not the one that drew a lucky seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from sweeps.export import top_trials, trial_config
from sweeps.retrain import SeedScores, score_over_seeds
from sweeps.study import OpenStudy
from trainer.data import cached_dataset
from trainer.training import resolve_device, split_tensors


@dataclass(frozen=True)
class Candidate:
    trial: optuna.trial.FrozenTrial
    scores: SeedScores


def rank_top_trials(
    opened: OpenStudy, *, top_k: int, seeds: int, data: str | None, device: str | None
) -> list[Candidate]:
    """The top K trials retrained over `seeds` seeds on the study's own train/validation
    split, best mean first (the study's order breaks ties)."""
    top = top_trials(opened, top_k)
    dataset = cached_dataset(data)
    opened.settings.check_data(dataset)
    tensors = split_tensors(dataset, opened.settings.validation_rows, str(resolve_device(device)))
    scores = score_over_seeds([trial_config(opened, trial) for trial in top], tensors, seeds)
    candidates = [Candidate(trial, score) for trial, score in zip(top, scores, strict=True)]
    return sorted(candidates, key=lambda candidate: -candidate.scores.mean)


def selection_record(candidates: list[Candidate], seeds: int) -> dict[str, Any]:
    """What the export records about the choice: every candidate's mean and spread."""
    return {
        "method": f"best mean validation accuracy over seeds 0-{seeds - 1} "
        f"among the study's top {len(candidates)} trials",
        "chosen_trial": candidates[0].trial.number,
        "candidates": [
            {
                "trial_number": candidate.trial.number,
                "study_accuracy": candidate.trial.value,
                **candidate.scores.to_json_dict(),
            }
            for candidate in candidates
        ],
    }
