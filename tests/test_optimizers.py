"""Both engines train SGD, Adam and AdamW members as torch.optim trains each model alone:
the optimizer's arithmetic bit for bit over generated cases (hypothesis), whole runs of both
engines up to float32 rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from lrsweep.trainer import (
    ScheduleConfig,
    Tensors,
    TrainConfig,
    load_dataset,
    split_tensors,
    train,
    validation_rows,
)
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.optimizers import StepSettings, new_state, update
from lrsweep.trainer.vectorized import BatchMember, train_batch

EPOCHS = 4
SCHEDULES = (
    ScheduleConfig("constant"),
    ScheduleConfig("step", {"step_size": 2, "gamma": 0.5}),
    ScheduleConfig("cosine", {"T_max": EPOCHS, "eta_min": 0.0}),
    ScheduleConfig(
        "warmup_cosine", {"warmup_iters": 2, "start_factor": 0.1, "T_max": 2, "eta_min": 0.0}
    ),
)


@pytest.fixture(scope="module")
def tensors(data_path: Path) -> Tensors:
    torch.set_num_threads(1)
    data = load_dataset(data_path)
    return split_tensors(data, validation_rows(data), "cpu")


MEMBERS = (  # one batch: each optimizer, with and without weight decay, several schedules
    TrainConfig(SCHEDULES[0], lr=0.1, momentum=0.9, weight_decay=0.01, epochs=EPOCHS),
    TrainConfig(SCHEDULES[1], lr=0.01, epochs=EPOCHS, optimizer="adam"),
    TrainConfig(
        SCHEDULES[2], lr=0.003, epochs=EPOCHS, optimizer="adam", betas=(0.8, 0.99),
        weight_decay=1e-3,
    ),
    TrainConfig(SCHEDULES[3], lr=0.01, epochs=EPOCHS, optimizer="adamw", weight_decay=0.05),
    TrainConfig(
        SCHEDULES[0], lr=0.005, epochs=EPOCHS, optimizer="adamw", betas=(0.95, 0.999),
        eps=1e-6, weight_decay=0.01,
    ),
)  # fmt: skip


@pytest.mark.parametrize("model", [None, "tanh_net", "branching"])
def test_each_member_trains_as_torch_optim_trains_it_alone(
    tensors: Tensors, model: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in MLP (hand-written engine), a user model under vmap, and one that trains
    its members one at a time (`branching`), against `training.train` stepping the torch
    optimizer `TrainConfig.make_optimizer` builds. Up to float32 rounding: the engines'
    gradients are not autograd's bit for bit, and Adam amplifies that where a gradient is near
    zero, so these are fixed cases; the optimizer's own arithmetic is held bit for bit over
    generated cases below."""
    monkeypatch.chdir(REPO)  # `tests.user_models` imports from the repository root
    spec = None if model is None else ModelSpec(f"tests.user_models:{model}")
    batch = [BatchMember(config, seed=seed) for seed, config in enumerate(MEMBERS)]
    together = train_batch(batch, [tensors], order_seed=3, model_spec=spec)
    for member, result in zip(batch, together, strict=True):
        alone = train(member.config, tensors, seed=member.seed, order_seed=3, model_spec=spec)
        assert result.status is alone.status
        assert [r.train_loss for r in result.history] == pytest.approx(
            [r.train_loss for r in alone.history], rel=1e-4, abs=1e-6
        )
        for ours, theirs in zip(result.weights, alone.weights, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@st.composite
def member_settings(draw: st.DrawFn, kind: str) -> dict[str, float]:
    return {
        "lr": draw(st.floats(1e-5, 1.0)),
        "momentum": draw(st.floats(0.0, 0.99)) if kind == "sgd" else 0.0,
        "weight_decay": draw(st.sampled_from([0.0, 1e-4, 0.01, 0.3])),
        "beta1": draw(st.floats(0.0, 0.99)),
        "beta2": draw(st.floats(0.0, 0.9999)),
        "eps": draw(st.sampled_from([1e-12, 1e-10, 1e-8, 1e-6, 1e-3])),
    }


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    kind=st.sampled_from(["sgd", "adam", "adamw"]),
    members=st.integers(1, 4),
    steps=st.integers(1, 12),
    members_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_update_is_torch_optim_s_bit_for_bit(
    data: st.DataObject, kind: str, members: int, steps: int, members_first: bool, seed: int
) -> None:
    """Members with settings of their own stacked in one tensor (as `_Stack` holds them,
    [P, A], or `ModuleStack`, [A, P]) step exactly as torch.optim steps each alone, given the
    same gradients, some of them tiny (where Adam's eps matters); the built-in engine's fused
    SGD to within a rounding a step."""
    drawn = [data.draw(member_settings(kind)) for _ in range(members)]
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(members, 7, generator=generator)
    grads = [
        torch.randn(members, 7, generator=generator)
        * torch.rand(members, 7, generator=generator) ** 8  # many near zero
        for _ in range(steps)
    ]
    torch_params = [torch.nn.Parameter(start[m].clone()) for m in range(members)]
    optimizers = [
        TrainConfig(
            ScheduleConfig("constant"),
            lr=s["lr"],
            momentum=s["momentum"],
            weight_decay=s["weight_decay"],
            optimizer=kind,
            betas=(s["beta1"], s["beta2"]),
            eps=s["eps"],
        ).make_optimizer([param])
        for s, param in zip(drawn, torch_params, strict=True)
    ]

    def per_member(name: str) -> torch.Tensor:
        values = torch.tensor([s[name] for s in drawn], dtype=torch.float64)
        return values.view(-1, 1) if members_first else values.view(1, -1)

    step_settings = StepSettings(
        kind,
        *map(per_member, ("lr", "momentum", "weight_decay", "beta1", "beta2", "eps")),
        decaying=any(s["weight_decay"] for s in drawn),
    )
    exact, fused = ((start if members_first else start.T).contiguous().clone() for _ in "ab")
    exact_state, fused_state = new_state(kind, exact), new_state(kind, fused)
    for step, grad in enumerate(grads, start=1):
        for param, optimizer, member_grad in zip(torch_params, optimizers, grad, strict=True):
            param.grad = member_grad.clone()
            optimizer.step()
        stacked_grad = grad if members_first else grad.T
        update(exact, stacked_grad.clone(), exact_state, step_settings, step)
        update(fused, stacked_grad.clone(), fused_state, step_settings, step, fused=True)
    for member, param in enumerate(torch_params):
        ours = exact[member] if members_first else exact[:, member]
        assert torch.equal(ours, param.detach())
        # the fused form: one rounding per step apart at most
        theirs = fused[member] if members_first else fused[:, member]
        torch.testing.assert_close(theirs, param.detach(), rtol=1e-5, atol=1e-6)


def test_an_adam_member_beside_sgd_members_is_untouched_by_them(tensors: Tensors) -> None:
    """Members of different optimizers train in stacks of their own: adding SGD members to a
    batch leaves an Adam member's weights bit for bit as they were."""
    adam = BatchMember(
        TrainConfig(ScheduleConfig("constant"), lr=0.01, epochs=EPOCHS, optimizer="adam"), 0
    )
    sgd = [
        BatchMember(TrainConfig(ScheduleConfig("constant"), lr=lr, momentum=0.9, epochs=EPOCHS), 1)
        for lr in (0.1, 0.5)
    ]
    alone = train_batch([adam], [tensors], order_seed=3)[0]
    mixed = train_batch([sgd[0], adam, sgd[1]], [tensors], order_seed=3)[1]
    for ours, theirs in zip(mixed.weights, alone.weights, strict=True):
        assert torch.equal(ours, theirs)
