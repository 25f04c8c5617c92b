"""The LoRA update added into the base projection's output in place: one `addmm_` instead of PEFT's three ops.

PEFT's `lora.Linear.forward` (peft 0.21) computes `result = result + lora_B(lora_A(dropout(x))) * scaling`, which
allocates three full-width temporaries per adapted layer and step: B's output, its scaled copy and the sum. With
LoRA on all linear layers that is a large share of what the forward allocates besides the saved activations, and
on CPU glibc cannot reuse the holes these temporaries leave between saved tensors: measured on SmolLM2-135M, a
packed 518-token micro-batch saves 636 MB of activations for backward, yet the heap held another 490-670 MB of
freed, unreusable chunks at the end of the forward (165-270 MB with this forward).
`FusedLoraLinear.forward` computes the same sum with `result.addmm_(lora_A(dropout(x)), B^T, alpha=scaling)`
into the base output, which the frozen base `nn.Linear`'s backward does not need (autograd raises, never silently
miscomputes, if an in-place update would corrupt a saved tensor). Autograd's `AddmmBackward` then gives B the
gradient `scaling * g^T (x A^T)` and `x A^T` the gradient `scaling * g B`: the same math, so losses and gradients
agree with PEFT's path to float rounding (tests: 1e-5).

Only the plain case is fused: one active vanilla adapter, not merged, no bias on B, the input, base and adapter
in one dtype, no autocast, no extra forward arguments. Everything else (disabled or merged adapters, DoRA and
other variants, several adapters, `adapter_names` batches) takes PEFT's own forward unchanged. A quantized base
(`model.quantize`) is never fused: PEFT wraps bitsandbytes layers in its own `lora.bnb.Linear4bit`/`Linear8bitLt`,
whose forward dequantizes and casts, and which are not the `lora.Linear` over a plain `nn.Linear` swapped here.
The swap changes the class of `lora.Linear` modules only; the parameters, their names and `save_pretrained` output
are PEFT's.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear


class FusedLoraLinear(LoraLinear):
    """`peft.tuners.lora.Linear` whose plain-case forward adds the LoRA product into the base output in place."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = self._fusable_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        down = self.lora_A[adapter](self.lora_dropout[adapter](x))  # dropout drawn exactly as PEFT draws it
        up_weight = self.lora_B[adapter].weight
        result.view(-1, result.shape[-1]).addmm_(
            down.view(-1, down.shape[-1]), up_weight.t(), alpha=self.scaling[adapter]
        )
        return result

    def _fusable_adapter(self, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The one active vanilla adapter when the in-place form computes exactly PEFT's sum, else None."""
        if args or kwargs or self.disable_adapters or self.merged or torch.is_autocast_enabled(x.device.type):
            return None
        active = [name for name in self.active_adapters if name in self.lora_A]
        if len(active) != 1 or active[0] in self.lora_variant:
            return None
        adapter = active[0]
        lora_b = self.lora_B[adapter]
        same_dtype = x.dtype == self.base_layer.weight.dtype == self.lora_A[adapter].weight.dtype == lora_b.weight.dtype
        return adapter if same_dtype and lora_b.bias is None else None


def enable_fused_lora(model: Any) -> int:
    """Give every PEFT `lora.Linear` over an `nn.Linear` in `model` the fused forward; returns how many.

    Exact types: a subclass of either (bitsandbytes' `Linear4bit` is an `nn.Linear`) may compute otherwise. Swapping
    the class (rather than assigning `module.forward`) keeps hooks that wrap `forward` working."""
    fused = 0
    for module in model.modules():
        if type(module) is LoraLinear and type(module.base_layer) is torch.nn.Linear:
            module.__class__ = FusedLoraLinear
            fused += 1
    return fused
