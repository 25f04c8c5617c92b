"""A second device on a CPU-only machine, for tests that a tensor follows the model's device.

torch's lazy device (TorchScript backend) holds its tensors apart from the CPU's: a model moved there rejects a CPU
input ("Input tensor is not a lazy tensor"). Some mistakes pass silently all the same, as they would on CUDA: a CPU
index into a device tensor, `generate` with CPU inputs (transformers copies them over at every step), a CPU
`logits_to_keep` mask. `strict_device` catches those too: while it is active, any torch call that mixes a lazy
tensor with a CPU tensor of one element or more raises `DeviceMixError`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

LAZY = "lazy"


class DeviceMixError(AssertionError):
    """A torch call got tensors on the lazy device and on the CPU together."""


@functools.cache
def _init_lazy() -> bool:
    try:
        import torch._lazy
        import torch._lazy.ts_backend

        torch._lazy.ts_backend.init()
        torch.zeros(1, device=LAZY).cpu()
    except Exception:  # any failure means this torch has no usable lazy backend
        return False
    return True


def lazy_device() -> torch.device:
    """The lazy device, initialised once per process; the test is skipped where this torch lacks it."""
    if not _init_lazy():
        pytest.skip("torch's lazy (TorchScript) backend is not available in this torch build")
    return torch.device(LAZY)


def _devices(tensors: list[torch.Tensor]) -> tuple[bool, bool]:
    """(a lazy tensor is among them, a CPU tensor with at least one dimension is among them)"""
    lazy = any(t.device.type == LAZY for t in tensors)
    # A 0-dim CPU tensor is a scalar that CUDA accepts next to its own tensors too; anything larger is not.
    cpu = any(t.device.type == "cpu" and t.ndim > 0 for t in tensors)
    return lazy, cpu


# What `Module.to` calls with a parameter and its moved copy: moving a model is not mixing devices.
_MOVING = {"_has_compatible_shallow_copy_type"}


class _NoMixing(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in _MOVING:
            return func(*args, **kwargs)
        leaves, _ = tree_flatten((args, kwargs))
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        if len(tensors) > 1:
            lazy, cpu = _devices(tensors)
            if lazy and cpu:
                shapes = [(tuple(t.shape), t.device.type) for t in tensors]
                raise DeviceMixError(f"{getattr(func, '__name__', func)} mixes lazy and CPU tensors: {shapes}")
        return func(*args, **kwargs)


@contextmanager
def strict_device() -> Iterator[None]:
    """Within the block, a torch call mixing lazy and (non-scalar) CPU tensors raises DeviceMixError."""
    with _NoMixing():
        yield


def _check_inputs(where: str, values: Any) -> None:
    leaves, _ = tree_flatten(values)
    misplaced = [tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor) and t.device.type != LAZY]
    if misplaced:
        raise DeviceMixError(f"{where} got tensors off the lazy device, shapes {misplaced}")


def on_lazy(model: Any) -> Any:
    """`model` moved to the lazy device, refusing any forward or `generate` input that is not on it."""
    model = model.to(lazy_device())
    model.register_forward_pre_hook(
        lambda _module, args, kwargs: _check_inputs("forward", (args, kwargs)), with_kwargs=True
    )
    generate = model.generate

    def checked_generate(*args: Any, **kwargs: Any) -> Any:
        _check_inputs("generate", (args, {k: v for k, v in kwargs.items() if k != "tokenizer"}))
        return generate(*args, **kwargs)

    model.generate = checked_generate
    return model
