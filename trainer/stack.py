"""What the vectorized engine (`vectorized.train_batch`) needs of a stack of members.

Two stacks train a batch: the built-in MLP's hand-written one (`vectorized`) and a user's model
through torch.func (`module_stack`). The engine holds either as a `Stack`, so mypy checks both
against the one interface, and neither module imports the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from lrsweep.trainer.optimizers import StepSettings


@runtime_checkable
class Stack(Protocol):
    """The members of one fold group still running, trained as one model. Member settings and
    results are per column: column i is member `members[i]`."""

    members: list[int]  # member indices of the batch, host side (reading them costs no sync)
    columns: torch.Tensor  # the same indices on the device, to gather per-member settings

    def train(self) -> None:
        """Put the members in training mode (dropout on, BatchNorm updating)."""

    def eval(self) -> None:
        """Put the members in evaluation mode, for the epoch's validation."""

    def optimizer_step(
        self, x: torch.Tensor, y: torch.Tensor, step: StepSettings, logits_out: torch.Tensor
    ) -> None:
        """One mini-batch of the members' optimizer (each member's own state) on rows `x`
        [B, F] with labels `y` [B, A], its logits before the update written to `logits_out`
        [B, O, A] (the epoch's train loss is computed from them at its end)."""

    def lerp_to_state(self, name: str, weight: torch.Tensor) -> None:
        """Move every trained weight towards its optimizer state `name` by each member's
        `weight` ([1, A]): how Schedule-Free switches between the weights it trains (y) and
        the averaged ones it evaluates (x), as its `optimizer.train()` and `.eval()` do."""

    def copy_member(self, source: int, target: int) -> None:
        """The member at position `target` takes the weights, buffers and optimizer state of
        the one at `source` (positions in the current stack)."""

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, F] rows shared by all members -> logits [B, O, A]."""

    def weights_of(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, ...]]:
        """Final weights of the members at `positions` (in the current stack), on the CPU."""

    def keep(self, positions: Sequence[int]) -> None:
        """Drop every member not at `positions` (positions in the current stack)."""
