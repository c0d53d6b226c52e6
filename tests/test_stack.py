"""Both stacks the engine trains (the built-in MLP's and a user model's) are `Stack`s: mypy
checks their signatures where the engine holds them; this checks real instances at run time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import REPO
from lrsweep.trainer import load_dataset, split_tensors, validation_rows
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.module_stack import ModuleStack
from lrsweep.trainer.optimizers import StepSettings
from lrsweep.trainer.stack import Stack
from lrsweep.trainer.vectorized import _Stack


@pytest.mark.parametrize("model", [None, "tanh_net", "branching"])
def test_each_stack_the_engine_builds_is_a_stack(
    model: str | None, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # `tests.user_models` imports from the repository root
    data = load_dataset(data_path)
    tensors = split_tensors(data, validation_rows(data), "cpu")
    indices, seeds = [3, 5], [0, 1]
    stack = (  # as `train_batch` builds them
        _Stack.of(indices, seeds, tensors)
        if model is None
        else ModuleStack.of(indices, seeds, tensors, ModelSpec(f"tests.user_models:{model}"))
    )
    assert isinstance(stack, Stack)
    # One step through the interface alone: the members' logits come out in their columns.
    x, y = tensors.x_train[:4], tensors.y_train[:4].unsqueeze(1).expand(4, 2)
    settings = torch.tensor([[0.1, 0.2]])
    step = StepSettings(
        "sgd", settings, settings, settings, settings, settings, settings, decaying=True
    )
    logits = x.new_empty(4, tensors.n_outputs, 2)
    stack.train()
    stack.optimizer_step(x, y, step, logits)
    stack.eval()
    assert stack.logits(x).shape == logits.shape
    stack.keep([1])
    assert stack.members == [5] and stack.columns.tolist() == [5]
    assert len(stack.weights_of([0])) == 1
