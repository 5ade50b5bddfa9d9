"""The optimiser and its learning-rate schedule (Appendix A.1), scaled to the batch size.

    optimizer = build_optimizer(model, cfg.solver, batch_size)                        # SGD
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupStepSchedule(cfg.solver))

SGD, momentum 0.9, weight decay 1e-4 (none on norms and biases); linear warm-up, then ÷10 at 90k/135k
and 120k/135k of the run; the lr scaled linearly to the actual batch (Goyal et al. [9]). On the CPU and CUDA the
step runs as PyTorch's fused SGD kernel: the same update, 2.5 × faster per optimizer step on the CPU and 11 % less
wall time for a whole ``bench-pretrained`` training with the stem's max-pool lever (benchmarks/README.md §8). It
agrees with the per-tensor loop within the last bit of rounding, not bit for bit: measured, on the Sapphire Rapids
machine (2 threads) the box-regression and IoU-prediction biases (4 and 1 values) differ by 1 ulp, on an AMD EPYC
(1 thread) most tensors do. So a long training's trajectory departs from the plain kernel's as it does from another
thread count's.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SolverConfig

#: devices whose fused SGD kernel this toolkit has checked against the plain update (tests/test_engine_solver.py)
FUSED_SGD_DEVICES = frozenset({"cpu", "cuda"})


def body_parameter_ids(model: nn.Module) -> set[int]:
    """``id`` of every parameter of the model's ResNet body (``model.backbone.body``: PAA's detector and
    torchvision's FCOS / RetinaNet alike); empty for a model without one."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    return {id(p) for p in body.parameters()} if isinstance(body, nn.Module) else set()


def build_optimizer(model: nn.Module, solver: SolverConfig, batch_size: int) -> torch.optim.SGD:
    """SGD with the linearly scaled lr; no weight decay on 1-D parameters (norm scales, biases). Fused (one kernel
    over all parameters) where every parameter is a float tensor on a :data:`FUSED_SGD_DEVICES` device.

    With ``solver.new_layers_lr_factor`` ≠ 1 the layers outside the ResNet body (FPN and head, the ones a
    pre-trained body leaves at random init) step with the lr times that factor; the body keeps the lr. At 1 (the
    paper) every parameter shares one lr, in the two weight-decay groups that checkpoints of earlier runs hold."""
    lr = solver.scaled_lr(batch_size)
    body = body_parameter_ids(model) if solver.new_layers_lr_factor != 1 else set()
    if solver.new_layers_lr_factor != 1 and not body:
        raise ValueError(
            f"solver.new_layers_lr_factor {solver.new_layers_lr_factor:g} needs a model with a ResNet body "
            f"(model.backbone.body); {type(model).__name__} has none, so every layer would be a new one"
        )
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            new_layer = bool(body) and id(p) not in body
            groups.setdefault((p.ndim > 1, new_layer), []).append(p)
    params = [p for group in groups.values() for p in group]
    fused = bool(params) and all(p.device.type in FUSED_SGD_DEVICES and p.is_floating_point() for p in params)
    param_groups = [
        {
            "params": groups.get((decays, new_layer), []),
            "weight_decay": solver.weight_decay if decays else 0.0,
            "lr": lr * (solver.new_layers_lr_factor if new_layer else 1.0),
        }
        for new_layer in ((False, True) if body else (False,))
        for decays in (True, False)
    ]
    return torch.optim.SGD(param_groups, lr=lr, momentum=solver.momentum, fused=fused or None)


class WarmupStepSchedule:
    """lr factor at an iteration: linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters``
    (Goyal et al. [9]), times ``gamma`` per milestone passed (Appendix A.1). Picklable for LambdaLR."""

    def __init__(self, solver: SolverConfig):
        self.warmup_iters, self.warmup_factor = solver.warmup_iters, solver.warmup_factor
        self.milestones, self.gamma = solver.milestones(), solver.gamma

    def __call__(self, iteration: int) -> float:
        warmup = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warmup = self.warmup_factor * (1 - alpha) + alpha
        return warmup * self.gamma ** sum(iteration >= m for m in self.milestones)


def lr_at(iteration: int, solver: SolverConfig, batch_size: int) -> float:
    """The learning rate used for the step of ``iteration`` (0-based)."""
    return solver.scaled_lr(batch_size) * WarmupStepSchedule(solver)(iteration)


__all__ = ["FUSED_SGD_DEVICES", "WarmupStepSchedule", "body_parameter_ids", "build_optimizer", "lr_at"]
