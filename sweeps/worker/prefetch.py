"""The next batch's proposals, sampled in other processes while this batch trains.

On a GPU a batch of 4096 trials trains in seconds, and TPE takes about as long to propose it
(about 1.3 ms a proposal): proposing only between batches leaves the device idle meanwhile.
With `processes` > 0, once a batch is claimed the worker hands a snapshot of what it knows (its
just-claimed batch among the running trials: constant liars, as another worker's would be) to
that many proposal processes, each proposing its share of the next batch from its own copy of
the sampler; the next claim takes those proposals, and proposes more at once only if it needs
more. Processes, not a thread: TPE's small numpy steps and the training loop's kernel launches
both hold the GIL, and on two cores a proposal thread slowed training as much as it saved
(bench/NOTES.md step 24).

A batch's proposals are independent draws from one TPE fit (`sweeps.worker.sampling`), so
splitting them over processes that each fit the same history changes nothing but the random
streams. The price is one batch of lag: the prefetched fit lacks the results of the batch that
trains meanwhile, as a second worker's would. On a CPU, where the worker's core is busy training,
the default is none.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.pool import AsyncResult, Pool
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial

from lrsweep.errors import InvalidInputError
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker.proposals import propose
from lrsweep.sweeps.worker.sampling import sampler_copies

ORPHAN_CHECK_S = 1.0


class Proposals:
    """Batches of proposals for one worker, with at most one batch sampled ahead:

        with Proposals(settings, sampler, study_name, processes=4) as proposals:
            batch = proposals.take(history.sampler_view(), count)  # sampled ahead, or now
            proposals.prefetch(view, count)  # returns at once; sampled while this batch trains

    `proposed_ahead` is how many it took from the processes. If they fail, the worker says so
    once and proposes itself.
    A script that runs a worker in its own process (`sweeps.run_worker`) on a GPU needs the
    `if __name__ == "__main__":` guard, as torch's DataLoader workers do: the processes are
    spawned, and a spawned process imports the script.
    """

    def __init__(
        self,
        settings: StudySettings,
        sampler: optuna.samplers.BaseSampler,
        study_name: str,
        *,
        processes: int,
    ) -> None:
        self._settings, self._sampler, self._study_name = settings, sampler, study_name
        self._processes = processes
        if processes:
            try:  # what every share is sent with: refused before any trial is claimed
                pickle.dumps((settings, sampler))
            except Exception as exc:
                raise InvalidInputError(
                    f"the sampler ({type(sampler).__name__}) cannot be sent to proposal "
                    f"processes ({exc}); use --proposal-processes 0"
                ) from exc
        self._pool: Pool | None = None  # started at the first prefetch
        self._pending: list[AsyncResult[list[FrozenTrial]]] = []
        self.proposed_ahead = 0

    def take(self, view: list[FrozenTrial], count: int) -> list[FrozenTrial]:
        """`count` proposals: the prefetched ones first, then new ones fitted on `view`."""
        ready = self._prefetched()
        self.proposed_ahead += min(len(ready), count)
        if len(ready) < count:
            missing = count - len(ready)
            ready += propose(self._settings, self._sampler, self._study_name, view, missing)
        return ready[:count]

    def prefetch(self, view: list[FrozenTrial], count: int) -> None:
        """Start proposing `count` trials on `view` in the proposal processes (when there are
        any), each its share with its own copy of the sampler."""
        if not self._processes or count <= 0:
            return
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(  # no copy of torch or CUDA
                self._processes,
                initializer=_start_proposal_process,
                initargs=(optuna.logging.get_verbosity(), os.getpid()),
            )
        parts = min(self._processes, count)
        shares = [count // parts + (part < count % parts) for part in range(parts)]
        self._pending = [
            self._pool.apply_async(propose, (self._settings, copy, self._study_name, view, share))
            for copy, share in zip(sampler_copies(self._sampler, parts), shares, strict=True)
        ]

    def _prefetched(self) -> list[FrozenTrial]:
        pending, self._pending = self._pending, []
        try:
            return [trial for part in pending for trial in part.get()]
        except Exception as exc:  # a process died or failed: propose here from now on
            print(
                f"proposal processes failed ({type(exc).__name__}: {exc}); this worker "
                "proposes between batches from now on",
                file=sys.stderr,
            )
            self._processes = 0
            self._close()
            return []

    def _close(self) -> None:
        if self._pool is not None:  # proposals under way are dropped, not waited for
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Proposals:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()


def _start_proposal_process(verbosity: int, worker_pid: int) -> None:
    """A proposal process logs as its worker does, leaves Ctrl-C to the worker, and exits when
    the worker is gone (killed, it could not say so)."""
    optuna.logging.set_verbosity(verbosity)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def exit_when_orphaned() -> None:
        while os.getppid() == worker_pid:
            time.sleep(ORPHAN_CHECK_S)
        os._exit(0)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()
