"""Export a study's best schedule as a config file `trainer.load_config` rebuilds exactly."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import optuna
import yaml

from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.sweeps.results.ranking import trial_config
from lrsweep.sweeps.study.attributes import LR_USED_ATTR
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.trainer import InvalidInputError, lr_curve


def trial_lr_curve(opened: OpenStudy, trial: optuna.trial.FrozenTrial) -> list[float]:
    """The lr of each epoch the trial trained: its schedule's curve, or for one that follows
    the accuracy (plateau) the lrs it recorded (the mean over its folds)."""
    used = trial.user_attrs.get(LR_USED_ATTR)
    if used:
        return [statistics.fmean(folds) for folds in used]
    config = trial_config(opened, trial)
    return lr_curve(config.schedule, config.lr, config.epochs)


def export_document(opened: OpenStudy, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The config's JSON form plus where it came from and its per-epoch learning rates."""
    config = trial_config(opened, trial)
    return {
        **config.to_json_dict(),
        "source": {
            "study": opened.study.study_name,
            "trial_number": trial.number,
            "trial_id": trial_id_of(trial),
            # The plain (fold-mean) accuracy; `objective` adds the loss tie-break
            # (study.objective). Studies made before the tie-break stored accuracy as value.
            "validation_accuracy": trial.user_attrs.get("validation_accuracy", trial.value),
            "objective": trial.value,
            "folds": opened.settings.folds,
            "validation_fraction": opened.settings.validation_fraction,
            "split_seed": opened.settings.split_seed,
            "data_sha256": opened.settings.data_sha256,
        },
        **(
            {"data": {**schema, "path": opened.settings.data_path}}
            if (schema := opened.settings.data_schema)
            else {}
        ),
        # The model the trial trained: the built-in MLP, or the user's `module:function`.
        "model": {"factory": opened.settings.model or "builtin:mlp"},
        # plateau: the lrs this trial's accuracies led to; on other data they will differ.
        "lr_curve": trial_lr_curve(opened, trial),
    }


def write_document(document: dict[str, Any], out: Path) -> None:
    """Write JSON (or YAML for .yaml/.yml) atomically, so a crash leaves no half file."""
    if out.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(document, sort_keys=False)
    else:
        text = json.dumps(document, indent=2) + "\n"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)


def write_trials_csv(opened: OpenStudy, out: Path) -> int:
    """Every trial (params, state, value, user attrs) as CSV via pandas; returns the row count."""
    frame = opened.study.trials_dataframe()
    frame.to_csv(out, index=False)
    return len(frame)


def export_path(out: str | None, fmt: str | None) -> Path:
    """The export file: its suffix decides the format, so `trainer.load_config` reads it back."""
    if out is None:
        return Path(f"best.{fmt or 'json'}")
    path = Path(out)
    suffix_format = "yaml" if path.suffix in (".yaml", ".yml") else "json"
    if path.suffix not in (".json", ".yaml", ".yml") or (fmt and fmt != suffix_format):
        raise InvalidInputError(f"--out {out} must end in .json, .yaml or .yml matching --format")
    return path
