"""K copies of a user's model trained as one: parameters stacked with `torch.func`.

Each member is the user's `nn.Module` built under its own seed; their parameters and buffers are
stacked ([A, ...] per tensor) and one forward runs them all with `vmap(functional_call)`. A model
vmap cannot run (data-dependent control flow, such as `if x.sum() > 0`) runs its members one after
another on the same stacked tensors instead, which the process says once. BatchNorm statistics are
stacked per member; random ops (dropout) draw differently per member. The optimizer (SGD, Adam,
AdamW or a Schedule-Free one) is applied per member with each member's own state, as torch.optim
would, and frozen parameters stay so.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lrsweep.trainer.config import SCHEDULE_FREE
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.optimizers import ScheduleFreeClock, StepSettings, new_state, update
from lrsweep.trainer.training import Tensors, classification_loss, make_model

_SAID_ONE_AT_A_TIME: set[str] = set()


@dataclass
class ModuleStack:
    """The members still running (columns of the batch) and their stacked state."""

    members: list[int]
    columns: torch.Tensor
    base: nn.Module  # the module's structure, on the meta device: weights come from `params`
    params: dict[str, torch.Tensor]  # [A, ...] each, leaves that require grad
    buffers: dict[str, torch.Tensor]
    state: dict[str, dict[str, torch.Tensor]]  # optimizer state per parameter, [A, ...] each
    vmapped: bool
    optimizer: str = "sgd"
    steps: int = 0  # optimizer steps taken (Adam's bias corrections)
    clock: ScheduleFreeClock | None = None  # a Schedule-Free optimizer's running scalars

    @classmethod
    def of(
        cls,
        indices: Sequence[int],
        seeds: Sequence[int],
        tensors: Tensors,
        spec: ModelSpec,
        optimizer: str = "sgd",
    ) -> ModuleStack:
        """Members at `indices` (at least one), each built under its seed, with a zeroed state
        of `optimizer`."""
        device = tensors.x_train.device
        models = [make_model(spec, seed, tensors) for seed in seeds]
        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        stack = cls(
            members=list(indices),
            columns=torch.tensor(list(indices), dtype=torch.long, device=device),
            base=copy.deepcopy(models[0]).to("meta"),
            params=params,
            buffers=buffers,
            state={name: new_state(optimizer, value) for name, value in params.items()},
            vmapped=True,
            optimizer=optimizer,
            clock=ScheduleFreeClock.of(len(indices), device)
            if optimizer in SCHEDULE_FREE
            else None,
        )
        stack.vmapped = stack._runs_under_vmap(tensors.x_train[:2], spec)
        return stack

    def _runs_under_vmap(self, sample: torch.Tensor, spec: ModelSpec) -> bool:
        """Try one forward; the buffers it touches (BatchNorm's statistics) are put back."""
        buffers = {name: value.clone() for name, value in self.buffers.items()}
        try:
            with torch.no_grad():
                self.logits(sample)
        except Exception as exc:  # vmap refuses many things; each means "one at a time"
            if spec.target not in _SAID_ONE_AT_A_TIME:
                _SAID_ONE_AT_A_TIME.add(spec.target)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                print(
                    f"note: --model {spec.target} cannot run under torch.func.vmap "
                    f"({type(exc).__name__}: {reason[:120]}); its trials train one at a time",
                    file=sys.stderr,
                )
            return False
        finally:
            self.buffers = buffers
        return True

    def train(self) -> None:
        self.base.train()

    def eval(self) -> None:
        self.base.eval()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, F] rows shared by all members -> logits [B, O, A]."""

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.base, (params, buffers), (features,))  # type: ignore

        if self.vmapped:
            stacked = vmap(one, randomness="different")(self.params, self.buffers)
        else:
            params = {name: value.unbind(0) for name, value in self.params.items()}
            buffers = {name: value.unbind(0) for name, value in self.buffers.items()}
            stacked = torch.stack(
                [
                    one(
                        {name: value[i] for name, value in params.items()},
                        {name: value[i] for name, value in buffers.items()},
                    )
                    for i in range(len(self.members))
                ]
            )
        return stacked.permute(1, 2, 0)  # [A, B, O] -> [B, O, A]

    def optimizer_step(
        self, x: torch.Tensor, y: torch.Tensor, step: StepSettings, logits_out: torch.Tensor
    ) -> None:
        """One mini-batch of the optimizer for every member, its logits before the update
        written to `logits_out` [B, O, A].

        Frozen parameters (requires_grad False) and those a member's forward never used (no
        gradient) are left alone, as torch.optim skips a parameter whose grad is None (its
        Adam step count too: torch counts steps per parameter, this stack per stack, so a
        parameter used only now and then would differ; none of the tested models has one).
        Under vmap every member runs one program, so a parameter is used by all or by none;
        one at a time, each member's gradient is its own."""
        self.steps += 1
        if self.clock is not None:
            step = self.clock.tick(step)
        if not self.vmapped:
            return self._step_one_at_a_time(x, y, step, logits_out)
        logits = self.logits(x)
        logits_out.copy_(logits.detach())
        losses = classification_loss(logits, y, reduction="none")  # [B, A]
        trainable = {name: value for name, value in self.params.items() if value.requires_grad}
        grads = torch.autograd.grad(
            losses.mean(dim=0).sum(), list(trainable.values()), allow_unused=True
        )
        by_rank: dict[int, StepSettings] = {}  # a [A] setting viewed against [A, ...]
        with torch.no_grad():
            for (name, param), grad in zip(trainable.items(), grads, strict=True):
                if grad is not None:
                    shaped = by_rank.get(param.dim()) or by_rank.setdefault(
                        param.dim(), step.shaped((-1,) + (1,) * (param.dim() - 1))
                    )
                    update(param, grad, self.state[name], shaped, self.steps)

    def _step_one_at_a_time(
        self, x: torch.Tensor, y: torch.Tensor, step: StepSettings, logits_out: torch.Tensor
    ) -> None:
        """`optimizer_step` with each member's own leaves: `y` is [B, A], one column per
        member."""
        trainable = [name for name, value in self.params.items() if value.requires_grad]
        for i in range(len(self.members)):
            leaves = {
                name: value[i].detach().requires_grad_(value.requires_grad)
                for name, value in self.params.items()
            }
            buffers = {name: value[i] for name, value in self.buffers.items()}
            logits = functional_call(self.base, (leaves, buffers), (x,))  # type: ignore
            logits_out[..., i] = logits.detach()
            loss = classification_loss(logits.unsqueeze(-1), y[:, i : i + 1], reduction="none")
            grads = torch.autograd.grad(
                loss.mean(), [leaves[name] for name in trainable], allow_unused=True
            )
            with torch.no_grad():
                settings = step.member(i)
                for name, grad in zip(trainable, grads, strict=True):
                    if grad is not None:
                        state = {key: value[i] for key, value in self.state[name].items()}
                        update(self.params[name][i], grad, state, settings, self.steps)

    def weights_of(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, ...]]:
        """Final weights of the members at `positions`, CPU, in `parameters()` order."""
        return [
            tuple(value[position].detach().cpu().clone() for value in self.params.values())
            for position in positions
        ]

    def keep(self, positions: Sequence[int]) -> None:
        """Drop every member not at `positions` (positions in the current stack)."""
        index = torch.tensor(list(positions), dtype=torch.long, device=self.columns.device)
        self.members = [self.members[p] for p in positions]
        self.columns = self.columns[index]
        self.params = {
            name: value.detach()[index].requires_grad_(value.requires_grad)
            for name, value in self.params.items()
        }
        self.buffers = {name: value[index] for name, value in self.buffers.items()}
        self.state = {
            name: {key: value[index] for key, value in state.items()}
            for name, state in self.state.items()
        }
        if self.clock is not None:
            self.clock.keep(index)

    def copy_member(self, source: int, target: int) -> None:
        with torch.no_grad():
            states = (value for state in self.state.values() for value in state.values())
            for tensor in (*self.params.values(), *self.buffers.values(), *states):
                tensor[target] = tensor[source]
        if self.clock is not None:
            self.clock.copy_member(source, target)

    def lerp_to_state(self, name: str, weight: torch.Tensor) -> None:
        with torch.no_grad():
            for key, param in self.params.items():
                shape = (-1,) + (1,) * (param.dim() - 1)  # a [A] weight against [A, ...]
                param.lerp_(self.state[key][name], weight.view(shape))
