"""The anchor cost of Eq. (1)–(3) (assign/cost.py) on hand-made inputs with known answers."""

import math

import pytest
import torch

from paa_toolkit.assign.cost import anchor_cost, focal_loss_per_anchor

LN2 = math.log(2.0)
FOCAL_NEG = 0.75 * 0.25 * LN2  # (1-α)·p^γ·(-log(1-p)) at p = 0.5
FOCAL_POS = 0.25 * 0.25 * LN2  # α·(1-p)^γ·(-log p) at p = 0.5

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
HALF = [0.0, 0.0, 10.0, 20.0]  # IoU 0.5 with GT, enclosing box = union → GIoU loss 0.5
EXACT = [0.0, 0.0, 10.0, 10.0]


def test_focal_loss_sums_over_classes_with_background_label_minus_one():
    logits = torch.zeros(1, 2, 2)
    loss = focal_loss_per_anchor(logits, torch.tensor([[-1, 1]]))
    assert loss[0].tolist() == pytest.approx([2 * FOCAL_NEG, FOCAL_NEG + FOCAL_POS])


@pytest.mark.parametrize("score_lambda", [0.0, 1.0, 2.0])
def test_anchor_cost_is_focal_plus_lambda_giou_loss(score_lambda):
    cost = anchor_cost(
        torch.zeros(1, 2, 2), torch.tensor([[EXACT, HALF]]), torch.tensor([[1, 1]]), GT.expand(1, 2, 4), score_lambda
    )
    focal = FOCAL_NEG + FOCAL_POS
    assert cost[0].tolist() == pytest.approx([focal, focal + score_lambda * 0.5])
