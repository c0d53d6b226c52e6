"""Which trial is exported, and the file written: the study's single best, or the robust choice
(`results.selection`) among the best K with --top, and after a sweep among those the study's
rows cannot tell from the best, as many as and over the seeds that fit its time budget."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from tqdm import tqdm

from lrsweep.errors import InvalidInputError, require_positive
from lrsweep.sweeps.flags import option
from lrsweep.sweeps.results.export import export_document, write_document
from lrsweep.sweeps.results.ranking import best_trial, top_trials, trial_config
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.study.options import DataOptions
from lrsweep.sweeps.worker.progress import phase_bar

if TYPE_CHECKING:
    from lrsweep.sweeps.results.selection import SweepPace

DEFAULT_TOP = 10  # after a sweep: the candidates a 95% test is run on
DEFAULT_CHOICE_SEEDS = 5


@dataclass(frozen=True)
class ChoiceOptions:
    """How the exported trial is chosen.

    Args:
        top: candidates K (None: after a sweep, those of the top DEFAULT_TOP the study's rows
            cannot tell from the best and one seed retrains within the budget; otherwise the
            study's single best trial, no retraining).
        seeds: seeds each candidate is retrained with (None: up to DEFAULT_CHOICE_SEEDS, as
            many as fit the budget after a sweep; needs `top` otherwise).
        after_sweep: chosen right after a sweep, whose pace sets the budget.
    """

    top: int | None = option(
        None,
        "--top",
        parse=int,
        metavar="K",
        help=f"retrain the best K trials and export the best mean (default after `run`: of "
        f"the top {DEFAULT_TOP}, those a 95%% test cannot tell from the best and one seed "
        "retrains in a quarter of the sweep's time; for `export`: the single best trial, no "
        "retraining)",
    )
    seeds: int | None = option(
        None,
        "--seeds",
        parse=int,
        metavar="S",
        help=f"seeds per candidate (default {DEFAULT_CHOICE_SEEDS}; after `run`, as many of "
        "them as fit in a quarter of the sweep's time; `export` needs --top with it)",
    )
    after_sweep: bool = False

    def __post_init__(self) -> None:
        if not self.after_sweep and self.top is None and self.seeds is not None:
            raise InvalidInputError("--seeds needs --top K (the robust choice among the best K)")
        for flag, value in (("--top", self.top), ("--seeds", self.seeds)):
            if value is not None:
                require_positive(flag, value)


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the chosen trial and the file."""

    trial: optuna.trial.FrozenTrial
    path: Path


def export_choice(
    opened: OpenStudy,
    out: Path,
    choice: ChoiceOptions = ChoiceOptions(),
    data: DataOptions = DataOptions(),
    device: str | None = None,
    sweep: SweepPace | None = None,
) -> Exported:
    """Write the chosen trial's config to `out`; `sweep`, the pace of the sweep just run, sets
    the robust choice's budget (a quarter of its time; none when it trained nothing) unless
    --seeds says otherwise."""
    if choice.top is None and sweep is None:
        return _export_as_it_is(opened, best_trial(opened), out)
    from lrsweep.sweeps.results.selection import robust_choice_budget

    budget_s = None
    if choice.seeds is None and sweep is not None and sweep.model_epochs:  # a sweep's pace
        budget_s = robust_choice_budget(sweep.seconds)
    if choice.top is not None:
        candidates = top_trials(opened, choice.top)
        why = f"--top {choice.top} leaves one candidate, nothing to rank it against"
    else:
        assert sweep is not None
        candidates, why = _default_candidates(opened, data, sweep, budget_s)
    if len(candidates) < 2 and choice.seeds is None:  # retraining one alone would rank nothing
        return _export_as_it_is(opened, candidates[0], out, why)
    return _export_robust_choice(opened, out, candidates, choice, data, device, budget_s)


def _default_candidates(
    opened: OpenStudy, data: DataOptions, sweep: SweepPace, budget_s: float | None
) -> tuple[list[optuna.trial.FrozenTrial], str]:
    """The top trials the study's rows cannot tell from the best, as many as one seed
    retrains within `budget_s` (the best alone when fewer than 2 fit), said in a note; and
    why, should one be left."""
    from lrsweep.sweeps.results.selection import (
        affordable_candidates,
        not_told_apart,
        reevaluation_folds,
    )

    top = top_trials(opened, DEFAULT_TOP)
    rows = opened.settings.validation_row_count
    candidates = not_told_apart(top, rows)
    note = f"those a 95% test on {rows} validation rows cannot tell from the best"
    why = (
        "the study has one completed trial"
        if len(top) == 1
        else "the study's rows tell its best trial apart from the rest of its top"
    )
    if budget_s is not None and len(candidates) > 1 and sweep.model_epochs:
        dataset = opened.settings.load_data(data.source)
        folds = reevaluation_folds(opened.settings, dataset).folds
        each_s = sweep.seconds_per_candidate(folds, opened.settings.epochs)
        affordable = affordable_candidates(candidates, each_s, budget_s)
        note += f"; {len(affordable)} of them fit one seed in {budget_s:.1f} s at the sweep's pace"
        if len(affordable) < 2:
            why = (
                f"retraining 2 candidates once would take about {2 * each_s:.1f} s, over the "
                f"robust choice's budget of {budget_s:.1f} s (a quarter of the sweep)"
            )
        candidates = affordable or candidates[:1]
    print(
        f"note: robust choice among {len(candidates)} of the top {len(top)} trials ({note})",
        file=sys.stderr,
    )
    return candidates, why


def export_recorded_choice(opened: OpenStudy, out: Path) -> Exported | None:
    """The choice a finished sweep recorded in the study, written to `out` without retraining
    anything; None when there is none, or the study has changed since (more trials)."""
    from lrsweep.sweeps.results.ranking import finished_trials
    from lrsweep.sweeps.study.attributes import SELECTION_ATTR

    record = opened.study.user_attrs.get(SELECTION_ATTR)
    if not record or record.get("finished_trials") != finished_trials(opened.study):
        return None
    trial = opened.study.trials[record["chosen_trial"]]
    write_document({**export_document(opened, trial), "selection": record}, out)
    print(
        f"exported trial {trial.number} (accuracy {trial.value:.4f}; the study's recorded "
        f"choice, {record['method']}: nothing retrained) to {out}"
    )
    return Exported(trial, out)


def _export_as_it_is(
    opened: OpenStudy, trial: optuna.trial.FrozenTrial, out: Path, why: str | None = None
) -> Exported:
    """A trial exported without retraining; with `why`, that choice recorded as the selection
    in the file and the study."""
    document = export_document(opened, trial)
    if why is not None:
        from lrsweep.sweeps.results.selection import (  # imports torch
            no_retraining_record,
            record_selection,
        )

        record = no_retraining_record(opened, trial, why)
        record_selection(opened, record)
        document = {**document, "selection": record}
    write_document(document, out)
    print(
        f"exported trial {trial.number} (accuracy {trial.value:.4f}{'; ' + why if why else ''}) "
        f"to {out}"
    )
    return Exported(trial, out)


def _export_robust_choice(
    opened: OpenStudy,
    out: Path,
    trials: list[optuna.trial.FrozenTrial],
    choice: ChoiceOptions,
    data: DataOptions,
    device: str | None,
    budget_s: float | None,
) -> Exported:
    from lrsweep.sweeps.results.retrain import OverBudget
    from lrsweep.sweeps.results.selection import (
        rank_top_trials,
        record_selection,
        selection_record,
    )

    seeds = DEFAULT_CHOICE_SEEDS if choice.seeds is None else choice.seeds

    def said(seed: int, seconds: float) -> None:
        each = seconds / (seed + 1)
        more = seeds - seed - 1
        if budget_s is not None:  # a seed starts only when it would end within the budget
            more = min(more, max(0, int(budget_s // each) - seed - 1))
        tqdm.write(  # above the bar, when one is drawn
            f"robust choice: seed {seed + 1} of {'up to ' if budget_s else ''}{seeds} "
            f"retrained ({len(trials)} candidates), {seconds:.1f} s"
            + ("" if budget_s is None else f" of a {budget_s:.1f} s budget")
            + (
                f"; about {more * each:.0f} s left ({more} more seed{'s' if more > 1 else ''})"
                if more
                else "; done"
            ),
            file=sys.stderr,
        )

    epochs = max(trial_config(opened, trial).epochs for trial in trials)
    try:
        with phase_bar("robust choice", seeds * epochs, "epoch") as advance:
            ranking = rank_top_trials(
                opened,
                trials,
                seeds=seeds,
                data=data.source,
                device=device,
                budget_s=budget_s,
                first_seed_in_budget=choice.top is None,  # K given: at least one seed of the K
                on_seed=said,
                on_epoch=advance,
            )
    except OverBudget as over:
        why = (
            f"one seed of {len(trials)} candidates would take about {over.predicted_s:.1f} s "
            f"(measured on its first two epochs), over the robust choice's budget of "
            f"{budget_s:.1f} s"
        )
        print(f"note: robust choice skipped: {why}", file=sys.stderr)
        return _export_as_it_is(opened, trials[0], out, why)
    chosen = ranking.chosen
    spread = (
        "with seed 0 (one seed: no spread)"
        if ranking.seeds == 1
        else f"+/- {chosen.scores.std:.4f} over {ranking.seeds} seeds"
    )
    record = selection_record(opened, ranking)
    record_selection(opened, record)
    write_document({**export_document(opened, chosen.trial), "selection": record}, out)
    print(
        f"exported trial {chosen.trial.number} (study accuracy {chosen.trial.value:.4f}; "
        f"{chosen.scores.mean:.4f} {spread} on {ranking.folds} folds, best mean of "
        f"{len(ranking.candidates)} candidates) to {out}"
    )
    return Exported(chosen.trial, out)
