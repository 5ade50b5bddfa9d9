"""CPU speed levers (engine/precision.py): bf16 autocast of the backbone, detected at run time."""

from __future__ import annotations

import pytest
import torch

from paa_toolkit.engine.config import ModelConfig
from paa_toolkit.engine.precision import apply_speed_levers, bf16_backbone, cpu_has_native_bf16, uses_cpu_bf16
from paa_toolkit.model.detector import build_model


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_native_bf16(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")  # AVX-512 without BF16
    assert not cpu_has_native_bf16.__wrapped__(str(cpuinfo))
    assert not cpu_has_native_bf16.__wrapped__(str(tmp_path / "missing"))


def test_the_setting_resolves_per_device():
    cpu = torch.device("cpu")
    assert uses_cpu_bf16("on", cpu) and not uses_cpu_bf16("off", cpu)
    assert uses_cpu_bf16("auto", cpu) == cpu_has_native_bf16()
    assert not uses_cpu_bf16("on", torch.device("cuda"))  # CUDA has solver.amp
    with pytest.raises(ValueError, match="solver.bf16: unknown value 'fp8'"):
        uses_cpu_bf16("fp8", cpu)


def _batch(size: int = 128):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 30.0, 120.0, 110.0]]), "labels": torch.tensor([1, 3])}
        for _ in range(2)
    ]
    return images, targets


def _losses(arch: str, bf16: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(arch=arch, width=32, min_size=128, max_size=128, pyramid="p2-p6", size_divisible=64), num_classes=4
    )
    model.train()
    apply_speed_levers(model, bf16, channels_last=False, device=torch.device("cpu"))
    images, targets = _batch()
    return model(images, targets)


@pytest.mark.parametrize("arch", ["paa", "fcos"])
def test_bf16_changes_no_loss_beyond_tolerance_on_a_fixed_batch(arch):
    """The backbone in bf16 (8 bits of mantissa) moves each loss term by well under 2 % at initialisation; a
    bf16 head or bf16 losses (what the cast back to float32 prevents) would move them more."""
    fp32, bf16 = _losses(arch, "off"), _losses(arch, "on")
    assert fp32.keys() == bf16.keys()
    for key in fp32:
        assert bf16[key].dtype == torch.float32, key
        torch.testing.assert_close(bf16[key], fp32[key], rtol=0.02, atol=1e-3, msg=key)


def test_bf16_runs_only_with_gradients_and_returns_float32_features():
    seen = []

    def forward(x):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"p2": torch.nn.functional.conv2d(x, torch.ones(2, 3, 1, 1))}

    wrapped = bf16_backbone(forward)
    features = wrapped(torch.rand(1, 3, 8, 8))
    assert seen == [True] and features["p2"].dtype == torch.float32
    with torch.no_grad():  # evaluation and traces stay float32
        wrapped(torch.rand(1, 3, 8, 8))
    assert seen == [True, False]
