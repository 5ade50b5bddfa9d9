"""Specifications of the optimiser's lr schedule: linear warm-up, steps at the paper's fractions, batch scaling."""

import pytest
import torch
from torch import nn

from paa_toolkit.engine.config import SolverConfig
from paa_toolkit.engine.solver import WarmupStepSchedule, lr_at


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
