"""The baseline: the tutorial-style hand-written Optuna loop, one model per trial.

`python -m bench.handwritten --storage URL --study NAME --trials N --seed S` runs one worker
process: Optuna's default `TPESampler()` (seeded; not `multivariate=True, group=True`, which the
service does not use either), `MedianPruner`, `trial.report` + `trial.should_prune` every epoch,
the storage URL given to Optuna as a plain string (its usual cached RDB storage): what a user
writes from the tutorial. Same data, split, search space and training loop as the service, so
only the orchestration differs.
"""

from __future__ import annotations

import argparse

import optuna
import torch

from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer.data import cached_dataset
from lrsweep.trainer.training import EpochResult, RunStatus, Tensors, split_tensors, train


def objective_for(tensors: Tensors, settings: StudySettings):  # type: ignore[no-untyped-def]
    def objective(trial: optuna.Trial) -> float:
        config = settings.space.suggest(
            trial, epochs=settings.epochs, batch_size=settings.batch_size
        )

        def report(result: EpochResult) -> bool:
            trial.report(result.validation_accuracy, result.epoch)
            return trial.should_prune()

        result = train(config, tensors, seed=trial.number, on_epoch=report)
        if result.status is not RunStatus.COMPLETED:
            raise optuna.TrialPruned()
        assert result.final_accuracy is not None
        return result.final_accuracy

    return objective


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    dataset = cached_dataset(args.data)
    settings = StudySettings(data_sha256=dataset.sha256).fixed_at_creation(dataset)
    tensors = split_tensors(dataset, settings.validation_rows, "cpu")
    study = optuna.create_study(
        storage=args.storage,
        study_name=args.study,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=settings.build_pruner(),  # MedianPruner with the service's default arguments
        load_if_exists=True,
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(
        objective_for(tensors, settings),
        callbacks=[optuna.study.MaxTrialsCallback(args.trials, states=finished)],
    )


if __name__ == "__main__":
    main()
