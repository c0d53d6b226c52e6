"""Finished trials sent to the experiment trackers people keep sweeps in: MLflow and
TensorBoard, through their own clients, one run per trial with its params and its per-epoch
validation accuracy.

Optuna-integration's callbacks log one value per trial from `study.optimize`; a batched worker
finishes many trials per write and reports every epoch, so each trial is logged here once it
is stored, from what the study holds. A tracker that fails says so once and the sweep goes on:
the study keeps everything.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lrsweep.errors import InvalidInputError
from lrsweep.sweeps.study.attributes import trained_params

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

MLFLOW_BATCH = 1000  # metrics in one `log_batch` call, MLflow's limit
METRIC = "validation accuracy"  # the study's metric name (`set_metric_names`)
FINAL_METRICS = ("validation_accuracy", "validation_loss")  # user attrs of a finished trial
# tracker -> (the module it needs, the extra that installs it, where it writes by default)
TRACKERS: Mapping[str, tuple[str, str, str]] = {
    "mlflow": ("mlflow", "mlflow", "mlruns"),
    "tensorboard": ("tensorboard", "tensorboard", "runs"),
}


@dataclass(frozen=True)
class TrackerSpec:
    """One --log entry: a tracker and where it writes (an MLflow tracking URI or a folder)."""

    name: str
    where: str

    def __str__(self) -> str:
        return f"{self.name}={self.where}"


def parse_trackers(text: str) -> tuple[TrackerSpec, ...]:
    """`mlflow,tensorboard=runs/` -> the trackers, each with its place (default: ./mlruns,
    ./runs, made absolute so launched workers agree); unknown or uninstalled ones refused."""
    specs = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, where = entry.partition("=")
        if name not in TRACKERS:
            raise InvalidInputError(
                f"unknown tracker {name!r} in --log; choose from {', '.join(TRACKERS)}"
            )
        module, extra, default = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise InvalidInputError(
                f"--log {name} needs the {module} package: pip install 'lrsweep[{extra}]'"
            )
        specs.append(TrackerSpec(name, _absolute(where or default)))
    if not specs:
        raise InvalidInputError("--log names no tracker; choose from " + ", ".join(TRACKERS))
    return tuple(specs)


def _absolute(where: str) -> str:
    """A folder made absolute; a URI (`http://...`, `sqlite:///...`) kept as it is."""
    return where if "://" in where else str(Path(where).resolve())


class Tracker(Protocol):
    def __init__(self, where: str, study_name: str) -> None: ...

    def log(self, trial: FrozenTrial) -> None: ...


class Trackers:
    """The trackers of one worker; `log` sends finished trials to each. A tracker that cannot
    be set up or fails says so once and is left out: the sweep goes on."""

    def __init__(self, specs: Iterable[TrackerSpec], study_name: str) -> None:
        self._trackers: dict[TrackerSpec, Tracker] = {}
        for spec in specs:
            try:
                self._trackers[spec] = BUILDERS[spec.name](spec.where, study_name)
            except Exception as exc:
                _said_stopped(spec, exc)

    def log(self, trials: tuple[FrozenTrial, ...]) -> None:
        for spec, tracker in list(self._trackers.items()):
            try:
                for trial in trials:
                    tracker.log(trial)
            except Exception as exc:  # a tracker's outage must not stop the sweep
                del self._trackers[spec]
                _said_stopped(spec, exc)


def prepare_trackers(specs: Iterable[TrackerSpec], study_name: str) -> None:
    """Set each tracker up once before workers start (MLflow's experiment is made here, not
    raced by the workers); one that cannot be is refused in one line."""
    for spec in specs:
        try:
            BUILDERS[spec.name](spec.where, study_name)
        except Exception as exc:
            raise InvalidInputError(f"--log {spec.name}: {_first_line(exc)}") from exc


def _said_stopped(spec: TrackerSpec, exc: Exception) -> None:
    print(
        f"--log {spec.name}: stopped logging ({_first_line(exc)}); the study keeps every trial",
        file=sys.stderr,
    )


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _per_epoch(trial: FrozenTrial) -> list[tuple[int, float]]:
    return sorted(trial.intermediate_values.items())


def _final(trial: FrozenTrial) -> dict[str, float]:
    return {key: float(trial.user_attrs[key]) for key in FINAL_METRICS if key in trial.user_attrs}


class MlflowTracker:
    """An MLflow experiment named after the study; a run per trial named `trial N`, tagged
    with the trial's number, state and the study, its params and per-epoch accuracy."""

    def __init__(self, uri: str, study_name: str) -> None:
        if "://" not in uri:  # a local folder: MLflow 3 keeps file stores behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(uri).as_uri()
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=uri)
        self._experiment = self._experiment_id(study_name)
        self._study = study_name

    def _experiment_id(self, name: str) -> str:
        """The study's experiment (restored if it was deleted), else a new one. The launcher
        makes it before its workers start (`prepare_trackers`); workers started on their own
        (other machines, SLURM tasks) may race to make it, and the losers take the winner's."""
        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return str(self._client.create_experiment(name))
            except Exception:
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self._client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    def log(self, trial: FrozenTrial) -> None:
        from mlflow.entities import Metric, Param

        run = self._client.create_run(
            self._experiment,
            run_name=f"trial {trial.number}",
            tags={
                "optuna.study": self._study,
                "optuna.trial_number": str(trial.number),
                "optuna.state": trial.state.name,
            },
        )
        stamp = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else 0
        metrics = [Metric(METRIC, value, stamp, epoch) for epoch, value in _per_epoch(trial)]
        last = max(trial.intermediate_values, default=0)
        metrics += [Metric(key, value, stamp, last) for key, value in _final(trial).items()]
        params = [Param(key, str(value)) for key, value in trained_params(trial).items()]
        self._client.log_batch(run.info.run_id, params=params)
        for start in range(0, len(metrics), MLFLOW_BATCH):  # MLflow takes 1,000 per call
            self._client.log_batch(run.info.run_id, metrics=metrics[start : start + MLFLOW_BATCH])
        status = "FINISHED" if trial.state.name == "COMPLETE" else "KILLED"  # pruned: stopped
        self._client.set_terminated(run.info.run_id, status)


class TensorboardTracker:
    """A folder per trial under `<where>/<study>/trial-NNNNN` (the study's name with anything
    but letters, digits, `.`, `-` and `_` replaced by `_`): the per-epoch accuracy as a
    scalar, the params and final accuracy in the HParams plugin (compare trials there)."""

    def __init__(self, where: str, study_name: str) -> None:
        folder = re.sub(r"[^\w.-]+", "_", study_name).strip(".") or "study"  # never `..` or `/x`
        self._root = Path(where) / folder

    def log(self, trial: FrozenTrial) -> None:
        from torch.utils.tensorboard import SummaryWriter

        params: dict[str, Any] = trained_params(trial)
        final = {f"hparam/{key}": value for key, value in _final(trial).items()}
        with SummaryWriter(log_dir=str(self._root / f"trial-{trial.number:05d}")) as writer:
            for epoch, value in _per_epoch(trial):
                writer.add_scalar(METRIC, value, epoch)
            writer.add_hparams(params, final, run_name=".")


BUILDERS: Mapping[str, type[Tracker]] = {
    "mlflow": MlflowTracker,
    "tensorboard": TensorboardTracker,
}
