import pytest
import torch

from ordclip.methods import load
from ordclip.methods.base import Task
from ordclip.models.backbone import create_backbone, encode_token_embeddings, tokenizer
from ordclip.models.prompts import PromptLearner, rank_interpolation_weights

TINY = {"name": "tiny", "model": "ordclip-tiny", "weights": {"init_seed": 0}, "image_size": 32,
        "resize": 36, "normalize": "imagenet"}


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create_backbone(TINY, None)


@pytest.fixture(scope="module")
def tok():
    return tokenizer(TINY)


def test_interpolation_weights_by_hand():
    # R = 5, M = 3: base ranks at 0, 2, 4; rank 1 is at distance 1, 1, 3 -> linear 1 - d/4 = .75, .75, .25.
    w = rank_interpolation_weights(3, 5, "linear")
    assert w.shape == (5, 3)
    assert w[1].tolist() == pytest.approx([0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75])
    assert w[0].tolist() == pytest.approx([1 / 1.5, 0.5 / 1.5, 0.0])  # d = 0, 2, 4
    assert torch.allclose(w.sum(1), torch.ones(5))


def test_interpolation_weights_single_base_and_inv_prop():
    assert torch.allclose(rank_interpolation_weights(1, 4, "linear"), torch.ones(4, 1))
    w = rank_interpolation_weights(2, 3, "inv_prop")  # bases at 0, 2; rank 0 ≈ all on base 0
    assert w[0, 0].item() == pytest.approx(1.0, abs=1e-4)
    assert w[1].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(Exception, match="unknown kind"):
        rank_interpolation_weights(2, 3, "cubic")


def test_prompt_layout_and_eot(backbone, tok):
    context = "the number of shapes is"
    names = ["one", "seventy seven"]  # 1 and 2 BPE tokens
    pl = PromptLearner(backbone.token_embedding, tok, 2, context=context, rank_names=names)
    x, eot = pl()
    n = len(tok.encode(context))
    assert pl.context.shape == (n, 64)
    assert eot.tolist() == [1 + n + 1 + 1, 1 + n + 2 + 1]
    assert x.shape == (2, int(eot.max()) + 1, 64)
    emb = backbone.token_embedding.weight
    assert torch.equal(x[0, 0], emb[tok.sot_token_id])
    assert torch.equal(x[0, eot[0]], emb[tok.eot_token_id])
    assert torch.equal(x[0, eot[0] - 1], emb[tok.encode(".")[0]])


def test_text_from_embeddings_equals_open_clip(backbone, tok):
    # The prompt initialised from words, truncated at its EOT, must give open_clip's own features.
    pl = PromptLearner(backbone.token_embedding, tok, 2, context="this photo is", rank_names=["sharp", "very blurry"])
    x, eot = pl()
    with torch.no_grad():
        ours = encode_token_embeddings(backbone, x, eot)
        ref = backbone.encode_text(tok(["this photo is sharp.", "this photo is very blurry."]))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_interpolated_ranks_are_built_from_bases(backbone, tok):
    pl = PromptLearner(backbone.token_embedding, tok, 7, context=None, n_ctx=4, num_base_ranks=3)
    r = pl.rank_embeddings()
    assert r.shape == (7, 1, 64)
    w = rank_interpolation_weights(3, 7)
    for i in range(7):
        assert torch.allclose(r[i], sum(w[i, j] * pl.base_ranks[j] for j in range(3)), atol=1e-6)


@pytest.mark.parametrize("kind", ["coop", "ordinalclip"])
def test_frozen_parts_stay_frozen(kind):
    torch.manual_seed(0)
    bb = create_backbone(TINY, None)
    cfg = {"init_context": True, "n_ctx": 4, "init_ranks": True, "tokens_per_rank": 1, "num_base_ranks": 2,
           "interpolation": "linear", "lr": {"context": 1e-2, "ranks": 1e-2, "image_encoder": 1e-2},
           "epochs": 1, "loss_weights": {"ce": 1.0, "kl": 1.0}}
    method = load(kind).build(bb, tokenizer(TINY), Task(3, ["low", "mid", "high"], "the level is"), cfg)
    from ordclip.train import make_optimizer, set_trainable

    stage = method.stages()[0]
    set_trainable(method, stage)
    frozen = {n: p.detach().clone() for n, p in bb.named_parameters() if not n.startswith("visual.")}
    ctx0 = method.model.prompts.context.detach().clone()
    vis0 = bb.visual.conv1.weight.detach().clone()
    opt = make_optimizer(stage, {**cfg, "name": kind, "optimizer": "adamw", "weight_decay": 0.1})
    terms = method.losses(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 2]), stage)
    sum(terms.values()).backward()
    opt.step()
    for n, p in bb.named_parameters():
        if not n.startswith("visual."):
            assert not p.requires_grad and p.grad is None, n
            assert torch.equal(p, frozen[n]), f"{n} changed"
    assert not torch.equal(method.model.prompts.context, ctx0)
    assert not torch.equal(bb.visual.conv1.weight, vis0)


# --- OrdinalCLIP's prompt ablations (params.yaml ordinalclip_m*, *_invprop, *_tpr*, *_randctx) ------------

@pytest.mark.parametrize("m", range(2, 10))
def test_interpolation_weights_match_the_formula_for_every_ablated_m(m):
    # OrdinalCLIP rank_prompt_learner.py:19-21,91-98 over MORPH II's 101 ranks: base j at j·(R-1)/(M-1),
    # linear 1 - d/(R-1), inv_prop 1/(d + 1e-5), each row normalised.
    r = 101
    for kind in ("linear", "inv_prop"):
        w = rank_interpolation_weights(m, r, kind)
        for i in range(r):
            d = [abs(i - j * (r - 1) / (m - 1)) for j in range(m)]
            raw = [1 - x / (r - 1) if kind == "linear" else 1 / (x + 1e-5) for x in d]
            assert w[i].tolist() == pytest.approx([x / sum(raw) for x in raw], rel=1e-5), (kind, i)
    inv = rank_interpolation_weights(m, r, "inv_prop")
    assert inv[0, 0] > 0.999 and inv[r - 1, m - 1] > 0.999        # a rank on a base is that base


def test_two_tokens_per_rank_give_two_rank_tokens_in_every_prompt(backbone, tok):
    context = "the level is"
    n = len(tok.encode(context))
    pl = PromptLearner(backbone.token_embedding, tok, 6, context=context, num_base_ranks=3, tokens_per_rank=2)
    x, eot = pl()
    assert pl.base_ranks.shape == (3, 2, 64)
    assert eot.tolist() == [1 + n + 2 + 1] * 6                    # [SOT] ctx r_i1 r_i2 [.] [EOT]
    ranks = pl.rank_embeddings()
    assert ranks.shape == (6, 2, 64)
    assert torch.equal(x[:, 1 + n:1 + n + 2], ranks)
    assert torch.equal(x[:, 1 + n + 2], backbone.token_embedding.weight[tok.encode(".")[0]].expand(6, -1))
    assert not torch.equal(ranks[:, 0], ranks[:, 1])              # two distinct learned tokens


def test_random_context_is_n_ctx_vectors_with_the_official_std(backbone, tok):
    # OrdinalCLIP plain_prompt_learner.py:231-242: init_context null -> num_context_tokens vectors, normal std 0.02
    torch.manual_seed(0)
    pl = PromptLearner(backbone.token_embedding, tok, 4, context=None, n_ctx=10, num_base_ranks=2)
    assert pl.context.shape == (10, 64)
    assert abs(pl.context.std().item() - 0.02) < 0.002 and abs(pl.context.mean().item()) < 0.002
    x, eot = pl()
    assert eot.tolist() == [1 + 10 + 1 + 1] * 4 and torch.equal(x[:, 1:11], pl.context.expand(4, -1, -1))


def test_two_base_ranks_interpolate_the_same_either_way():
    """M = 2: bases at 0 and R - 1, so 1/(d + 1e-5) normalised equals the linear weights up to the 1e-5."""
    for r in (5, 10, 101):
        lin, inv = rank_interpolation_weights(2, r, "linear"), rank_interpolation_weights(2, r, "inv_prop")
        assert torch.allclose(lin, inv, atol=1e-4)
    assert not torch.allclose(rank_interpolation_weights(3, 101, "linear"),
                              rank_interpolation_weights(3, 101, "inv_prop"), atol=1e-2)


def _official_assembly(pl, ranks):
    """OrdinalCLIP's PlainPromptLearner.forward (xk-huang/OrdinalCLIP @ ca10a20,
    plain_prompt_learner.py:75-113, "tail"): a template of [SOT] … [.] [EOT] pad, into which each
    rank's context and rank tokens are written, one rank at a time."""
    r, n, d = pl.num_ranks, pl.context.shape[0], pl.context.shape[1]
    template = pl.tail.new_zeros(r, pl.length, d)
    template[:] = pl.tail[0, -1]                      # the pad embedding (token 0)
    template[:, 0] = pl.sot
    for i, t in enumerate(pl.lengths):
        template[i, 1 + n + t], template[i, 2 + n + t] = pl.tail[i, t], pl.tail[i, t + 1]
    out = template.clone()
    context = pl.context[None].expand(r, n, d)
    for i, t in enumerate(pl.lengths):
        out[i, 1:1 + n + t] = torch.cat([context[i], ranks[i, :t]])
    return out


@pytest.mark.parametrize("kwargs", [{"rank_names": ["one", "seventy seven", "a b c"]},
                                    {"num_base_ranks": 2, "tokens_per_rank": 2}])
def test_prompts_are_assembled_as_the_official_per_rank_loop(backbone, tok, kwargs):
    torch.manual_seed(0)
    pl = PromptLearner(backbone.token_embedding, tok, 3, context="the level is", **kwargs)
    assert pl.length == max(pl.eot_positions) + 1 and pl.eot.tolist() == pl.eot_positions
    x, _ = pl()
    ref = _official_assembly(pl, pl.rank_embeddings())
    assert torch.equal(x, ref)
    upstream = torch.randn_like(x)
    ours = torch.autograd.grad((x * upstream).sum(), [p for p in pl.parameters()])
    theirs = torch.autograd.grad((ref * upstream).sum(), [p for p in pl.parameters()])
    for a, b in zip(ours, theirs):                     # the context's gradient sums over the ranks
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_frozen_text_weights_cast_once_give_autocasts_numbers(backbone, tok):
    # bf16 autocast on the CPU: the cached casts hold the values autocast's own casts would
    from torch.utils._python_dispatch import TorchDispatchMode

    from ordclip.methods.base import RankTextModel

    class Casts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16:
                Casts.count += 1
            return func(*args, **kwargs)

    model = RankTextModel(backbone, PromptLearner(backbone.token_embedding, tok, 3, context="the level is",
                                                  rank_names=["one", "two", "three"]))
    cast = model.text_cast

    def run(weights):
        model.prompts.zero_grad()
        Casts.count = 0
        saved = cast.weights
        cast.weights = weights
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16), Casts():
                f = model.text_features()
        finally:
            cast.weights = saved
        f.float().sum().backward()
        return f.detach(), model.prompts.context.grad.clone(), Casts.count

    plain, g_plain, casts_plain = run(lambda device: None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast.weights("cpu")                    # the one cast
    cached, g_cached, casts_cached = run(cast.weights)
    assert torch.equal(plain, cached) and torch.equal(g_plain, g_cached)
    assert len(cast.cache) == 2 * 8            # 2 layers × (q/k/v, out, fc, proj) × (weight, bias)
    assert casts_plain - casts_cached == 16    # autocast's per-use casts of those weights are gone
    w = backbone.transformer.resblocks[0].mlp.c_fc.weight
    first = cast.cache["resblocks.0.mlp.c_fc.weight"][1]
    with torch.no_grad():
        w.mul_(1.0)                            # changed in place: cast again
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = cast.weights("cpu")["resblocks.0.mlp.c_fc.weight"]
    assert again is not first and torch.equal(again, w.to(torch.bfloat16))
    assert cast.weights("cpu") is None         # outside autocast nothing is replaced


def test_morph_context_words_are_ten_tokens(backbone, tok):
    """OrdinalCLIP plain_prompt_learner.py:218-226 sets n_ctx to the number of BPE tokens between SOT
    and EOT of the context words: MORPH II's `age estimation: the age of the person is` is 10 of them
    (`estimation` is `estim` + `ation`, `:` a token of its own), not 9 words."""
    from ordclip.config import load_params

    from conftest import ROOT

    context = load_params([ROOT / "params.yaml"])["datasets"]["morph2"]["prompt"]["context"]
    ids = tok.encode(context)
    assert len(ids) == 10
    pl = PromptLearner(backbone.token_embedding, tok, 101, context=context, num_base_ranks=3)
    assert pl.context.shape[0] == 10
    assert torch.equal(pl.context.detach(), backbone.token_embedding.weight[torch.tensor(ids)])
    assert pl.eot.tolist() == [1 + 10 + 1 + 1] * 101
