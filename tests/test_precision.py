"""Logits, and NumCLIP's regressor, are computed in float32 even under bf16 autocast (issue 20,
item 1): in bf16 a logit near 100·cos ∈ [16, 32) steps by 0.125, so neighbouring ranks would tie and
argmax would take the lower one. CPU autocast stands in for the GPU's here: the same dtype rules."""

import math

import numpy as np
import pytest
import torch

from ordclip.methods.base import scaled_logits
from ordclip.metrics import predict
from ordclip.runs import make_task
from test_l2rclip_numclip import L2R, NUM, _build, _dataset

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def _two_ranks_apart(gap: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image feature and two unit text rows at cos 0.2 and 0.2 + gap/100, logit scale ln 100."""
    image = torch.zeros(1, 8)
    image[0, 0] = 1.0
    text = torch.zeros(2, 8)
    for i, c in enumerate((0.2, 0.2 + gap / 100)):
        text[i, 0], text[i, 1] = c, math.sqrt(1 - c * c)
    return torch.tensor(math.log(100.0)), image, text


def test_two_ranks_closer_than_a_bf16_step_are_not_tied():
    scale, image, text = _two_ranks_apart(0.04)  # logits 20.00 and 20.04; bf16's step at 20 is 0.125
    with torch.autocast(**BF16):
        plain = scale.exp() * image @ text.T       # what a matmul under autocast gives
        logits = scaled_logits(scale, image, text)
    assert plain.dtype == torch.bfloat16 and plain[0, 0] == plain[0, 1]   # the tie this avoids
    assert predict(plain, "max").tolist() == [0.0]                         # argmax takes the lower rank
    assert logits.dtype == torch.float32
    assert logits[0, 1] - logits[0, 0] == pytest.approx(0.04, abs=1e-4)
    assert predict(logits, "max").tolist() == [1.0]
    # outside autocast: the same operation as before, bit for bit
    assert torch.equal(scaled_logits(scale, image, text), scale.exp() * image @ text.T)


def test_logits_stay_float32_through_backward_under_autocast():
    scale, image, text = _two_ranks_apart(0.04)
    image.requires_grad_(True)
    with torch.autocast(**BF16):
        logits = scaled_logits(scale, image, text)
    logits[0, 1].backward()
    assert image.grad.dtype == torch.float32 and torch.allclose(image.grad[0], 100 * text[1])


@pytest.mark.parametrize("kind", ["coop", "ordinalclip", "l2rclip", "numclip", "baseline"])
def test_every_trained_method_predicts_float32_under_autocast(kind):
    if kind == "numclip":
        task = make_task(_dataset([1, 10], coarse={"starts": [1, 3, 5, 7, 9], "names": list("abcde")}),
                         np.array([1]))
    else:
        task = make_task(_dataset([0, 5]), np.array([0]))
    cfg = {"l2rclip": L2R, "numclip": NUM}.get(kind, {"init_context": True, "n_ctx": 4, "tokens_per_rank": 1,
                                                    "init_ranks": True, "num_base_ranks": 3,
                                                    "interpolation": "linear", "head_seed": 0})
    method = _build(kind, cfg, task).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = method.predict(images)
        with torch.autocast(**BF16):
            out = method.predict(images)
    for key, value in out.items():
        assert value.dtype == torch.float32, key
        assert plain[key].dtype == torch.float32, key
        # the image tower ran in bf16, so only the features' rounding separates the two
        assert torch.allclose(value, plain[key], rtol=0.05, atol=0.5), key


def test_numclip_regressor_runs_in_float32_under_autocast():
    """ŷ = Σ p_k a_k / (1 + Δ_k): in bf16, 1 + Δ steps by 2⁻⁷ and ŷ near 65 by 0.5."""
    from ordclip.methods.numclip import SSRRegressor

    torch.manual_seed(0)
    reg = SSRRegressor([0.0, 13.0, 19.0, 35.0, 65.0])
    for layer in (reg.hidden, reg.delta):
        torch.nn.init.normal_(layer.weight, std=0.3)
    logits = torch.randn(16, 5) * 5
    with torch.no_grad():
        exact = reg(logits)
        with torch.autocast(**BF16):
            got = reg(logits)
    assert got.dtype == torch.float32 and torch.equal(got, exact)
