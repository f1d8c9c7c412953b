"""Each recipe's fidelity to the official code, pinned: the optimizer's update, CoOp's loss terms,
NumCLIP's prediction and selection per dataset, the untrained-head refusal, L2RCLIP's images per
stage, the MORPH II rank spaces, the zero-shot normalisation and OrdinalCLIP's linear baseline."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import ROOT, prepare_fading
from ordclip import layout
from ordclip.config import apply_rank_space, dataset_config, load_params, run_config
from ordclip.data.loader import NORMALIZE, ImagePipeline
from ordclip.errors import ConfigError
from ordclip.evaluate import evaluate
from ordclip.jobs import job_config
from ordclip.losses import ce_loss, t2i_kl_loss
from ordclip.methods import load
from ordclip.metrics import mode_predictions
from ordclip.models.backbone import create_backbone, tokenizer
from ordclip.models.prompts import rank_interpolation_weights
from ordclip.optim import RAdam
from ordclip.runs import make_task
from ordclip.train import make_optimizer, run, set_trainable
from test_prompts import TINY

PARAMS = load_params([ROOT / "params.yaml"])


# --- RAdam: OrdinalCLIP's custom_optim/radam.py ---------------------------------------------

def _official_radam_steps(p0: float, grads: list[float], lr: float, wd: float, b1=0.9, b2=0.999, eps=1e-8):
    """The official update worked through by hand for one scalar: moments, then (only when
    N_sma >= 5) decoupled decay p -= wd·lr·p and the rectified step."""
    p, m, v, out = p0, 0.0, 0.0, []
    n_max = 2 / (1 - b2) - 1
    for t, g in enumerate(grads, start=1):
        v = b2 * v + (1 - b2) * g * g
        m = b1 * m + (1 - b1) * g
        n_sma = n_max - 2 * t * b2 ** t / (1 - b2 ** t)
        if n_sma >= 5:
            step = math.sqrt((1 - b2 ** t) * (n_sma - 4) / (n_max - 4) * (n_sma - 2) / n_sma
                             * n_max / (n_max - 2)) / (1 - b1 ** t)
            p = p - wd * lr * p
            p = p - step * lr * m / (math.sqrt(v) + eps)
        out.append(p)
    return out


def test_radam_matches_the_official_update_step_by_step():
    grads = [0.5, -0.3, 0.8, 0.1, -0.2, 0.4, 0.7, -0.6]
    w = torch.nn.Parameter(torch.tensor([2.0]))       # fp32: the official state is fp32 too (radam.py:54-65)
    opt = RAdam([w], lr=0.1, weight_decay=0.05)
    expected = _official_radam_steps(2.0, grads, lr=0.1, wd=0.05)
    for t, g in enumerate(grads):
        w.grad = torch.tensor([g])
        opt.step()
        assert w.item() == pytest.approx(expected[t], rel=1e-6), f"step {t + 1}"
    assert expected[:5] == [2.0] * 5                  # ρ_t < 5: neither update nor decay
    assert expected[5] != 2.0


def _official_radam_step(params, state, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """radam.py:43-117 (xk-huang/OrdinalCLIP @ ca10a20) transcribed for one group, per parameter."""
    for p in params:
        if p.grad is None:
            continue
        grad, p32 = p.grad.float(), p.data.float()
        s = state.setdefault(p, {"step": 0, "exp_avg": torch.zeros_like(p32), "exp_avg_sq": torch.zeros_like(p32)})
        s["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        s["exp_avg"].mul_(b1).add_(grad, alpha=1 - b1)
        s["step"] += 1
        b2_t = b2 ** s["step"]
        n_max = 2 / (1 - b2) - 1
        n_sma = n_max - 2 * s["step"] * b2_t / (1 - b2_t)
        if n_sma >= 5:
            step_size = math.sqrt((1 - b2_t) * (n_sma - 4) / (n_max - 4) * (n_sma - 2) / n_sma * n_max
                                  / (n_max - 2)) / (1 - b1 ** s["step"])
            if wd != 0:
                p32.add_(p32, alpha=-wd * lr)
            p32.addcdiv_(s["exp_avg"], s["exp_avg_sq"].sqrt().add_(eps), value=-step_size * lr)
            p.data.copy_(p32)


@torch.no_grad()
def _previous_radam_step(params, state, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """ordclip's RAdam before the foreach rewrite (per parameter, decay as p·(1 − lr·wd))."""
    for p in params:
        if p.grad is None:
            continue
        grad = p.grad.float()
        s = state.setdefault(p, {"step": 0, "exp_avg": torch.zeros_like(p, dtype=torch.float32),
                                 "exp_avg_sq": torch.zeros_like(p, dtype=torch.float32)})
        s["exp_avg"].mul_(b1).add_(grad, alpha=1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        s["step"] += 1
        t = s["step"]
        r = RAdam.rectification(t, b2)
        if r is None:
            continue
        if wd != 0:
            p.mul_(1 - lr * wd)
        p.addcdiv_(s["exp_avg"].to(p.dtype), s["exp_avg_sq"].sqrt().add_(eps).to(p.dtype),
                   value=-(lr * r * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)))


def _radam_race(dtype, reference):
    """12 steps of ordclip's RAdam and of ``reference`` on the same parameters and gradients:
    four groups (decay, no decay, lr 0, the paper's values), several shapes, and one parameter that gets no gradient
    at steps 3 and 4 (so its step count lags the group's). Returns the largest relative
    difference of the parameters and of the moments over all steps."""
    gen = torch.Generator().manual_seed(0)
    shapes = [[(7, 5), (5,), (3, 4, 2)], [(6,), (2, 3)], [(4,)], [(9, 3), (3,)]]
    # the paper's lr 1e-4 and wd 5e-4: lr·wd = 5e-8 is below float32's resolution at 1
    settings = [(1e-2, 5e-4), (3e-3, 0.0), (0.0, 5e-4), (1e-4, 5e-4)]
    ours = [[torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in g] for g in shapes]
    ref = [[torch.nn.Parameter(p.detach().clone()) for p in g] for g in ours]
    opt = RAdam([{"params": g, "lr": lr, "weight_decay": wd} for g, (lr, wd) in zip(ours, settings)])
    ref_state = {}
    worst = 0.0
    for step in range(12):
        for g_ours, g_ref in zip(ours, ref):
            for i, (a, b) in enumerate(zip(g_ours, g_ref)):
                grad = None if (step in (2, 3) and i == 1) else torch.randn(a.shape, generator=gen, dtype=dtype)
                a.grad, b.grad = grad, None if grad is None else grad.clone()
        opt.step()
        for g_ref, (lr, wd) in zip(ref, settings):
            reference(g_ref, ref_state, lr, wd)
        for g_ours, g_ref in zip(ours, ref):
            for a, b in zip(g_ours, g_ref):
                pairs = [(a, b)] + [(opt.state[a][k], ref_state[b][k]) for k in ("exp_avg", "exp_avg_sq")]
                assert opt.state[a]["step"] == ref_state[b]["step"]
                for x, y in pairs:
                    worst = max(worst, ((x.double() - y.double()).abs().max() / y.double().abs().max()).item())
    assert all(opt.state[p]["step"] == 12 - (i == 1) * 2 for g in ours for i, p in enumerate(g))
    return worst


def test_foreach_radam_is_the_official_update_bit_for_bit_on_the_cpu():
    # on the CPU torch._foreach_* runs the same kernels as the official per-parameter ops; the
    # previous decay p·(1 − lr·wd) is not: 1 − 5e-8 rounds to 1 − 5.96e-8 in float32
    assert _radam_race(torch.float32, _official_radam_step) == 0.0
    assert _radam_race(torch.float32, _previous_radam_step) > 0.0


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_foreach_radam_equals_the_previous_per_parameter_radam(dtype, tol):
    # only the decay's rounding differs: p + (−lr·wd)·p now, p·(1 − lr·wd) before
    assert _radam_race(dtype, _previous_radam_step) < tol


def test_radam_decay_is_decoupled_and_differs_from_torchs_default():
    # With a zero gradient the official step only decays: p ← p·(1 − lr·wd), once rectified.
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = RAdam([w], lr=0.1, weight_decay=0.5)
    for _ in range(6):
        w.grad = torch.zeros(1, dtype=torch.float64)
        opt.step()
    assert w.item() == pytest.approx(1 - 0.1 * 0.5)
    # torch's default RAdam puts wd·p into the gradient, and steps from t = 1.
    t = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    topt = torch.optim.RAdam([t], lr=0.1, weight_decay=0.5)
    t.grad = torch.zeros(1, dtype=torch.float64)
    topt.step()
    assert t.item() != 1.0


def test_radam_is_the_optimizer_of_every_radam_recipe_and_keeps_group_decay():
    from ordclip.methods.base import ParamGroup, Stage

    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    stage = Stage("s", 1, [ParamGroup("a", [a], 1e-3), ParamGroup("b", [b], 2e-3, weight_decay=0.0),
                           ParamGroup("frozen", [torch.nn.Parameter(torch.ones(1))], 0.0)])
    opt = make_optimizer(stage, {"name": "m", "optimizer": "radam", "weight_decay": 5e-4})
    assert type(opt) is RAdam
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in opt.param_groups] == [("a", 1e-3, 5e-4), ("b", 2e-3, 0.0)]
    state = opt.state_dict()
    a.grad = b.grad = torch.ones(2)
    opt.step()
    opt.load_state_dict(opt.state_dict())            # resumable (plain ints and tensors)
    assert state["param_groups"][0]["name"] == "a"


# --- CoOp and the linear baseline: OrdinalCLIP's CE + KL ----------------------------------------

def _task(ranks, names=None, coarse=None):
    cfg = {"name": "d", "ranks": ranks, "prompt": {"context": "the level is"}}
    if names:
        cfg["rank_names"] = names
    if coarse:
        cfg["coarse"] = coarse
    return make_task(cfg, np.array([ranks[0]]))


def _build(kind, cfg, task):
    torch.manual_seed(0)
    return load(kind).build(create_backbone(TINY, None), tokenizer(TINY), task, cfg)


def test_coop_trains_with_ce_and_text_to_image_kl():
    cfg = dict(PARAMS["methods"]["coop"])
    assert cfg["loss_weights"] == {"ce": 1.0, "kl": 1.0}
    method = _build("coop", cfg, _task([0, 4], names=list("abcde")))
    stage = method.stages()[0]
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 1, 3, 4, 4])
    with torch.no_grad():
        terms = method.losses(x, y, stage)
        logits = method.model.logits(x)
    assert set(terms) == {"ce", "kl"}
    assert terms["ce"].item() == pytest.approx(ce_loss(logits, y).item(), rel=1e-5)
    assert terms["kl"].item() == pytest.approx(t2i_kl_loss(logits, y).item(), rel=1e-5)


def test_linear_baseline_is_a_cosine_head_that_stays_at_its_init():
    cfg = dict(PARAMS["methods"]["baseline"])
    task = _task([0, 4])
    method = _build("baseline", cfg, task)
    stage = method.stages()[0]
    set_trainable(method, stage)
    assert not method.head.requires_grad and cfg["lr"]["head"] == 0.0
    trained = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("backbone.visual.") for n in trained)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = torch.nn.functional.normalize(method.backbone.encode_image(x), dim=-1)
        w = torch.nn.functional.normalize(method.head, dim=-1)
        assert torch.allclose(method.predict(x)["logits"], 100 * f @ w.T, atol=1e-4)
        assert set(method.losses(x, torch.tensor([0, 2, 4]), stage)) == {"ce", "kl"}
    torch.manual_seed(123)  # the head does not depend on the global RNG: a checkpoint rebuilds it
    assert torch.equal(load("baseline").build(create_backbone(TINY, None), None, task, cfg).head, method.head)
    assert "baseline" in PARAMS["suites"]["paper"]["methods"]
    assert "baseline" not in PARAMS["suites"]["demo"]["methods"]


# --- NumCLIP: prediction and selection per dataset; the untrained head ------------------------

def test_numclip_reports_the_regressor_for_age_and_the_bin_logits_for_five_levels():
    age = run_config(PARAMS, "paper", "morph2", "numclip")["method"]
    assert (age["select_on"], age["report"]) == ("mae_value", {"mae": "value", "acc": "value"})
    assert age["epochs"] == 200
    hci = run_config(PARAMS, "paper", "hci", "numclip")["method"]
    assert (hci["select_on"], hci["report"]) == ("mae_max", {"mae": "exp", "acc": "max"})
    assert hci["lr"]["context"] == 0.0                       # tune-rank.yaml
    for cat in ("animals", "nature", "people", "urban"):
        aes = run_config(PARAMS, "paper", f"aesthetics_{cat}", "numclip")["method"]
        assert (aes["select_on"], aes["report"]) == ("mae_max", {"mae": "exp", "acc": "max"})
        assert aes["lr"]["context"] == 1e-5 and aes["epochs"] == 100   # tune-ctx-rank.yaml
    # the demo's 5-level sets follow the same rule (suites.demo.dataset_overrides); counting is not 5-level
    for five_level in ("fading", "blur"):
        demo = run_config(PARAMS, "demo", five_level, "numclip")["method"]
        assert (demo["select_on"], demo["report"]) == ("mae_max", {"mae": "exp", "acc": "max"})
    counting = run_config(PARAMS, "demo", "counting", "numclip")["method"]
    assert (counting["select_on"], counting["report"]) == ("mae_value", {"mae": "value", "acc": "value"})


def test_numclip_predicts_value_bins_and_logits_where_bins_are_ranks():
    num = dict(PARAMS["methods"]["numclip"])
    five = _build("numclip", num, _task([0, 4], names=list("vwxyz")))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = five.predict(x)
        logits = five.bin_logits(x)
    assert set(out) == {"value", "bin_value", "logits"}
    expected = (logits.softmax(-1) * torch.arange(5.0)).sum(-1)
    assert torch.allclose(out["bin_value"], expected, atol=1e-5)
    modes = mode_predictions({k: v.numpy() for k, v in out.items()})
    assert set(modes) == {"exp", "max", "value", "bins"}
    np.testing.assert_allclose(modes["bins"], modes["exp"], atol=1e-5)   # bins = ranks: Σ p_k·k
    coarse = {"starts": [1, 3, 5, 7, 9], "names": list("abcde")}
    ten = _build("numclip", num, _task([1, 10], coarse=coarse))
    with torch.no_grad():
        out = ten.predict(x)
        p = ten.bin_logits(x).softmax(-1)
    assert set(out) == {"value", "bin_value"}
    assert torch.allclose(out["bin_value"], (p * torch.tensor([1.0, 3, 5, 7, 9])).sum(-1) - 1, atol=1e-4)


def test_reporting_an_untrained_regressor_is_refused(tmp_path):
    for name in ("numclip_plain_ce", "numclip_fcrc_ce", "numclip_fcrc_ce_kl"):
        m = PARAMS["methods"][name]
        assert m["loss_weights"]["l1"] == 0 and m["report"] == {"mae": "bins", "acc": "bins"}
        assert m["select_on"] == "mae_bins"
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {numclip_fcrc_ce: {report: {mae: value, acc: bins}}}\n")
    with pytest.raises(ConfigError, match=r"methods\.numclip_fcrc_ce\.report\.mae: 'value' is the regressor"):
        load_params([ROOT / "params.yaml", bad])
    bad.write_text("suites: {demo: {overrides: {numclip: {loss_weights: {l1: 0.0}}}}}\n")
    with pytest.raises(ConfigError, match=r"overrides\.numclip .*select_on: 'value'"):
        load_params([ROOT / "params.yaml", bad])
    cfg = {**PARAMS["methods"]["numclip_fcrc_ce"], "name": "x", "select_on": "mae_value"}
    with pytest.raises(ConfigError, match=r"methods\.x\.select_on"):
        _build("numclip", cfg, _task([0, 4], names=list("vwxyz")))


# --- L2RCLIP: the images of each stage ------------------------------------------------------

def test_image_views_as_the_released_loaders():
    pipe = ImagePipeline(32, "imagenet", True, torch.device("cpu"))
    images = torch.randint(0, 256, (4, 36, 36, 3), dtype=torch.uint8)
    a = pipe(images, train=True, generator=torch.Generator().manual_seed(0), view="resize")
    b = pipe(images, train=False, view="resize")
    assert torch.equal(a, b)                                     # stage 1: the test transform, no randomness
    x = images.permute(0, 3, 1, 2).float()
    resized = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 255)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in NORMALIZE["imagenet"])
    assert torch.allclose(b, (resized - mean) / std, atol=1e-5)  # the whole image, no crop
    flipped = pipe(images, train=True, generator=torch.Generator().manual_seed(0), view="resize_flip")
    for i in range(4):                                           # stage 2: resize + flip, no crop
        assert torch.allclose(flipped[i], b[i]) or torch.allclose(flipped[i], b[i].flip(-1), atol=1e-5)
    with pytest.raises(ValueError, match="unknown image view"):
        pipe(images, train=True, view="erase")
    l2r = PARAMS["methods"]["l2rclip"]
    assert (l2r["stage1"]["view"], l2r["stage2"]["view"]) == ("resize", "resize_flip")
    assert l2r["stage1"]["lr"]["ranks"] == 0.0


# --- MORPH II rank spaces -------------------------------------------------------------------

def test_each_method_runs_morph_in_its_official_rank_space():
    spaces = {}
    for method in ("zeroshot", "linear_probe", "baseline", "coop", "ordinalclip", "ordinalclip_m5",
                   "l2rclip", "numclip"):
        ds = run_config(PARAMS, "paper", "morph2", method)["dataset"]
        spaces[method] = (tuple(ds["ranks"]), ds.get("rank_offset", 0))
    for m in ("zeroshot", "baseline", "coop", "ordinalclip", "ordinalclip_m5", "numclip"):
        assert spaces[m] == ((0, 100), 16), m                    # morph.yaml num_ranks 101
    assert spaces["l2rclip"] == ((16, 77), 0)                    # datasets/morph.py ages 16..77
    assert spaces["linear_probe"] == ((16, 77), 0)
    l2r = run_config(PARAMS, "paper", "morph2", "l2rclip")["dataset"]
    assert l2r["rank_names"][:3] == ["sixteen", "seventeen", "eighteen"] and len(l2r["rank_names"]) == 62
    assert l2r["rank_names"][-1] == "seventy seven"
    coop = run_config(PARAMS, "paper", "morph2", "coop")["dataset"]
    task = make_task(coop, np.array([16, 77]))
    assert task.num_ranks == 101 and task.min_label == 0 and task.rank_names[16] == "16"


def test_rank_space_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {morph2: {rank_spaces: {coop: {ranks: [20, 100]}}}}\n")
    with pytest.raises(ConfigError, match=r"datasets\.morph2\.rank_spaces\.coop\.ranks: \[20, 100\] must contain"):
        load_params([ROOT / "params.yaml", bad])
    bad.write_text("datasets: {morph2: {rank_spaces: {coop: {ranks: [0, 100], rank_names: [a, b]}}}}\n")
    with pytest.raises(ConfigError, match=r"rank_spaces\.coop\.rank_names: 2 names for 101 ranks"):
        load_params([ROOT / "params.yaml", bad])
    bad.write_text("datasets: {fading: {rank_spaces: {coop: {ranks: [-1, 4]}}}}\n")
    with pytest.raises(ConfigError, match=r"fading\.rank_spaces\.coop\.ranks: a space below .*coarse\.starts"):
        load_params([ROOT / "params.yaml", bad])
    assert apply_rank_space({"ranks": [0, 4]}, "coop") == {"ranks": [0, 4]}


# --- OrdinalCLIP's prompt ablations (published-numbers.md §1.5, §1.6; tokens per rank) --------------

TUNE_RANK = {"context": 0.0, "ranks": 1.0e-4, "image_encoder": 1.0e-4}     # tune-rank.yaml:4-5, tune-image.yaml:4
TUNE_CTX = {"context": 1.0e-4, "ranks": 0.0, "image_encoder": 1.0e-4}      # tune-ctx.yaml:4-5


def _ablations() -> dict[str, tuple[str, dict]]:
    """Every CoOp / OrdinalCLIP ablation entry -> (its base entry, the keys it changes)."""
    expected = {f"ordinalclip_m{m}": ("ordinalclip", {"num_base_ranks": m}) for m in (1, 2, 4, 5, 6, 7, 8, 9)}
    expected |= {f"ordinalclip_m{m}_invprop": ("ordinalclip", {"num_base_ranks": m, "interpolation": "inv_prop"})
                 for m in range(2, 10)}
    expected |= {f"ordinalclip_tpr{t}": ("ordinalclip", {"tokens_per_rank": t}) for t in (2, 3, 4, 8)}
    for base in ("coop", "ordinalclip"):
        for tune, lr in (("_tune_rank", TUNE_RANK), ("_tune_ctx", TUNE_CTX), ("", None)):
            for ctx, init in (("_randctx", False), ("", None)):
                change = {**({"lr": lr} if lr else {}), **({"init_context": init} if init is not None else {})}
                if change:
                    expected[f"{base}{tune}{ctx}"] = (base, change)
    return expected


def test_each_prompt_ablation_entry_changes_only_its_switch():
    expected = _ablations()
    kinds = {n for n, m in PARAMS["methods"].items() if m["kind"] in ("coop", "ordinalclip")}
    assert kinds == set(expected) | {"coop", "ordinalclip"}
    assert len(expected) == 8 + 8 + 4 + 5 + 5
    for name, (base, change) in expected.items():
        entry, ref = PARAMS["methods"][name], PARAMS["methods"][base]
        assert {k: entry[k] for k in change} == change, name
        assert {k for k, v in entry.items() if ref.get(k) != v} <= set(change), name
        assert set(entry) == set(ref), name
    assert PARAMS["methods"]["ordinalclip"]["n_ctx"] == 10 == PARAMS["methods"]["coop"]["n_ctx"]   # default.yaml:53


def test_prompt_ablations_build_what_they_name_on_morph():
    """Each entry's model on MORPH II's 101 ranks (OrdinalCLIP's rank space): base ranks, interpolation,
    tokens per rank, context from the words or 10 random vectors, CoOp's ranks from the rank words."""
    torch.manual_seed(0)
    bb, tok = create_backbone(TINY, None), tokenizer(TINY)
    words = bb.token_embedding.weight[torch.tensor(tok.encode("age estimation: the age of the person is"))]
    for name in ["coop", "ordinalclip", *_ablations()]:
        cfg = PARAMS["methods"][name]
        ds = apply_rank_space(dataset_config(PARAMS, "morph2"), cfg["kind"])
        task = make_task(ds, np.array([16, 77]))
        assert task.num_ranks == 101
        prompts = load(cfg["kind"]).build(bb, tok, task, cfg).model.prompts
        if cfg["init_context"]:
            assert torch.equal(prompts.context, words), name
        else:
            assert prompts.context.shape == (10, 64) and prompts.context.std() < 0.05, name
        if cfg["kind"] == "ordinalclip":
            m, t = cfg["num_base_ranks"], cfg["tokens_per_rank"]
            assert prompts.ranks is None and prompts.base_ranks.shape == (m, t, 64), name
            assert torch.equal(prompts.interp, rank_interpolation_weights(m, 101, cfg["interpolation"])), name
            assert prompts.eot.tolist() == [1 + prompts.context.shape[0] + t + 1] * 101, name
        else:                                                    # CoOp: rank words "0".."100" (init-rank-morph.yaml)
            ids = tok.encode("42")                               # CLIP's BPE splits digits: 2 tokens
            assert int(prompts.rank_lengths[42]) == len(ids) == 2, name
            assert torch.equal(prompts.ranks[42, :2], bb.token_embedding.weight[torch.tensor(ids)]), name


@pytest.mark.parametrize("name", ["coop_tune_ctx", "coop_tune_rank_randctx", "ordinalclip_tune_ctx",
                                  "ordinalclip_tune_rank", "ordinalclip_randctx"])
def test_a_frozen_prompt_group_stays_bitwise_unchanged(name):
    """Six RAdam steps (its first rectified update is step 6) with the entry's own optimizer settings:
    the group at lr 0 is not in the optimizer and keeps its initial values bit for bit."""
    cfg = {**PARAMS["methods"][name], "name": name}
    method = _build(cfg["kind"], cfg, _task([0, 4], names=list("abcde")))
    stage = method.stages()[0]
    set_trainable(method, stage)
    opt = make_optimizer(stage, cfg)
    before = {g.name: [p.detach().clone() for p in g.params] for g in stage.groups}
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 1, 3, 4, 4])
    for _ in range(6):
        opt.zero_grad()
        sum(method.losses(x, y, stage).values()).backward()
        opt.step()
    for g in stage.groups:
        same = all(torch.equal(p, b) for p, b in zip(g.params, before[g.name]))
        assert same == (g.lr == 0), (name, g.name)
        assert all(p.requires_grad == (g.lr > 0) for p in g.params), (name, g.name)
    assert {g["name"] for g in opt.param_groups} == {g.name for g in stage.groups if g.lr > 0}


# --- end to end on the small fading set -------------------------------------------------------

SMALL = """
datasets:
  fading:
    per_rank: 12
    rank_spaces: {coop: {ranks: [-2, 6]}}
    coarse: {starts: [-2, 1, 2, 3, 4], names: [vivid, slightly faded, faded, very faded, completely faded]}
suites:
  demo:
    datasets: [fading]
    methods: [zeroshot, linear_probe, baseline, coop, l2rclip, numclip_fcrc_ce]
    folds: 1
    overrides:
      coop: {epochs: 1, batch_size: 16}
      baseline: {epochs: 1, batch_size: 16}
      numclip_fcrc_ce: {epochs: 1, batch_size: 16}
      l2rclip: {stage1: {epochs: 1}, stage2: {epochs: 1}, batch_size: 16}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    files = prepare_fading(root, SMALL, ["embed", "--suite", "demo", "--dataset", "fading"])
    return root, load_params(files)


def test_zero_shot_features_use_clips_normalisation(small, monkeypatch):
    root, params = small
    monkeypatch.chdir(root)
    bb = {"name": "tiny", **params["backbones"]["tiny"]}
    assert bb["features_normalize"] == "clip" and bb["normalize"] == "imagenet"
    assert params["backbones"]["vitb16_openai"]["features_normalize"] == "clip"
    model = create_backbone(bb, layout.backbone_weights("tiny"))
    images = np.load(layout.prepared_images("fading", bb["resize"]))[:4]
    feats = np.load(layout.features("demo", "fading"))["image_features"][:4]
    for norm, same in (("clip", True), ("imagenet", False)):
        x = ImagePipeline(bb["image_size"], norm, False, torch.device("cpu"))(torch.from_numpy(images), train=False)
        with torch.no_grad():
            got = model.encode_image(x).numpy()
        assert np.allclose(got, feats, atol=1e-5) is same, norm


def test_a_rank_space_trains_and_evaluates_in_its_own_ranks(small, monkeypatch):
    root, params = small
    monkeypatch.chdir(root)
    assert run(job_config(params, "train", suite="demo", dataset="fading", method="coop", fold=0))
    evaluate(job_config(params, "evaluate", suite="demo", dataset="fading", method="coop", fold=0))
    run_dir = root / layout.run_dir("demo", "fading", "coop", 0)
    with np.load(run_dir / "outputs.npz") as npz:
        assert npz["test_logits"].shape[-1] == 9                 # ranks -2..6
        assert npz["test_y"].min() >= 2 and npz["test_y"].max() <= 6   # labels 0..4 → ranks 2..6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test"]["mae"] <= 8


@pytest.mark.parametrize("method", ["baseline", "numclip_fcrc_ce", "l2rclip"])
def test_new_recipes_run_end_to_end(small, monkeypatch, method):
    root, params = small
    monkeypatch.chdir(root)
    assert run(job_config(params, "train", suite="demo", dataset="fading", method=method, fold=0))
    evaluate(job_config(params, "evaluate", suite="demo", dataset="fading", method=method, fold=0))
    run_dir = root / layout.run_dir("demo", "fading", method, 0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    if method == "l2rclip":
        assert [h["stage"] for h in log] == ["prompts", "image"]
        assert set(log[0]["loss"]) == {"ce", "contrastive", "ordinal"} and set(log[1]["lr"]) == {
            "image_encoder", "image_encoder_bias", "projection"}
        assert "ranks" not in log[0]["lr"]                       # lr 0: not in the optimizer
    mode = {"baseline": "exp", "numclip_fcrc_ce": "bins", "l2rclip": "exp"}[method]
    assert metrics["report"]["mae"] == mode and metrics["test"]["mae"] == metrics["val_selected"]["test"][mode]["mae"]


def test_the_demo_schedule_keeps_each_ablations_frozen_groups_frozen():
    """suites.demo.overrides give the prompt ablations the demo's learning rates; a group the entry
    freezes (lr 0: Tune Rank / Tune Ctx off) stays at 0 in the demo."""
    from ordclip.config import table_spec

    methods = table_spec(PARAMS, "demo", "prompts")["methods"]
    assert len(methods) == 20
    for name in methods:
        official = PARAMS["methods"][name]["lr"]
        demo = run_config(PARAMS, "demo", "counting", name)["method"]["lr"]
        assert {g for g, lr in demo.items() if lr == 0} == {g for g, lr in official.items() if lr == 0}, name
        assert all(lr == 3.0e-3 for g, lr in demo.items() if lr != 0), name
        assert run_config(PARAMS, "demo", "counting", name)["method"]["epochs"] == 12, name


def test_fewshot_runs_use_ordinalclips_default_yaml_schedule():
    """Issue 20, item 7: OrdinalCLIP's maintainer: a few-shot run is default.yaml + num-shots-<k>.yaml
    and no other config (issue 11), so its few-shot rows train with default.yaml's RAdam at weight decay 0
    and multistep 60 × 0.1 over 100 epochs (:16-18, :28-32), not morph_compare.yaml's cosine and 5e-4;
    the full-data runs keep the comparison recipe, NumCLIP its own, the demo its short schedule."""
    from ordclip.config import method_config, run_config

    for method in ("baseline", "coop", "ordinalclip"):
        few = method_config(PARAMS, "paper", method, "morph2-4shot")
        assert (few["weight_decay"], few["scheduler"], few["epochs"], few["optimizer"]) == \
            (0.0, {"name": "multistep", "milestones": [60], "gamma": 0.1}, 100, "radam")
        assert few["lr"]["image_encoder"] == 1e-4
        full = method_config(PARAMS, "paper", method, "morph2")
        assert (full["weight_decay"], full["scheduler"]["name"]) == (5e-4, "cosine")
        assert method_config(PARAMS, "paper", method, "hci-8shot")["scheduler"]["name"] == "multistep"
    assert method_config(PARAMS, "paper", "numclip", "morph2-4shot") == \
        {**method_config(PARAMS, "paper", "numclip", "morph2"), "name": "numclip"}
    demo = run_config(PARAMS, "demo", "counting-4shot", "ordinalclip")["method"]
    assert demo == run_config(PARAMS, "demo", "counting", "ordinalclip")["method"]


def test_l2rclip_paper_stages_start_at_their_base_lr_on_imagenet_statistics():
    """Issue 20, item 6 (our choice, docs/recipes/l2rclip.md): no warm-up (the released schedulers'
    caller and values are not public), cosine per stage from the base lr; the images normalised with
    ImageNet's statistics as every trained row (not CLIP-ReID's 0.5/0.5)."""
    import torch

    from ordclip.config import run_config
    from ordclip.train import make_scheduler

    cfg = run_config(PARAMS, "paper", "morph2", "l2rclip")
    assert cfg["backbone"]["normalize"] == "imagenet" and cfg["method"]["scheduler"] == {"name": "cosine"}
    for stage in ("stage1", "stage2"):
        lr = next(iter(cfg["method"][stage]["lr"].values()))
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched = make_scheduler(opt, cfg["method"][stage]["epochs"], cfg["method"])
        seen = []
        for _ in range(3):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        epochs = cfg["method"][stage]["epochs"]
        assert seen[0] == lr and seen[1] == pytest.approx(lr * (1 + math.cos(math.pi / epochs)) / 2)


def test_paper_suite_numclip_label_shift_is_one_on_morph_and_aesthetics_only():
    """Issue 20: NumCLIP's `y = y - 1` (runner_ssr.py:69) is `label_shift: 1` in the paper suite's resolved
    runs on MORPH II (settings A-D, its few-shot variants, the NumCLIP ablations) and the four aesthetics
    categories (5-fold and fixed split), and on the backbone suites that share those overrides; the default
    (methods.numclip) is 0, so HCI, Adience, CLAP2015, FG-NET and the demo keep the labels as they are."""
    assert PARAMS["methods"]["numclip"]["label_shift"] == 0
    shifted = [("paper", d, "numclip") for d in ("morph2", "morph2_B", "morph2_C", "morph2_D", "morph2-4shot")]
    shifted += [("paper", "morph2", m) for m in ("numclip_plain_ce", "numclip_fcrc_ce", "numclip_fcrc_ce_kl")]
    shifted += [("paper", f"aesthetics{fixed}_{c}", "numclip")
                for fixed in ("", "_fixed") for c in ("animals", "nature", "people", "urban")]
    shifted += [("paper", "aesthetics_animals-4shot", "numclip"), ("paper_rn50", "morph2", "numclip")]
    unshifted = [("paper", d, "numclip") for d in ("hci", "hci-4shot", "adience", "clap2015", "fgnet")]
    unshifted += [("demo", "counting", "numclip")]
    for suite, dataset, method in shifted + unshifted:
        cfg = run_config(PARAMS, suite, dataset, method)["method"]
        assert cfg["label_shift"] == (1 if (suite, dataset, method) in shifted else 0), (suite, dataset, method)
    # the shift travels with the rest of NumCLIP's MORPH II recipe, which it does not replace
    assert run_config(PARAMS, "paper", "morph2_C", "numclip")["method"]["epochs"] == 200
    # NumCLIP's ablations are its MORPH II recipe with other loss terms: 200 epochs too (default_morph.yaml:34)
    for method in ("numclip_plain_ce", "numclip_fcrc_ce", "numclip_fcrc_ce_kl"):
        assert run_config(PARAMS, "paper", "morph2", method)["method"]["epochs"] == 200, method
    aesthetics = run_config(PARAMS, "paper", "aesthetics_fixed_urban", "numclip")["method"]
    assert (aesthetics["lr"]["context"], aesthetics["select_on"]) == (1.0e-5, "mae_max")
