"""The private parts of Optuna's TPE that `BatchTPESampler` reuses, under public names.

`TPESampler` has no public hook for its per-search-space step (split the history into good and
bad trials, fit a Parzen estimator to each, pick the best of `n_ei_candidates` draws), which
`BatchTPESampler` runs once per batch instead of once per ask. That step is the private
`TPESampler._sample`, built from `_split_trials`, `_build_parzen_estimator` and
`_ParzenEstimator`, with the sampler's private settings. Checked against Optuna 5.0.0 (pinned
in constraints.txt); tests/test_optuna_internals.py fails when any of them changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.samplers._tpe.sampler import _split_trials, default_gamma
from optuna.study import Study
from optuna.trial import FrozenTrial

ParzenEstimator = _ParzenEstimator
"""TPE's mixture over a search space: `sample(rng, size)` and `log_pdf(samples)`."""


def split_trials(
    study: Study, trials: list[FrozenTrial], n_below: int
) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """TPE's split of `trials` into the `n_below` best ("below") and the rest ("above", where
    running trials go), each in number order."""
    return _split_trials(study, trials, n_below)


class ExposedTPESampler(optuna.samplers.TPESampler):
    """`TPESampler` whose per-search-space step a subclass replaces by overriding
    `sample_search_space`, and whose settings it reads through public names."""

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # TPE's relative and independent sampling both end here.
        return self.sample_search_space(study, trial, search_space)

    def sample_search_space(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """TPE's own step: one fit on the study's trials, one proposal for `search_space`."""
        return super()._sample(study, trial, search_space)

    def reseed(self, seed: int) -> None:
        """Seed both random streams: TPE's candidates and the random sampler it uses for its
        startup trials (reseeding only the first, copies would propose alike until then)."""
        self._rng.rng.seed(seed)
        self._random_sampler._rng.rng.seed(seed + 1)

    def build_parzen_estimator(
        self,
        study: Study,
        search_space: dict[str, BaseDistribution],
        trials: list[FrozenTrial],
        *,
        below: bool,
    ) -> ParzenEstimator:
        """TPE's estimator of `trials` (the good ones when `below`)."""
        return self._build_parzen_estimator(study, search_space, trials, handle_below=below)

    def gamma(self, n_finished: int) -> int:
        """How many of `n_finished` trials TPE counts as good (single objective)."""
        return (self._gamma or default_gamma)(n_finished)

    @property
    def n_ei_candidates(self) -> int:
        return self._n_ei_candidates

    @property
    def constant_liar(self) -> bool:
        return self._constant_liar

    @property
    def rng(self) -> np.random.RandomState:
        """The random state TPE draws its candidates from (seeded by `seed`)."""
        return self._rng.rng
