"""The fast path on GPUs: precision by device capability, TF32, fused optimizers, torch.compile.

Every choice is a small function of (what was asked, what the device can do), so the selection is
tested on CPU with the capability passed in:

- ``--precision=auto``: bf16 autocast on GPUs with bf16 tensor cores (compute capability 8.0+:
  A100, A10G, L4, H100…), fp16 autocast with a ``GradScaler`` on older GPUs (V100 and T4 have
  no bf16 tensor cores; ``torch.cuda.is_bf16_supported()`` says True there because it counts
  emulation), fp32 on CPU. ``bf16`` on a GPU without bf16 tensor cores is refused (the message
  says to use ``auto`` or ``fp16``) rather than silently emulated. ``fp16`` works on CPU too
  (autocast + loss scaling), which is how its code path is tested here.
- On CUDA: TF32 for fp32 matmuls (``torch.backends.cuda.matmul.fp32_precision = "tf32"``; the
  autocast ops run in bf16/fp16 anyway), and fused AdamW/SGD kernels — one launch for all
  parameters, and with a ``GradScaler`` no host sync to look for infs.
- ``--compile``: ``torch.compile(dynamic=True)`` (dynamic padding changes the sequence length per
  batch) of the DDP-wrapped model, so DDP's bucketing splits the graph; evaluation runs eager.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainer.config import ConfigError

logger = logging.getLogger(__name__)

BF16_CAPABILITY = (8, 0)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionPlan:
    """The resolved precision: autocast dtype (None = fp32) and whether losses are scaled."""

    name: str  # bf16 | fp16 | fp32
    device_type: str
    loss_scaling: bool

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.loss_scaling else None


def resolve_precision(requested: str, *, device_type: str, capability: tuple[int, int] | None = None,
                      device_name: str = "") -> PrecisionPlan:
    """``requested`` (``--precision``) on this device. ``capability``: CUDA compute capability."""
    cuda = device_type == "cuda"
    has_bf16 = not cuda or (capability is not None and capability >= BF16_CAPABILITY)
    if requested == "auto":
        name = ("bf16" if has_bf16 else "fp16") if cuda else "fp32"
    else:
        name = requested
    if name == "bf16" and not has_bf16:
        major, minor = capability or (0, 0)
        raise ConfigError(
            f"--precision=bf16: {device_name or 'this GPU'} (compute capability {major}.{minor}) has no bf16 tensor "
            "cores (8.0+ has them); use --precision=auto (fp16 with loss scaling here) or --precision=fp16")
    if name not in ("bf16", "fp16", "fp32"):
        raise ConfigError(f"--precision={requested!r} is not one of auto, bf16, fp16, fp32")
    return PrecisionPlan(name=name, device_type=device_type, loss_scaling=name == "fp16")


def device_precision(requested: str, device: torch.device) -> PrecisionPlan:
    """``resolve_precision`` with the capability of ``device``."""
    if device.type != "cuda":
        return resolve_precision(requested, device_type=device.type)
    return resolve_precision(requested, device_type="cuda", capability=torch.cuda.get_device_capability(device),
                             device_name=torch.cuda.get_device_name(device))


def configure_math(device: torch.device) -> dict[str, str]:
    """TF32 for fp32 matmuls on CUDA (cuDNN convolutions already default to it). Returns what was set."""
    if device.type != "cuda":
        return {}
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    return {"torch.backends.cuda.matmul.fp32_precision": "tf32"}


def optimizer_options(device: torch.device) -> dict[str, Any]:
    """Fused kernels on CUDA; torch's default (foreach) elsewhere."""
    return {"fused": True} if device.type == "cuda" else {}


def maybe_compile(model: torch.nn.Module, enabled: bool,
                  compiler: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``torch.compile(model, dynamic=True)`` when ``enabled`` (what the forward goes through); ``compiler`` is
    for tests."""
    if not enabled:
        return model
    logger.info("torch.compile(dynamic=True) of the training model")
    return (compiler or torch.compile)(model, dynamic=True)
