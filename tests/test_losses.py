import math

import pytest
import torch

from ordclip.losses import ce_loss, t2i_kl_loss


def test_kl_one_present_rank_by_hand():
    # y = [0, 0]: only rank 0 present; its target over the 2 images is softmax([10, 10]) = [.5, .5].
    # log softmax over images of logits.T row 0 = [1, 0] -> [1 - log(1+e), -log(1+e)].
    # KL = Σ .5 (log .5 - log q) = log .5 + log(1 + e) - .5; divided by 1 present rank.
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 0])
    expected = math.log(0.5) + math.log(1 + math.e) - 0.5
    assert t2i_kl_loss(logits, y).item() == pytest.approx(expected, rel=1e-6)


def test_kl_two_ranks_each_present_by_hand():
    # y = [0, 1]: target of rank 0 over images = softmax([10, 0]) = [a, 1-a], a = 1/(1+e^-10);
    # rank 1 mirrored. logits.T rows: rank 0 [2, 0], rank 1 [0, 1].
    a = 1 / (1 + math.exp(-10))
    t = [a, 1 - a]
    lq0 = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]
    lq1 = [-math.log(1 + math.e), 1 - math.log(1 + math.e)]
    kl0 = sum(ti * (math.log(ti) - lq) for ti, lq in zip(t, lq0))
    kl1 = sum(ti * (math.log(ti) - lq) for ti, lq in zip(t[::-1], lq1))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    got = t2i_kl_loss(logits, torch.tensor([0, 1])).item()
    assert got == pytest.approx((kl0 + kl1) / 2, rel=1e-9)


def test_kl_absent_rank_contributes_nothing():
    # Adding a third rank that no image has must not change the loss (absent rows have no target).
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    padded = torch.cat([logits, torch.tensor([[5.0], [-3.0]], dtype=torch.float64)], dim=1)
    assert t2i_kl_loss(padded, y).item() == pytest.approx(t2i_kl_loss(logits, y).item(), rel=1e-12)


def test_kl_batch_of_one():
    # One image, its rank present: target = [1], prediction softmax over one image = [1] -> 0.
    assert t2i_kl_loss(torch.tensor([[0.3, -1.0, 2.0]]), torch.tensor([2])).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_gradient_flows():
    logits = torch.randn(6, 4, requires_grad=True)
    t2i_kl_loss(logits, torch.tensor([0, 1, 1, 3, 3, 3])).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_ce_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    assert ce_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
