"""Models as a user would write them, for `--model tests.user_models:NAME` (tests only)."""

from __future__ import annotations

import torch
from torch import nn


def tanh_net(n_features: int, n_outputs: int) -> nn.Module:
    """Two hidden layers of tanh: a model the built-in MLP is not."""
    return nn.Sequential(
        nn.Linear(n_features, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, n_outputs)
    )


class _Branching(nn.Module):
    """Data-dependent control flow, which torch.func.vmap cannot trace."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.layer = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        if out.sum() > 0:  # decided by the values: no single vmapped program
            return out * 1.0
        return out


def branching(n_features: int, n_outputs: int) -> nn.Module:
    return _Branching(n_features, n_outputs)


def not_a_module(n_features: int, n_outputs: int) -> object:
    return "a string"


def batchnorm_net(n_features: int, n_outputs: int) -> nn.Module:
    """Running statistics: buffers updated in place every training step."""
    return nn.Sequential(
        nn.Linear(n_features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, n_outputs)
    )


def frozen_first_layer(n_features: int, n_outputs: int) -> nn.Module:
    """A fixed random projection: parameters that do not train (requires_grad False)."""
    model = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_outputs))
    model[0].requires_grad_(False)
    return model
