"""What a study holds: trials by state, the best trial, its config (for `sweeps status`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lrsweep.storage.trial_store import finished_count
from lrsweep.sweeps.study.attributes import (
    AT_CHANCE_ATTR,
    SELECTION_ATTR,
    STOP_REASON_ATTR,
    trained_params,
)
from lrsweep.sweeps.study.open import OpenStudy


def summarize(opened: OpenStudy) -> dict[str, Any]:
    """A JSON-ready summary; `best` is None while no trial has completed."""
    trials = opened.study.get_trials(deepcopy=False)
    by_state = Counter(trial.state.name for trial in trials)
    diverged = sum(1 for t in trials if t.user_attrs.get(STOP_REASON_ATTR) == "diverged")
    at_chance = sum(1 for t in trials if t.user_attrs.get(AT_CHANCE_ATTR))
    # Optuna's own choice, so status, export and `optuna best-trial` always name the same trial.
    best = opened.study.best_trial if by_state["COMPLETE"] else None
    return {
        "study": opened.study.study_name,
        "trials": len(trials),
        "by_state": dict(sorted(by_state.items())),
        "diverged": diverged,
        "at_chance": at_chance,
        "best": None
        if best is None
        else {
            "trial_number": best.number,
            "value": best.value,
            "validation_accuracy": best.user_attrs.get("validation_accuracy", best.value),
            "params": trained_params(best),
        },
        "settings": {
            "pruner": opened.settings.pruner_description(),
            "epochs": opened.settings.epochs,
            "folds": opened.settings.folds,
            "schedulers": list(opened.settings.space.schedulers),
            "data": (schema := opened.settings.schema)
            and {
                "features": schema.n_features,
                "classes": list(schema.classes),
                "label_column": schema.label_column,
                "preprocessing": schema.preprocessing.describe(),
            },
        },
        "choice": _choice(opened.study.user_attrs.get(SELECTION_ATTR), finished_count(by_state)),
    }


def _choice(record: dict[str, Any] | None, finished: int) -> dict[str, Any] | None:
    """The robust choice (`results.selection`): the chosen and the raw best trial, each with its
    mean and spread over the retraining seeds; stale once the study has more finished trials
    than when it was made."""
    if record is None or record.get("raw_best_trial") is None:
        return None
    by_number = {c["trial_number"]: c for c in record["candidates"]}

    def spread(number: int) -> dict[str, Any]:
        candidate = by_number[number]
        return {
            "trial_number": number,
            "mean_accuracy": candidate["mean_accuracy"],
            "std_accuracy": candidate["std_accuracy"],
        }

    return {
        "method": record["method"],
        "chosen": spread(record["chosen_trial"]),
        "raw_best": spread(record["raw_best_trial"]),
        "stale": finished > record.get("finished_trials", finished),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human-readable lines."""
    states = ", ".join(f"{n} {state.lower()}" for state, n in summary["by_state"].items())
    lines = [
        f"study {summary['study']}: {summary['trials']} trials ({states or 'none'}; "
        f"{summary['diverged']} diverged"
        + (
            f"; {summary['at_chance']} at chance, no better than the most common class"
            if summary.get("at_chance")
            else ""
        )
        + ")",
        f"pruner {_call(summary['settings']['pruner'])}, {summary['settings']['epochs']} epochs, "
        f"schedulers {', '.join(summary['settings']['schedulers'])}",
    ]
    data = summary["settings"]["data"]
    if data:
        lines.append(
            f"data: {data['features']} features, classes {', '.join(data['classes'])} "
            f"(label column {data['label_column']!r}; preprocessing {data['preprocessing']})"
        )
    best = summary["best"]
    if best is None:
        lines.append("best: no completed trial yet")
    else:
        params = ", ".join(f"{k}={_short(v)}" for k, v in best["params"].items())
        accuracy = best["validation_accuracy"]
        lines.append(f"best: trial {best['trial_number']} accuracy {accuracy:.4f} ({params})")
    choice = summary["choice"]
    if choice is not None:
        chosen, raw = choice["chosen"], choice["raw_best"]
        lines.append(
            f"chosen: trial {chosen['trial_number']} {_spread(chosen)}; the raw best trial "
            f"{raw['trial_number']} {_spread(raw)} ({choice['method']}"
            + (
                "; made before the latest trials: run `sweeps export --top K` again)"
                if choice["stale"]
                else ")"
            )
        )
    return "\n".join(lines)


def _call(spec: dict[str, Any]) -> str:
    """A pruner spec as the constructor call it stands for."""
    arguments = ", ".join(f"{key}={value}" for key, value in spec.items() if key != "class")
    return f"{spec['class']}({arguments})"


def _spread(candidate: dict[str, Any]) -> str:
    return f"{candidate['mean_accuracy']:.4f} +/- {candidate['std_accuracy']:.4f}"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
