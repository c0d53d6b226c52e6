"""How long one worker runs and on what: checked by `sweeps launch` before any worker starts, so
this module imports no torch (the launcher does not train). Each field is its flag too
(`sweeps.flags`): a new worker option is one field here, and launched workers get it through
`to_argv`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrsweep.errors import InvalidInputError, require_positive
from lrsweep.sweeps.flags import nested, option, to_argv
from lrsweep.sweeps.study.options import DataOptions
from lrsweep.sweeps.worker.history import DEFAULT_SAMPLER_HISTORY
from lrsweep.sweeps.worker.trackers import TrackerSpec, parse_trackers

if TYPE_CHECKING:
    import torch

MAX_TRIALS_PER_BATCH_CPU, MAX_TRIALS_PER_BATCH_GPU = 64, 4096
# Fewer models than this in a batch leave the engine's per-step overhead unshared. On 20,000
# rows, one split, 50 trials, one worker: batches of 4, 8, 16 and 25 trials reached the same
# best (0.9876-0.9878, 3 seeds) in 24.6, 15.3, 11.6 and 9.3 s (bench/NOTES.md, step 20).
MIN_MODELS_PER_BATCH = 16
MIN_SAMPLER_HISTORY = 10  # TPE's startup trials: fewer and it would never model anything
MAX_SEED = 2**31  # NumPy seeds are below 2**32, and launch adds the worker index
MAX_PROPOSAL_PROCESSES = 4  # 4096 proposals in about 1.3 s on 4 cores, about a batch's training


@dataclass(frozen=True)
class WorkerOptions:
    """How long one worker runs and on what.

    Args:
        target_trials: stop once the study has this many finished trials (None: no limit).
        timeout_s: stop claiming new trials after this many seconds (None: no limit).
        data: the CSV and its label column (default: ionosphere, the study's label column).
        device: "cpu", "cuda", "cuda:N" or None for automatic.
        seed: the sampler's seed (None: random); `launch` adds each worker's index.
        trials_per_batch: trials trained together as one vectorized model (None: chosen
            from the device and the target).
        sampler_history: most finished trials TPE fits on (the best half and the most recent).
        quiet: print nothing per batch.
        threads: torch CPU threads; 1 is fastest for this small model.
        proposal_processes: processes proposing the next batch while this one trains; 0
            proposes between batches (None: `proposal_processes_for`;
            `sweeps.worker.prefetch`).
        trackers: experiment trackers each finished trial is logged to (`worker.trackers`).
    """

    target_trials: int | None = option(
        None,
        "--trials",
        parse=int,
        metavar="N",
        help="finished trials in the whole study to reach",
    )
    timeout_s: float | None = option(
        None,
        "--timeout",
        parse=float,
        metavar="SECONDS",
        help="stop starting trials after this long",
    )
    data: DataOptions = nested(DataOptions)
    device: str | None = option(
        None, "--device", help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    seed: int | None = option(
        None, "--seed", parse=int, help="sampler seed (launch adds the worker index)"
    )
    trials_per_batch: int | None = option(
        None,
        "--trials-per-batch",
        "--batch-size-trials",  # its name before 0.2, kept for existing scripts
        parse=int,
        metavar="K",
        help="trials trained together as one vectorized model (default: from device and --trials)",
    )
    sampler_history: int = option(
        DEFAULT_SAMPLER_HISTORY,
        "--sampler-history",
        parse=int,
        metavar="H",
        help="most finished trials TPE fits on (default {default}: the best and the most recent)",
    )
    quiet: bool = option(False, "--quiet", help="no line per batch")
    threads: int = option(
        1,
        "--threads",
        parse=int,
        metavar="T",
        help="torch CPU threads per worker (default {default}: fastest for small models, one "
        "worker per core)",
    )
    proposal_processes: int | None = option(
        None,
        "--proposal-processes",
        parse=int,
        metavar="P",
        help="processes proposing the next batch while this one trains; 0: between batches "
        "(default: on a GPU a share of the free cores, at most 4; on a CPU 0)",
    )
    trackers: tuple[TrackerSpec, ...] = option(
        (),
        "--log",
        metavar="mlflow|tensorboard[=WHERE],...",
        parse=parse_trackers,
        show=lambda specs: ",".join(map(str, specs)),
        help="send each finished trial to MLflow (WHERE: a tracking URI or folder, default "
        "./mlruns) or TensorBoard (a folder, default ./runs)",
    )

    def __post_init__(self) -> None:
        if self.target_trials is not None:
            require_positive("--trials", self.target_trials)
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidInputError(f"--timeout must be > 0 seconds; got {self.timeout_s}")
        if self.seed is not None and not 0 <= self.seed < MAX_SEED:
            raise InvalidInputError(
                f"--seed must be between 0 and {MAX_SEED - 1}; got {self.seed}"
            )
        if self.trials_per_batch is not None:
            require_positive("--trials-per-batch", self.trials_per_batch)
        if self.sampler_history < MIN_SAMPLER_HISTORY:
            raise InvalidInputError(
                f"--sampler-history must be >= {MIN_SAMPLER_HISTORY}; got {self.sampler_history}"
            )
        require_positive("--threads", self.threads)
        if self.proposal_processes is not None and self.proposal_processes < 0:
            raise InvalidInputError(
                f"--proposal-processes must be >= 0; got {self.proposal_processes}"
            )

    def proposal_processes_for(self, *, on_gpu: bool, workers: int = 1) -> int:
        """Explicit, else on a GPU an even share of the cores the machine's `workers` leave
        free (at least 1, at most MAX_PROPOSAL_PROCESSES); on a CPU none, as its workers use
        every core (with a spare core, 1 made a worker 1.44x faster; with none, 0.66x:
        bench/NOTES.md step 24)."""
        if self.proposal_processes is not None:
            return self.proposal_processes
        if not on_gpu:
            return 0
        spare = len(os.sched_getaffinity(0)) - workers  # the cores this process may use
        return max(1, min(MAX_PROPOSAL_PROCESSES, spare // workers))

    def to_argv(self) -> list[str]:
        """The flags that make a launched worker run with these options."""
        return to_argv(self)

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


@dataclass(frozen=True)
class PopulationOptions:
    """Population mode's settings (`sweeps run` only)."""

    size: int | None = option(
        None,
        "--population",
        metavar="K",
        parse=int,
        help="Population Based Training of K members instead of TPE trials: the bottom quarter "
        "copies the top quarter every --exploit-every epochs and perturbs its lr",
    )
    exploit_every: int = option(
        5, "--exploit-every", metavar="E", parse=int, help="epochs between exploits (default 5)"
    )

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 4:
            raise InvalidInputError(
                f"--population must be >= 4 (a top and a bottom quarter); got {self.size}"
            )
        require_positive("--exploit-every", self.exploit_every)

    def check(self, epochs: int) -> None:
        """Refuse exploits that would never happen in a study of `epochs`."""
        if self.exploit_every >= epochs:
            raise InvalidInputError(
                f"--exploit-every must be below the study's {epochs} epochs; got "
                f"{self.exploit_every}"
            )
