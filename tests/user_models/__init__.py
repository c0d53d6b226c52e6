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


class _SpareHead(nn.Module):
    """A head the forward never uses: it gets no gradient, so SGD leaves it alone."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, 16), nn.Tanh(), nn.Linear(16, n_outputs))
        self.spare = nn.Linear(n_features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def spare_head(n_features: int, n_outputs: int) -> nn.Module:
    return _SpareHead(n_features, n_outputs)


class _Gated(nn.Module):
    """A branch each model uses or not by a coin drawn when it is built: a model whose coin
    says no gives `extra` no gradient (and vmap cannot trace the decision)."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, 16), nn.Tanh(), nn.Linear(16, n_outputs))
        self.extra = nn.Sequential(nn.Linear(n_features, 8), nn.Tanh(), nn.Linear(8, n_outputs))
        self.register_buffer("coin", torch.rand(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.coin > 0.5:
            out = out + self.extra(x)
        return out


def gated(n_features: int, n_outputs: int) -> nn.Module:
    return _Gated(n_features, n_outputs)
