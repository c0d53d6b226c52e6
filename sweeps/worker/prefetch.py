"""The next batch's proposals, sampled while this batch trains.

On a GPU a batch of 4096 trials trains in seconds, and TPE takes about as long to propose it
(about 1.3 ms a proposal): proposing only between batches would leave the device idle for half
the sweep. With overlap on, once a batch is claimed a thread proposes the next one from a
snapshot of what the worker knows, the just-claimed batch among the running trials (constant
liars, as another worker's would be); the next claim takes those proposals, and proposes more at
once only if it needs more. Torch's kernels and TPE's numpy work release the GIL, so the two run
side by side.

The price is one batch of lag: the prefetched batch's fit lacks the results of the batch that
trains meanwhile, as a second worker's proposals would. On the CPU, where a worker's core is
busy training, the default is off.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial

from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker.proposals import propose


class Proposals:
    """Batches of proposals for one worker, with at most one sampled ahead:

        with Proposals(settings, sampler, study_name, overlap=True) as proposals:
            batch = proposals.take(history.sampler_view, count)  # sampled ahead, or now
            proposals.prefetch(view, count)  # returns at once; sampled while this batch trains

    `waited_s` is the time the worker spent waiting for proposals (all of it when not
    overlapping).
    """

    def __init__(
        self,
        settings: StudySettings,
        sampler: optuna.samplers.BaseSampler,
        study_name: str,
        *,
        overlap: bool,
    ) -> None:
        self._settings, self._sampler, self._study_name = settings, sampler, study_name
        self._ahead = (
            ThreadPoolExecutor(1, thread_name_prefix="lrsweep-proposals") if overlap else None
        )
        self._pending: Future[list[FrozenTrial]] | None = None
        self.waited_s = 0.0

    def take(self, view: list[FrozenTrial], count: int) -> list[FrozenTrial]:
        """`count` proposals: the prefetched ones first, then new ones fitted on `view`."""
        started = time.perf_counter()
        ready = [] if self._pending is None else self._pending.result()
        self._pending = None
        if len(ready) < count:
            ready += self._propose(view, count - len(ready))
        self.waited_s += time.perf_counter() - started
        return ready[:count]

    def prefetch(self, view: list[FrozenTrial], count: int) -> None:
        """Start sampling `count` proposals on `view` in the background (when overlapping).
        The sampler is then the thread's until the next `take`."""
        if self._ahead is not None and count > 0:
            self._pending = self._ahead.submit(self._propose, view, count)

    def _propose(self, view: list[FrozenTrial], count: int) -> list[FrozenTrial]:
        return propose(self._settings, self._sampler, self._study_name, view, count)

    def __enter__(self) -> Proposals:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._ahead is not None:  # a proposal under way is finished, then dropped
            self._ahead.shutdown(wait=True, cancel_futures=True)
