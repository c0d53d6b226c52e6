"""What a worker knows of its study: what Optuna's sampler and pruner would read, kept bounded.

Reading a study's trials from the database costs O(study size) per read, and Optuna's samplers
and pruners read them on every call. A worker here reads only what changed: each sync asks for
the states of trials from the oldest one it has not seen finish (`TrialStore.states_from`), loads
the newly finished ones (other workers'; its own it records as it finishes them), and re-reads
the live ones (RUNNING, WAITING: other workers' batches, queued copies) that it listed.

Of a finished trial it keeps what the pruner reads (`FinishedTrials`) and, for TPE, at most
`sampler_history` trials: the best completed half and the most recently finished other half.
Memory and the cost of a claim therefore stay flat as the study grows with the median pruner on
SQL storage (bench/NOTES.md step 14 says what still grows, and where: SuccessiveHalving and
Hyperband, the gRPC proxy).
"""

from __future__ import annotations

import heapq
import itertools
import warnings
from collections import deque

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsweep.storage import TrialStore
from lrsweep.storage.bulk import CLAIM_KEY
from lrsweep.storage.optuna_objects import trial_id_of
from lrsweep.sweeps.worker.pruning import FinishedTrials

DEFAULT_SAMPLER_HISTORY = 200


class StudyHistory:
    """One study's trials as this worker last read them (see module docstring)."""

    def __init__(
        self, pruner: optuna.pruners.BasePruner, sampler_history: int = DEFAULT_SAMPLER_HISTORY
    ) -> None:
        self.finished = FinishedTrials(pruner)
        self.live: list[FrozenTrial] = []
        self._limit = sampler_history
        self._best: list[tuple[float, int, FrozenTrial]] = []  # min-heap of the best completed
        self._recent: deque[FrozenTrial] = deque(maxlen=sampler_history)
        self._arrival = itertools.count()
        self._first_unfinished = 0  # every trial below this id is finished and recorded
        self._recorded: set[int] = set()  # ids >= _first_unfinished recorded already

    def sync(self, store: TrialStore) -> None:
        """Record the trials that finished since the last sync, and read the live ones afresh."""
        states = store.states_from(self._first_unfinished)
        new = [i for i, state in states.items() if state.is_finished() and i not in self._recorded]
        for trial in store.trials_by_id(new):  # in chunks: a joining worker never holds them all
            self.add(trial)
        unfinished = [trial_id for trial_id, state in states.items() if not state.is_finished()]
        newest = max(states, default=self._first_unfinished - 1)
        self._first_unfinished = min(unfinished, default=newest + 1)
        # Read in bulk like the finished ones; a trial that finished between the two reads is
        # recorded at the next sync.
        self.live = [t for t in store.trials_by_id(unfinished) if not t.state.is_finished()]
        self._recorded = {i for i in self._recorded if i >= self._first_unfinished}

    def running_batches(self) -> int:
        """How many claims have trials running, as of the last sync: the workers busy now
        (each trains one batch at a time)."""
        running = (t for t in self.live if t.state == TrialState.RUNNING)
        return len({t.system_attrs.get(CLAIM_KEY) for t in running})

    def add(self, trial: FrozenTrial) -> None:
        """Record a finished trial (this worker's own need not be read back)."""
        trial_id = trial_id_of(trial)
        if trial_id in self._recorded or trial_id < self._first_unfinished:
            return
        self._recorded.add(trial_id)
        self.finished.add(trial)
        if trial.state == TrialState.FAIL:
            return
        self._recent.append(trial)
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            entry = (trial.value, -next(self._arrival), trial)
            if len(self._best) < self._limit // 2:
                heapq.heappush(self._best, entry)
            else:
                heapq.heappushpop(self._best, entry)

    def sampler_view(self) -> list[FrozenTrial]:
        """What TPE fits on: other workers' running trials, and at most `sampler_history`
        finished ones, the best completed half and the most recently finished other half."""
        best = [trial for _, _, trial in self._best]
        chosen = {trial_id_of(trial) for trial in best}
        recent = [trial for trial in self._recent if trial_id_of(trial) not in chosen]
        running = [trial for trial in self.live if trial.state == TrialState.RUNNING]
        keep = max(0, len(recent) - (self._limit - len(best)))
        return [*best, *recent[keep:], *running]


def sampler_mirror(
    sampler: optuna.samplers.BaseSampler, study_name: str, trials: list[FrozenTrial]
) -> optuna.Study:
    """An in-memory study holding `trials`, for asking a batch of trials with no DB traffic."""
    mirror = optuna.create_study(study_name=study_name, direction="maximize", sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        mirror.add_trials(sorted(trials, key=lambda t: t.number))
    return mirror
