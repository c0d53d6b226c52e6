"""How long one worker runs and on what: checked by `sweeps launch` before any worker starts, so
this module imports no torch (the launcher does not train)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrsweep.sweeps.worker.history import DEFAULT_SAMPLER_HISTORY
from lrsweep.trainer import InvalidInputError
from lrsweep.trainer.data import DataSource

if TYPE_CHECKING:
    import torch

MAX_TRIALS_PER_BATCH_CPU, MAX_TRIALS_PER_BATCH_GPU = 64, 4096
# Fewer models than this in a batch leave the engine's per-step overhead unshared. On 20,000
# rows, one split, 50 trials, one worker: batches of 4, 8, 16 and 25 trials reached the same
# best (0.9876-0.9878, 3 seeds) in 24.6, 15.3, 11.6 and 9.3 s (bench/NOTES.md, step 20).
MIN_MODELS_PER_BATCH = 16


@dataclass(frozen=True)
class WorkerOptions:
    """How long one worker runs and on what.

    Args:
        target_trials: stop once the study has this many finished trials (None: no limit).
        timeout_s: stop claiming new trials after this many seconds (None: no limit).
        data: the CSV and its label column (default: ionosphere, the study's label column).
        device: "cpu", "cuda", "cuda:N" or None for automatic.
        trials_per_batch: trials trained together as one vectorized model (None: chosen
            from the device and the target).
        sampler_history: most finished trials TPE fits on (the best half and the most recent).
        threads: torch CPU threads; 1 is fastest for this small model.
        quiet: print nothing per batch.
    """

    target_trials: int | None = None
    timeout_s: float | None = None
    data: DataSource = DataSource()
    device: str | None = None
    trials_per_batch: int | None = None
    sampler_history: int = DEFAULT_SAMPLER_HISTORY
    threads: int = 1
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.target_trials is not None and self.target_trials < 1:
            raise InvalidInputError(f"--trials must be >= 1; got {self.target_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidInputError(f"--timeout must be > 0 seconds; got {self.timeout_s}")
        if self.trials_per_batch is not None and self.trials_per_batch < 1:
            raise InvalidInputError(
                f"--trials-per-batch must be >= 1; got {self.trials_per_batch}"
            )
        if self.sampler_history < 10:
            raise InvalidInputError(f"--sampler-history must be >= 10; got {self.sampler_history}")
        if self.threads < 1:
            raise InvalidInputError(f"--threads must be >= 1; got {self.threads}")

    def trials_per_batch_for(self, device: torch.device, folds: int) -> int:
        """Explicit, else large on a GPU and enough rounds (about 16) for TPE and the pruner,
        but at least MIN_MODELS_PER_BATCH models (a trial trains one per fold), and never
        more trials than the target."""
        if self.trials_per_batch is not None:
            return self.trials_per_batch
        cap = MAX_TRIALS_PER_BATCH_GPU if device.type == "cuda" else MAX_TRIALS_PER_BATCH_CPU
        if self.target_trials is None:
            return cap
        fill = -(-MIN_MODELS_PER_BATCH // folds)
        return max(1, min(cap, self.target_trials, max(self.target_trials // 16, fill)))
