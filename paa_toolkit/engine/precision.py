"""CPU speed levers of a training run: bf16 autocast of the backbone, channels-last memory format.

    if uses_cpu_bf16(cfg.solver.bf16, device):      # "auto": only where the CPU computes bf16 natively
        model.backbone.forward = bf16_backbone(model.backbone.forward)

Only the backbone and FPN (most of the compute) run in bfloat16; their outputs are cast back to float32,
so the head, the assignment (Procedure 1) and the losses (Eq. 8) see the same dtypes as in a float32
run, for PAA and the torchvision baselines alike. Evaluation and traces run without gradients and stay
float32: the AP of a bf16-trained model is measured exactly as that of a float32 one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

BF16_CHOICES = ("off", "auto", "on")
#: /proc/cpuinfo flags of CPUs with bfloat16 arithmetic in hardware (AVX512-BF16, AMX)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (elsewhere oneDNN emulates it, slower than float32)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def uses_cpu_bf16(setting: str, device: torch.device) -> bool:
    """``solver.bf16`` resolved on ``device``: "on" always on the CPU, "auto" where it is native, never on GPUs
    (CUDA has ``solver.amp``)."""
    if setting not in BF16_CHOICES:
        raise ValueError(f"solver.bf16: unknown value {setting!r}; valid choices: {', '.join(BF16_CHOICES)}")
    if device.type != "cpu" or setting == "off":
        return False
    return setting == "on" or cpu_has_native_bf16()


def bf16_backbone(forward: Callable) -> Callable:
    """``forward`` (a backbone's, returning a dict of feature maps) under bf16 autocast while gradients are
    on (training), its outputs cast back to float32; unchanged without gradients (evaluation, traces)."""

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = forward(*args, **kwargs)
        return type(features)((name, f.float()) for name, f in features.items())

    return wrapped


def apply_speed_levers(model: torch.nn.Module, bf16: str, channels_last: bool, device: torch.device) -> str:
    """Apply ``solver.bf16`` and ``solver.channels_last`` to ``model`` in place; returns what the backbone
    computes in ("bfloat16" or "float32") for the log."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    backbone = getattr(model, "backbone", None)
    if not uses_cpu_bf16(bf16, device):
        if bf16 == "auto" and device.type == "cpu":
            log.info(
                "solver.bf16 auto: this CPU has no native bf16 (%s); training in float32", "/".join(NATIVE_BF16_FLAGS)
            )
        return "float32"
    if backbone is None:
        log.warning("solver.bf16: the model has no .backbone; training in float32")
        return "float32"
    backbone.forward = bf16_backbone(backbone.forward)
    return "bfloat16"


__all__ = [
    "BF16_CHOICES",
    "NATIVE_BF16_FLAGS",
    "apply_speed_levers",
    "bf16_backbone",
    "cpu_has_native_bf16",
    "uses_cpu_bf16",
]
