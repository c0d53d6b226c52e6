"""TPE that fits once per batch: a claim of K trials costs one Parzen fit per search space, not K.

Optuna's `TPESampler` refits its two Parzen estimators (the good and the bad trials) on every
suggestion: one relative fit per ask plus one per conditional parameter, each O(history). A
batch of K trials asked one at a time pays that K times over nearly the same history. Here the
first suggestion of a batch over a search space splits the trials and builds the estimators as
TPE does (`split_trials`, `build_parzen_estimator`); every proposal of the batch then draws its
`n_ei_candidates` from the good estimator and keeps the candidate with the highest acquisition
(log l(x) - log g(x)), exactly TPE's choice for that fit. Proposals are drawn DRAW_CHUNK at a
time, so the acquisition is evaluated in few vectorized calls and a conditional parameter few
trials need draws little.

The batch's proposals are i.i.d. TPE asks on one fit, as K workers asking at the same moment
would be: other workers' running trials are in the fit as constant liars, this batch's own are
not. bench/NOTES.md holds the best-so-far comparison with Optuna's one-ask-at-a-time TPE.

Outside `batch_fits` the sampler is Optuna's TPE unchanged. TPE's private step and helpers come
through `lrsweep.sweeps.worker.optuna_tpe`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from lrsweep.sweeps.worker.optuna_tpe import ExposedTPESampler, ParzenEstimator, split_trials

DRAW_CHUNK = 16


class _Fit:
    """One split of the history into good and bad, and proposals drawn from it in chunks."""

    def __init__(
        self,
        sampler: BatchTPESampler,
        below: ParzenEstimator,
        above: ParzenEstimator,
        search_space: dict[str, BaseDistribution],
    ) -> None:
        self._sampler = sampler
        self._below = below
        self._above = above
        self._search_space = search_space
        self._ready: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        if not self._ready:
            self._ready = self._draw(self._sampler._draw_chunk)
        return self._ready.pop()

    def _draw(self, count: int) -> list[dict[str, Any]]:
        """`count` proposals: for each, the best of `n_ei_candidates` draws by acquisition."""
        n_candidates = self._sampler.n_ei_candidates
        samples = self._below.sample(self._sampler.rng, count * n_candidates)
        acquisition = self._below.log_pdf(samples) - self._above.log_pdf(samples)
        best = acquisition.reshape(count, n_candidates).argmax(axis=1)
        rows = best + np.arange(count) * n_candidates
        return [
            {
                name: distribution.to_external_repr(samples[name][row].item())
                for name, distribution in self._search_space.items()
            }
            for row in rows[::-1]  # popped from the end: proposals in drawing order
        ]


class BatchTPESampler(ExposedTPESampler):
    """`TPESampler` with one fit per search space while a `batch_fits` block is open.

    `draw_chunk` proposals are drawn together; with 1, a batch of K equals K asks of
    `TPESampler(constant_liar=False)` on a history with no running trials, draw for draw.
    """

    def __init__(self, *, draw_chunk: int = DRAW_CHUNK, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._draw_chunk = draw_chunk
        self._fits: dict[Hashable, _Fit] | None = None

    def sample_search_space(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self._fits is None:
            return super().sample_search_space(study, trial, search_space)
        key = frozenset(search_space.items())
        if key not in self._fits:
            self._fits[key] = self._fit(study, trial, search_space)
        return self._fits[key].next()

    def _fit(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> _Fit:
        """TPE's split and estimators, as `TPESampler`'s own step builds them for `trial`."""
        states = [TrialState.COMPLETE, TrialState.PRUNED]
        if self.constant_liar:
            states.append(TrialState.RUNNING)
        trials = [
            t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number
        ]
        n = sum(t.state != TrialState.RUNNING for t in trials)
        below_trials, above_trials = split_trials(study, trials, self.gamma(n))
        below = self.build_parzen_estimator(study, search_space, below_trials, below=True)
        above = self.build_parzen_estimator(study, search_space, above_trials, below=False)
        return _Fit(self, below, above, search_space)


@contextmanager
def batch_fits(sampler: optuna.samplers.BaseSampler) -> Iterator[None]:
    """Within the block, a `BatchTPESampler` fits once per search space; any other sampler
    samples as usual."""
    if not isinstance(sampler, BatchTPESampler):
        yield
        return
    sampler._fits = {}
    try:
        yield
    finally:
        sampler._fits = None


def sampler_copies(sampler: optuna.samplers.BaseSampler, count: int) -> list[Any]:
    """`count` copies of `sampler` with random streams of their own, to propose in other
    processes: a TPE copy is seeded from the sampler's own random state (a seeded worker makes
    the same copies every run), any other sampler's reseeded at random."""
    copies = [copy.deepcopy(sampler) for _ in range(count)]
    for duplicate in copies:
        if isinstance(sampler, ExposedTPESampler) and isinstance(duplicate, ExposedTPESampler):
            duplicate.reseed(sampler.rng.randint(2**31))
        else:
            duplicate.reseed_rng()
    return copies


TPE_ARGUMENTS: dict[str, Any] = {
    "n_startup_trials": 10,
    "multivariate": True,
    "constant_liar": True,
}


def make_sampler(seed: int | None) -> BatchTPESampler:
    """TPE over the conditional space, fitted once per batch; constant liar keeps parallel
    workers apart.

    Multivariate over the parameters every trial has (scheduler, lr, momentum), independent for
    the conditional ones: `group=True` would model each scheduler's group jointly but costs 3x
    per ask (23 ms vs 7.4 ms at 300 trials, bench/NOTES.md).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return BatchTPESampler(seed=seed, **TPE_ARGUMENTS)
