"""`model.quantize`: the frozen base through bitsandbytes (8-bit, or 4-bit NF4 as QLoRA), trainable on CPU as on GPU.

Two things bitsandbytes (0.50) does on CPU that a fine-tune cannot have:

- On a CPU with AVX512-BF16, the first forward of a `Linear4bit` in eval mode without gradients (the base model's
  evaluation before training, the Trainer's validation) repacks its weight, for good, into a bf16 inference layout.
  Every later forward, training included, then runs the `gemv_4bit` kernel, which has no backward: the gradient
  through the frozen base weight is silently lost, and LoRA trains on wrong gradients. The repacking also fails
  outright ("shape '[32, 0]' is invalid") for a layer whose input width is not a multiple of 64.
  `keep_4bit_layers_differentiable` switches the repacking off: eval then computes as training does (dequantize,
  then a matmul in `model.dtype`), on any CPU and for any layer width.
- It logs, on import, that an optional kernel from the hub is missing (tunewise never downloads code), and in 8-bit
  eval, once per layer and forward, that inputs are cast to float16. `quiet_bitsandbytes` drops the first and keeps
  one of the second.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from tunewise.errors import ModelLoadError

INSTALL_HINT = "pip install 'tunewise[qlora]'"


def bitsandbytes_config(quantize: str, compute_dtype: torch.dtype) -> Any:
    """transformers' `BitsAndBytesConfig` for `model.quantize` 8bit or 4bit (QLoRA's recipe: NF4, double
    quantization, computing in the model's dtype). One line naming the install when bitsandbytes is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"model.quantize: {quantize} loads the base through bitsandbytes, which is not installed: "
            f"{INSTALL_HINT} (or pip install 'bitsandbytes>=0.47'), or set model.quantize: none"
        )
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def keep_4bit_layers_differentiable(model: Any) -> int:
    """Switch off bitsandbytes' CPU inference repacking in every 4-bit layer of `model` (see the module docstring);
    returns how many layers. On GPU the switch is never read."""
    from bitsandbytes.nn import Linear4bit

    layers = [module for module in model.modules() if isinstance(module, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False  # what Linear4bit.forward reads (0.50); tests check the effect
    return len(layers)


# (logger, message start, how many to let through): bitsandbytes' log lines that say nothing a user can act on.
NOISE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community", 0),
    ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast from", 1),
)


class DropRepeats(logging.Filter):
    """Lets through the first `keep` records whose message starts with `prefix`, then drops them."""

    def __init__(self, prefix: str, keep: int) -> None:
        super().__init__()
        self.prefix, self.left = prefix, keep

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        self.left -= 1
        return self.left >= 0


def quiet_bitsandbytes() -> None:
    """Filter bitsandbytes' noise (NOISE); idempotent. Runs when this module is imported: `import peft` already
    imports bitsandbytes when it is installed, whatever `model.quantize` says, and logs the first line then."""
    for name, prefix, keep in NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropRepeats) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(DropRepeats(prefix, keep))


quiet_bitsandbytes()
