"""Specifications of the CUDA path: AMP training, the assigner and float32 EM on a GPU agree with the CPU.

Every test here is marked ``cuda``: skipped where no CUDA device is available (tests/conftest.py),
run by ``pytest -m cuda`` and by ``benchmarks/gpu_check.py``.
"""

from dataclasses import replace

import pytest
import torch

from paa_toolkit.assign import build_assigner, fit_gmm
from paa_toolkit.engine import TrainConfig
from paa_toolkit.model.detector import build_model
from paa_toolkit.structures import decode_boxes, make_anchor_grid, pad_targets

pytestmark = pytest.mark.cuda
DEVICE = "cuda"


def two_images(device: str) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 128, generator=gen).to(device) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 8.0, 120.0, 50.0]], device=device),
            "labels": torch.tensor([1, 2], device=device),
        },
        {
            "boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]], device=device),
            "labels": torch.tensor([0], device=device),
        },
    ]
    return images, targets


def test_amp_training_steps_on_cuda_keep_losses_and_weights_finite():
    torch.manual_seed(0)
    cfg = replace(TrainConfig().model, width=32, min_size=128, max_size=128)
    model = build_model(cfg, num_classes=3).to(DEVICE).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(DEVICE)
    images, targets = two_images(DEVICE)
    for _ in range(3):
        with torch.autocast(DEVICE):
            losses = model(images, targets)
        assert set(losses) == {"loss_cls", "loss_box", "loss_iou"}
        assert all(bool(torch.isfinite(v)) for v in losses.values()), losses
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizer)
        scaler.update()
    assert model.last_stats["num_pos"] > 0  # the assigner found positives under autocast
    assert all(bool(p.isfinite().all()) for p in model.parameters())


def test_paa_assignment_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    sizes, strides = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)], [8, 16, 32, 64, 128]
    boxes = [
        torch.tensor([[30.0, 40.0, 120.0, 90.0], [150.0, 20.0, 230.0, 160.0], [10.0, 150.0, 60.0, 250.0]]),
        torch.tensor([[60.0, 60.0, 200.0, 220.0]]),
    ]
    anchors_cpu = make_anchor_grid(sizes, strides, scale=8)
    num_anchors = anchors_cpu.boxes.shape[0]
    cls_logits = torch.randn(2, num_anchors, 5, generator=gen)
    deltas = 0.1 * torch.randn(2, num_anchors, 4, generator=gen)
    assigner = build_assigner("paa", boundary="c", topk=9)

    def assign(device: str):
        anchors = make_anchor_grid(sizes, strides, scale=8, device=device)
        targets = pad_targets(
            [{"boxes": b.to(device), "labels": torch.tensor([1] * len(b), device=device)} for b in boxes], device=device
        )
        pred = decode_boxes(deltas.to(device), anchors.boxes)
        return assigner(anchors, targets, cls_logits.to(device), pred).matched_gt.cpu()

    cpu, gpu = assign("cpu"), assign(DEVICE)
    positives_cpu, positives_gpu = cpu >= 0, gpu >= 0
    assert positives_cpu.sum() >= 4  # every GT gets positives: the comparison has something to compare
    overlap = (positives_cpu & positives_gpu).sum() / (positives_cpu | positives_gpu).sum()
    assert overlap >= 0.95, f"positive sets overlap {float(overlap):.3f}"
    both = positives_cpu & positives_gpu
    assert torch.equal(cpu[both], gpu[both])  # a shared positive belongs to the same GT


def test_gmm_float32_on_cuda_gives_the_cpu_float64_labels_on_separated_costs():
    gen = torch.Generator().manual_seed(0)
    costs = torch.cat(
        [0.5 + 0.3 * torch.rand(512, 12, generator=gen), 4.0 + 1.5 * torch.rand(512, 33, generator=gen)], 1
    )
    fit32 = fit_gmm(costs.to(DEVICE), dtype=torch.float32)
    assert fit32.labels.device.type == "cuda" and fit32.means.dtype == torch.float32
    assert torch.equal(fit32.labels.cpu(), fit_gmm(costs, dtype=torch.float64).labels)
