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


def test_the_fused_sgd_step_on_the_cpu_gives_the_plain_updates_within_rounding():
    """build_optimizer's fused kernel is a speed lever only: weight decay groups, momentum and the lr schedule give the
    plain per-tensor SGD's weights within the last bit or two of rounding. Bit for bit is not promised: measured, the
    Sapphire Rapids machine on 2 threads matched on every tensor of 16 values or more and differed by 1 ulp on the
    4- and 1-value biases; the AMD EPYC on 2 threads matched everywhere, on 1 thread differed on 6 of 8 tensors."""
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
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)
    assert not any(torch.equal(a, b) for a, b in zip(start, fused))  # every tensor moved


def test_new_layers_lr_factor_scales_fpn_and_head_but_not_the_body_through_the_whole_schedule():
    """solver.new_layers_lr_factor: the layers a pre-trained body does not initialise (FPN, head) step with the lr × the
    factor, the ResNet body with the lr, warm-up and steps alike; at 1 (the paper) the two weight-decay groups of
    earlier checkpoints stay as they were."""
    from paa_toolkit.engine.config import ModelConfig
    from paa_toolkit.model.detector import build_model

    model = build_model(ModelConfig(backbone="resnet18", width=32, min_size=64, max_size=64), num_classes=3)
    body = {id(p) for p in model.backbone.body.parameters()}
    solver = SolverConfig(lr=0.01, reference_batch_size=4, warmup_iters=4, max_iters=12, new_layers_lr_factor=4.0)
    opt = build_optimizer(model, solver, batch_size=4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupStepSchedule(solver))
    trained = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trained)
    for _ in range(12):
        for group in opt.param_groups:
            in_body = {id(p) in body for p in group["params"]}
            assert len(in_body) == 1  # a group is all body or all FPN + head
            factor = 1.0 if in_body == {True} else 4.0
            assert group["lr"] == pytest.approx(factor * lr_at(sched.last_epoch, solver, 4))
            assert group["weight_decay"] == (0.0 if group["params"][0].ndim <= 1 else solver.weight_decay)
        opt.step()
        sched.step()

    paper = build_optimizer(model, SolverConfig(lr=0.01, reference_batch_size=4), batch_size=4)
    assert [g["weight_decay"] for g in paper.param_groups] == [1e-4, 0.0]
    assert {g["lr"] for g in paper.param_groups} == {0.01}


def test_new_layers_lr_factor_on_a_model_without_a_body_is_an_error_not_ignored():
    solver = SolverConfig(new_layers_lr_factor=4.0)
    with pytest.raises(ValueError, match=r"new_layers_lr_factor 4 needs a model with a ResNet body .*Sequential"):
        build_optimizer(nn.Sequential(nn.Linear(2, 2)), solver, batch_size=4)


def test_new_layers_lr_factor_must_be_positive():
    from paa_toolkit.engine.config import ConfigError, TrainConfig, validate

    cfg = TrainConfig()
    cfg.solver.new_layers_lr_factor = 0.0
    with pytest.raises(ConfigError, match="solver.new_layers_lr_factor must be > 0, got 0.0"):
        validate(cfg)
