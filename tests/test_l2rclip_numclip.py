"""L2RCLIP and NumCLIP: their losses against hand-worked values, RankFormer, the regressor, and
which parameters each stage trains."""

import math

import pytest
import torch
import torch.nn.functional as F

from ordclip.losses import (asymmetric_contrastive_loss, ce_loss, fcrc_ce_loss, fcrc_kl_loss,
                            ordinal_pairwise_loss, t2i_kl_loss)
from ordclip.methods import load
from ordclip.methods.numclip import SSRRegressor
from ordclip.models.backbone import create_backbone, tokenizer
from ordclip.models.rankformer import RankFormer
from ordclip.runs import make_task
from ordclip.train import set_trainable
from test_prompts import TINY


def _ce(logits, y):
    return -math.log(math.exp(logits[y]) / sum(math.exp(v) for v in logits))


def test_fcrc_ce_by_hand():
    # y = 0, d = 3: distances 0, 1, 2 (sum 3) -> w = [1, 1/3·2, 2/3·2].
    got = fcrc_ce_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]), 3).item()
    assert got == pytest.approx(_ce([1.0, 2.0 * 2 / 3, 3.0 * 4 / 3], 0), rel=1e-6)


def test_fcrc_ce_reduces_to_ce_when_weights_are_one():
    # Middle class of 3 (distances 1, 0, 1 -> w = 1) and any class of 2 ranks: plain CE.
    logits = torch.randn(4, 3)
    y = torch.tensor([1, 1, 1, 1])
    assert fcrc_ce_loss(logits, y, 3).item() == pytest.approx(ce_loss(logits, y).item(), rel=1e-6)
    two = torch.randn(5, 2)
    y2 = torch.tensor([0, 1, 1, 0, 1])
    assert fcrc_ce_loss(two, y2, 2).item() == pytest.approx(ce_loss(two, y2).item(), rel=1e-6)


def test_fcrc_kl_by_hand_with_an_absent_class():
    # Images of classes 0 and 2 (class 1 absent), d = 3. Row 0 weights: image 0 same class -> 1,
    # image 1 at distance 2 of a total 2 -> 2/2·2 = 2. Row 2 mirrored: [2, 1].
    s = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]  # s[image][class]
    a = 1 / (1 + math.exp(-10))
    t0, t2 = [a, 1 - a], [1 - a, a]

    def kl(target, row):
        m = max(row)
        logz = m + math.log(sum(math.exp(v - m) for v in row))
        return sum(t * (math.log(t) - (v - logz)) for t, v in zip(target, row))

    expected = (kl(t0, [s[0][0] * 1, s[1][0] * 2]) + kl(t2, [s[0][2] * 2, s[1][2] * 1])) / 2
    got = fcrc_kl_loss(torch.tensor(s, dtype=torch.float64), torch.tensor([0, 2]), 3).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_fcrc_kl_batch_of_one_class_is_the_plain_kl():
    logits = torch.randn(4, 5)
    y = torch.tensor([3, 3, 3, 3])
    assert fcrc_kl_loss(logits, y, 5).item() == pytest.approx(t2i_kl_loss(logits, y).item(), rel=1e-6)
    assert torch.isfinite(fcrc_kl_loss(logits, y, 5))


def test_asymmetric_contrastive_by_hand():
    # Texts = images = the 2-D basis, labels [0, 1], logit_scale = log 2: s = 2·I, and each
    # text's one positive has log-probability 2 - log(e² + 1).
    eye = torch.eye(2)
    got = asymmetric_contrastive_loss(eye, eye, torch.tensor([0, 1]), torch.tensor([0, 1]), math.log(2))
    assert got.item() == pytest.approx(-(2 - math.log(math.exp(2) + 1)), rel=1e-6)


def test_asymmetric_contrastive_averages_positives_and_skips_textless_labels():
    # Both images have label 0: text 0 averages its two log-probabilities; text 1 has no positive.
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    got = asymmetric_contrastive_loss(t, f, torch.tensor([0, 1]), torch.tensor([0, 0]), 0.0)
    logp = F.log_softmax(torch.tensor([1.0, 0.6]), dim=0)
    assert got.item() == pytest.approx(-logp.mean().item(), rel=1e-6)


def test_ordinal_pairwise_by_hand_two_ranks():
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Image on rank 0's text, label 0: tightness 0; W = [0, 1]; distances [0, √2] -> -√2/2.
    got = ordinal_pairwise_loss(torch.tensor([[1.0, 0.0]]), texts, torch.tensor([0]))
    assert got.item() == pytest.approx(-math.sqrt(2) / 2, rel=1e-6)
    # Same image, label 1: tightness ‖f - t1‖² = 2; W = [1, 0] times distances [~0, √2] -> ≈ 0.
    got = ordinal_pairwise_loss(torch.tensor([[1.0, 0.0]]), texts, torch.tensor([1]))
    assert got.item() == pytest.approx(2.0, abs=1e-5)


def test_ordinal_pairwise_pushes_far_ranks_harder():
    texts = F.normalize(torch.randn(5, 8), dim=-1)
    f = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_()
    ordinal_pairwise_loss(f, texts, torch.tensor([0, 2, 4])).backward()
    assert torch.isfinite(f.grad).all()


@pytest.mark.parametrize("blend", ["residual", "convex"])
def test_rankformer_identity_at_alpha_zero_and_shapes(blend):
    torch.manual_seed(0)
    ranks, lengths = torch.randn(4, 3, 16), torch.tensor([1, 3, 2, 3])
    assert torch.equal(RankFormer(16, 4, 1, 0.0, blend)(ranks, lengths), ranks)
    out = RankFormer(16, 4, 2, 0.3, blend)(ranks, lengths)
    assert out.shape == (4, 3, 16) and not torch.allclose(out, ranks)


def test_rankformer_ignores_padding():
    torch.manual_seed(0)
    rf = RankFormer(16, 4, 1, 0.5)
    ranks, lengths = torch.randn(3, 2, 16), torch.tensor([1, 2, 1])
    other = ranks.clone()
    other[0, 1] = 100.0  # padding of rank 0
    a, b = rf(ranks, lengths), rf(other, lengths)
    assert torch.allclose(a[1], b[1], atol=1e-6) and torch.allclose(a[0, 0], b[0, 0], atol=1e-6)


def test_regressor_starts_at_the_probability_weighted_bin_starts():
    reg = SSRRegressor([0.0, 13.0, 19.0, 35.0, 65.0])
    logits = torch.randn(6, 5) * 3
    expected = (logits.softmax(-1) * torch.tensor([0.0, 13.0, 19.0, 35.0, 65.0])).sum(-1)
    assert torch.allclose(reg(logits), expected, rtol=1e-3)
    torch.nn.init.zeros_(reg.delta.weight)
    assert torch.allclose(reg(logits), expected, rtol=1e-6)


def _dataset(ranks, names=None, coarse=None):
    cfg = {"name": "d", "ranks": ranks, "prompt": {"context": "the level is"}}
    if names:
        cfg["rank_names"] = names
    if coarse:
        cfg["coarse"] = coarse
    return cfg


def test_quantile_starts_split_the_labels_into_about_equal_bins():
    import numpy as np

    from ordclip.runs import quantile_starts

    labels = np.repeat(np.arange(16, 78), 10)           # uniform ages 16..77, 620 images
    starts = quantile_starts(labels)
    assert starts[0] == 16 and len(starts) == 5
    counts = np.histogram(labels, bins=[*starts, 78])[0]
    assert counts.min() >= 110 and counts.max() <= 130   # 124 each, up to the label granularity
    assert quantile_starts(np.array([3, 3, 3, 9])) == [3, 9]   # duplicates merged


def test_coarse_bins_from_config_and_the_five_level_default():
    import numpy as np

    task = make_task(_dataset([1, 10], coarse={"starts": [1, 3, 5, 7, 9], "names": list("abcde")}), np.array([1]))
    assert task.coarse["starts"] == [1, 3, 5, 7, 9] and task.coarse["context"] == "the level is"
    five = make_task(_dataset([0, 4], names=list("vwxyz")), np.array([0]))
    assert five.coarse["starts"] == [0, 1, 2, 3, 4] and five.coarse["names"] == list("vwxyz")
    seven = make_task(_dataset([0, 6]), np.array([0, 0, 1, 2, 3, 4, 5, 6, 6, 6]))
    assert seven.coarse["starts"] == [0, 1, 3, 5, 6]
    assert seven.coarse["names"] == ["very low", "low", "medium", "high", "very high"]
    assert make_task(_dataset([0, 6]), np.array([2, 2, 2])).coarse is None  # one label value: no bins
    with pytest.raises(Exception, match="first bin starts at 2, above the lowest label 1"):
        make_task(_dataset([1, 10], coarse={"starts": [2, 4, 6, 8, 9], "names": list("abcde")}), np.array([1]))


L2R = {"n_ctx": 4, "init_ranks": True, "tokens_per_rank": 1, "stages": "two", "weight_decay": 5e-4,
       "rankformer": {"enabled": True, "layers": 1, "heads": 4, "alpha": 0.1, "blend": "residual"},
       "stage1": {"epochs": 1, "lr": {"context": 1e-3, "ranks": 0.0, "rankformer": 1e-3},
                  "loss_weights": {"ce": 1.0, "contrastive": 1.0, "ordinal": 1.0}, "view": "resize"},
       "stage2": {"epochs": 1, "lr": {"image_encoder": 1e-3, "projection": 1e-3}, "bias_lr_factor": 2.0,
                  "weight_decay_bias": 1e-4, "loss_weights": {"ce": 1.0, "pairwise": 1.0}, "view": "resize_flip"},
       "single_stage": {"image_encoder_lr_factor": 0.005, "image_encoder_wd_factor": 0.01}}
NUM = {"init_context": True, "n_ctx": 4, "adapter": {"reduction": 4, "ratio": 0.8}, "fcrc": True,
       "lr": {"context": 0.0, "ranks": 1e-3, "image_encoder": 1e-3, "adapter": 1e-3, "regressor": 1e-3},
       "epochs": 1, "loss_weights": {"ce": 1.0, "kl": 1.0, "l1": 1.0}}


def _grads(method, stage):
    set_trainable(method, stage)
    method.zero_grad()
    terms = method.losses(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5]), stage)
    assert set(terms) == set(stage.loss_weights)
    sum(stage.loss_weights[k] * v for k, v in terms.items()).backward()
    return {n for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _build(kind, cfg, task):
    torch.manual_seed(0)
    return load(kind).build(create_backbone(TINY, None), tokenizer(TINY), task, cfg)


def test_l2rclip_stages_train_exactly_their_parameters():
    # make_optimizer_prompt.py: stage 1 the global context and RankFormer (rank words fixed);
    # stage 2 the image encoder and the projection (biases at lr x BIAS_LR_FACTOR).
    import numpy as np

    task = make_task(_dataset([0, 5]), np.array([0]))
    method = _build("l2rclip", L2R, task)
    prompts, image = method.stages()
    got = _grads(method, prompts)
    assert got and all(n.startswith("model.prompts.") for n in got)
    assert any("rank_transform" in n for n in got) and "model.prompts.context" in got
    assert "model.prompts.ranks" not in got
    assert set(prompts.loss_weights) == {"ce", "contrastive", "ordinal"}
    got = _grads(method, image)
    assert got and all(n.startswith("model.backbone.visual.") or n == "model.backbone.text_projection" for n in got)
    assert "model.backbone.text_projection" in got
    groups = {g.name: g for g in image.groups}
    assert groups["image_encoder_bias"].lr == pytest.approx(2e-3) and groups["image_encoder_bias"].weight_decay == 1e-4
    assert all(p.ndim == 1 for p in groups["image_encoder_bias"].params)
    assert (prompts.view, image.view, method.eval_view) == ("resize", "resize_flip", "resize")
    single = _build("l2rclip", {**L2R, "stages": "single"}, task).stages()
    assert len(single) == 1 and set(single[0].loss_weights) == {"ce", "contrastive", "ordinal", "pairwise"}
    one = {g.name: g for g in single[0].groups}
    assert one["image_encoder"].lr == pytest.approx(1e-3 * 0.005)
    assert one["image_encoder"].weight_decay == pytest.approx(5e-4 * 0.01)
    assert one["ranks"].lr == 0.0 and one["context"].lr == 1e-3
    no_rf = _build("l2rclip", {**L2R, "rankformer": {**L2R["rankformer"], "enabled": False}}, task)
    assert no_rf.rankformer is None and [g.name for g in no_rf.stages()[0].groups] == ["context", "ranks"]


def test_numclip_trains_ranks_image_adapter_regressor_not_context_or_text():
    import numpy as np

    task = make_task(_dataset([1, 10], coarse={"starts": [1, 3, 5, 7, 9], "names": list("abcde")}), np.array([1]))
    method = _build("numclip", NUM, task)
    assert method.rank_to_bin.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and not method.bins_are_ranks
    got = _grads(method, method.stages()[0])
    prefixes = {n.split(".")[0] if not n.startswith("model.") else ".".join(n.split(".")[:3]) for n in got}
    assert prefixes == {"model.prompts.ranks", "model.backbone.visual", "adapter", "regressor"}
    out = method.predict(torch.randn(2, 3, 32, 32))
    assert set(out) == {"value", "bin_value"} and out["value"].shape == (2,)


# --- the step without host syncs: masks as arithmetic, frozen features computed once ----------

def _contrastive_by_mask(text, image, text_labels, image_labels, logit_scale):
    """asymmetric_contrastive_loss as it was written with boolean indexing (a host sync)."""
    logits = torch.as_tensor(logit_scale, dtype=text.dtype).exp() * text @ image.T
    mask = (text_labels[:, None] == image_labels[None, :]).to(logits.dtype)
    has_pos = mask.sum(dim=1) > 0
    mean_pos = (mask * F.log_softmax(logits, dim=1)).sum(dim=1)[has_pos] / mask.sum(dim=1)[has_pos]
    return -mean_pos.mean()


def _stage1_by_mask(image, text, center, y):
    """ordinal_stage1_loss as it was written with boolean indexing (a host sync)."""
    b = y.shape[0]
    pairs = torch.triu(torch.ones(b, b, dtype=torch.bool), diagonal=1)
    tightness = (image - center).pow(2).sum(dim=1).mean()
    gaps = (y[:, None] - y[None, :]).abs().to(image.dtype)[pairs]
    w = (gaps - gaps.min()) / gaps.max().clamp_min(1)
    return (-(w * torch.cdist(image, text)[pairs]).mean() + 0.5 * tightness
            - 0.5 * (w * torch.cdist(text, text)[pairs]).mean())


@pytest.mark.parametrize("b", [5, 30])     # cdist computes through a matmul from 25 rows on
def test_l2rclip_losses_without_masks_equal_the_masked_form(b):
    from ordclip.losses import ordinal_stage1_loss

    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(6, 8, generator=gen, dtype=torch.float64), dim=-1).requires_grad_()
    image = F.normalize(torch.randn(b, 8, generator=gen, dtype=torch.float64), dim=-1).requires_grad_()
    y = torch.randint(0, 5, (b,), generator=gen)
    y[0] = 4                              # rank 5 has no image: a text without positives
    y = torch.where(y == 5, 4, y)
    labels = torch.arange(6)
    for ours, theirs, args in [(asymmetric_contrastive_loss, _contrastive_by_mask, (text, image, labels, y, 0.5)),
                               (ordinal_stage1_loss, _stage1_by_mask, (image, text[y], text[y], y))]:
        a, c = ours(*args), theirs(*args)
        ga = torch.autograd.grad(a, [text, image], allow_unused=True, retain_graph=True)
        gc = torch.autograd.grad(c, [text, image], allow_unused=True)
        assert a.item() == pytest.approx(c.item(), rel=1e-12)
        for u, v in zip(ga, gc):
            assert torch.allclose(u, v, rtol=1e-10, atol=1e-14) and not u.isnan().any()


def _l2r_method():
    import numpy as np

    return _build("l2rclip", L2R, make_task(_dataset([0, 5]), np.array([0])))


def test_l2rclip_stage2_computes_its_frozen_prompts_once_and_trains_the_same():
    from ordclip.optim import RAdam

    def steps(cache):
        method = _l2r_method()
        stage = method.stages()[1]
        set_trainable(method, stage)
        opt = RAdam([p for g in stage.groups if g.lr > 0 for p in g.params], lr=1e-2)
        calls = []
        pooled = method.model.pooled_text
        method.model.pooled_text = lambda: calls.append(1) or pooled()
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(7):
            if not cache:
                method._text_cache = None
            terms = method.losses(torch.randn(6, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 3, 4, 5]), stage)
            opt.zero_grad()
            sum(terms.values()).backward()
            opt.step()
            out.append([t.detach() for t in terms.values()] + [p.detach().clone() for p in opt.param_groups[0]["params"]])
        return out, len(calls)

    cached, n_cached = steps(True)
    fresh, n_fresh = steps(False)
    assert (n_cached, n_fresh) == (1, 7)
    for a, b in zip(cached, fresh):         # the same kernels on the same values: bit for bit
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_l2rclip_stage1_computes_its_frozen_image_features_once():
    import dataclasses

    import numpy as np

    from ordclip.data.loader import ImagePipeline, Part

    method = _l2r_method()
    first, second = method.stages()
    part = Part(np.arange(20), torch.randint(0, 256, (20, 36, 36, 3), dtype=torch.uint8), torch.arange(20) % 6)
    pipe = ImagePipeline(32, "imagenet", True, torch.device("cpu"))
    amp = torch.autocast("cpu", enabled=False)
    method.train()
    feats = method.stage_inputs(first, part, pipe, amp, batch_size=7)
    idx = torch.tensor([3, 17, 5, 0])
    with torch.no_grad():
        step = method.model.image_features(pipe(part.images[idx], train=True, view=first.view))
    assert torch.allclose(feats[idx], step, rtol=1e-5, atol=1e-6)    # float rounding (other batch shapes)
    with torch.no_grad():
        a = method.losses(feats[idx], part.ranks[idx], first)
        b = method.losses(pipe(part.images[idx], train=True, view=first.view), part.ranks[idx],
                          dataclasses.replace(first))     # another stage object: features from the images
    assert all(a[k].item() == pytest.approx(b[k].item(), rel=1e-5) for k in a)
    assert method.stage_inputs(second, part, pipe, amp) is None           # stage 2 trains the encoder (and flips)


def test_l2rclip_stage1_features_are_not_cached_for_a_batchnorm_encoder():
    import numpy as np

    from ordclip.data.loader import ImagePipeline, Part

    rn = {**TINY, "name": "tiny_rn", "model": "ordclip-tiny-rn"}
    torch.manual_seed(0)
    method = load("l2rclip").build(create_backbone(rn, None), tokenizer(rn),
                                   make_task(_dataset([0, 5]), np.array([0])), L2R)
    part = Part(np.arange(4), torch.randint(0, 256, (4, 36, 36, 3), dtype=torch.uint8), torch.arange(4))
    pipe = ImagePipeline(32, "imagenet", True, torch.device("cpu"))
    assert method.stage_inputs(method.stages()[0], part, pipe, torch.autocast("cpu", enabled=False)) is None


def test_numclip_official_label_shift_moves_ages_19_35_65_down_a_bin():
    """runner_ssr.py:69 `y = y - 1` before num2label (runner_ssr.py:256-272) and the L1 loss: with
    label_shift 1, ages 19, 35 and 65 fall in the bin below; the target is age − 1 and the prediction
    adds the 1 back, so the MAE is the official |ŷ − (y − 1)|."""
    import numpy as np

    ds = {**_dataset([0, 100]), "dataset_ranks": [16, 77],
          "coarse": {"starts": [0, 13, 19, 35, 65], "names": list("abcde")}}
    task = make_task(ds, np.array([16]))
    ours, official = _build("numclip", NUM, task), _build("numclip", {**NUM, "label_shift": 1}, task)
    ages = torch.tensor([18, 19, 20, 34, 35, 36, 64, 65, 66])
    assert ours.rank_to_bin[ages].tolist() == [1, 2, 2, 2, 3, 3, 3, 4, 4]
    assert official.rank_to_bin[ages].tolist() == [1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert official.regressor.starts.tolist() == [0, 13, 19, 35, 65]   # age anchors stay (regclip_ssr.py:23)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = official.regressor(official.bin_logits(images))
        assert torch.allclose(official.predict(images)["value"], raw + 1)   # ranks 0..100 are ages 0..100
        terms = official.losses(images, torch.tensor([40, 60]), official.stages()[0])
        assert terms["l1"].item() == pytest.approx((raw - torch.tensor([39.0, 59.0])).abs().mean().item(), rel=1e-6)


def test_numclip_label_shift_on_levels_shifts_the_anchors_not_the_bins():
    """Aesthetics 1..5: the official y - 1 gives 0..4 with the anchors 0..4 (regclip_ssr.py:31); ours
    without the shift keeps the anchors 1..5."""
    import numpy as np

    task = make_task(_dataset([1, 5]), np.array([1]))
    ours, official = _build("numclip", NUM, task), _build("numclip", {**NUM, "label_shift": 1}, task)
    assert ours.regressor.starts.tolist() == [1, 2, 3, 4, 5] and official.regressor.starts.tolist() == [0, 1, 2, 3, 4]
    assert ours.rank_to_bin.tolist() == official.rank_to_bin.tolist() == [0, 1, 2, 3, 4]
    assert official.bins_are_ranks and "logits" in official.predict(torch.randn(1, 3, 32, 32))


def test_numclip_label_shift_below_the_first_bin_is_refused():
    import numpy as np

    task = make_task(_dataset([0, 7], coarse={"starts": [0, 3, 4, 5, 7], "names": list("abcde")}), np.array([0]))
    with pytest.raises(Exception, match=r"methods\.numclip\.label_shift: 1 moves the lowest label 0 to -1"):
        _build("numclip", {**NUM, "name": "numclip", "label_shift": 1}, task)
