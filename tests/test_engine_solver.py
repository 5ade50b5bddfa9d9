"""Specifications of the optimiser's lr schedule: linear warm-up, steps at the paper's fractions, batch scaling."""

import pytest
import torch
from torch import nn

from paa_toolkit.engine.config import SolverConfig
from paa_toolkit.engine.solver import WarmupStepSchedule, build_optimizer, lr_at


def test_lr_warms_up_linearly_then_steps_at_the_paper_fractions():
    solver = SolverConfig(lr=0.01, reference_batch_size=16, warmup_iters=10, warmup_factor=1 / 3, max_iters=135)
    lr = [lr_at(i, solver, batch_size=16) for i in range(135)]
    assert lr[0] == pytest.approx(0.01 / 3)
    assert lr[5] == pytest.approx(0.01 * (1 / 3 * 0.5 + 0.5))
    assert lr[10] == lr[89] == pytest.approx(0.01)
    assert lr[90] == lr[119] == pytest.approx(0.001)  # 90k / 135k
    assert lr[120] == pytest.approx(0.0001)  # 120k / 135k
    assert lr_at(20, solver, batch_size=4) == pytest.approx(0.0025)  # linear scaling to the batch


def test_lambda_lr_scheduler_follows_the_schedule():
    solver = SolverConfig(lr=0.1, reference_batch_size=1, warmup_iters=3, max_iters=8, step_fractions=[0.5])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupStepSchedule(solver))
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(i, solver, 1) for i in range(8)])


def test_the_fused_sgd_step_on_the_cpu_gives_the_plain_updates_up_to_the_last_bit_of_short_tensors():
    """build_optimizer's fused kernel is a speed lever only: weight decay groups, momentum and the lr schedule give the
    plain per-tensor SGD's weights — bit for bit on tensors of a vector's length or more, and within rounding on
    shorter ones (a detector's box-regression and IoU biases have 4 and 1 values: measured, they differ by 1 ulp)."""
    solver = SolverConfig(lr=0.05, reference_batch_size=4, warmup_iters=2, max_iters=6, weight_decay=1e-3)

    def trained(fused: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.GroupNorm(4, 32), nn.ReLU(), nn.Conv2d(32, 4, 1), nn.Flatten(), nn.LazyLinear(1)
        )
        model(torch.zeros(1, 3, 6, 6))
        start = [p.detach().clone() for p in model.parameters()]
        opt = build_optimizer(model, solver, batch_size=4)
        assert opt.defaults["fused"] is True
        if not fused:
            for group in opt.param_groups:
                group["fused"] = None
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupStepSchedule(solver))
        data = torch.randn(6, 4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
        for batch in data:
            opt.zero_grad()
            model(batch).square().mean().backward()
            opt.step()
            sched.step()
        return start, [p.detach().clone() for p in model.parameters()]

    (start, fused), (_, plain) = trained(True), trained(False)
    assert {p.numel() for p in fused} >= {1, 4, 32, 864}  # short biases and long weights
    for a, b in zip(fused, plain):
        assert torch.equal(a, b) if a.numel() >= 16 else torch.allclose(a, b, rtol=1e-6, atol=0)
    assert not any(torch.equal(a, b) for a, b in zip(start, fused))  # every tensor moved
