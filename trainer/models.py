"""A user's own model, named as `module:function`: the function takes (n_features, n_outputs)
and returns an `nn.Module` giving [batch, n_outputs] logits.

Importing the module runs the user's code, as any training script does; only the module the
user named is imported (with the working directory on the path, as `python -m` has it).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrsweep.errors import InvalidInputError

if TYPE_CHECKING:  # torch loads with the first model built: configs and the CLI start faster
    import torch
    from torch import nn

ModelFactory = Callable[[int, int], "nn.Module"]


@dataclass(frozen=True)
class ModelSpec:
    """`module:function` naming a model factory; checked when first loaded."""

    target: str

    def __post_init__(self) -> None:
        module, _, function = self.target.partition(":")
        if not module or not function.isidentifier():
            raise InvalidInputError(f"--model must be module:function; got {self.target!r}")

    def factory(self) -> ModelFactory:
        return _import_factory(self.target)

    def build(
        self, seed: int, n_features: int, n_outputs: int, device: torch.device | str
    ) -> nn.Module:
        """The model with initial weights drawn under `seed`, without touching the global RNG."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = self.factory()(n_features, n_outputs)
            except Exception as exc:  # the user's code: any error is theirs to read
                raise InvalidInputError(
                    f"--model {self.target}({n_features}, {n_outputs}) failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        if not isinstance(model, torch.nn.Module):
            raise InvalidInputError(
                f"--model {self.target} returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model.to(device)

    def check(self, sample: Any, n_outputs: int) -> None:
        """Build the model and train it one step on a few rows (`sample`, [R, F]): it must give
        float32 logits [R, n_outputs] that a backward pass reaches a parameter from. Done
        before a study is created or a worker starts training."""
        import torch

        features = torch.as_tensor(sample, dtype=torch.float32)
        model = self.build(0, features.shape[1], n_outputs, "cpu")
        try:
            logits = model(features)
        except Exception as exc:  # the user's forward
            raise InvalidInputError(
                f"--model {self.target}: its forward failed on {len(features)} rows of the data: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        expected = (len(features), n_outputs)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise InvalidInputError(
                f"--model {self.target} gave logits of shape {shape}; expected {expected} "
                "([rows, n_outputs])"
            )
        if logits.dtype != torch.float32:
            raise InvalidInputError(
                f"--model {self.target} gave {logits.dtype} logits; expected float32"
            )
        try:
            logits.sum().backward()
        except RuntimeError as exc:  # e.g. logits cut from the graph: nothing would train
            raise InvalidInputError(
                f"--model {self.target}: a backward pass from its logits fails, so SGD could "
                f"not train it: {_first_line(exc)}"
            ) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


@functools.lru_cache(maxsize=8)
def _import_factory(target: str) -> ModelFactory:
    module_name, _, function_name = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # last: nothing there shadows lrsweep's own imports
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the user's module raised
        raise InvalidInputError(
            f"--model {target}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise InvalidInputError(
            f"--model {target}: {module_name} has no function {function_name!r}"
        )
    return factory  # type: ignore[no-any-return]
