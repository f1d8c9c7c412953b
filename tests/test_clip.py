"""ordclip.models.clip against open_clip: same parameters and random draws at creation, same
outputs and gradients bit for bit, same tokens."""

import open_clip
import pytest
import torch

from ordclip.models import clip
from ordclip.models.backbone import CONFIG_DIR, encode_token_embeddings, register_configs


@pytest.mark.parametrize("name", ["ordclip-tiny", "ViT-B-16-quickgelu"])
def test_same_parameters_and_random_draws_as_open_clip(name):
    register_configs()
    cfg = clip.model_config(name, CONFIG_DIR)
    assert clip.supports(cfg)
    torch.manual_seed(3)
    ours = clip.create_model(cfg, None)
    after_ours = torch.rand(4)
    torch.manual_seed(3)
    theirs = open_clip.create_model(name)
    after_theirs = torch.rand(4)
    assert torch.equal(after_ours, after_theirs)          # the same number of draws, so later inits agree
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert torch.equal(ours.attn_mask, theirs.attn_mask)


def test_same_outputs_and_gradients_as_open_clip(tmp_path):
    register_configs()
    cfg = clip.model_config("ordclip-tiny", CONFIG_DIR)
    torch.manual_seed(0)
    theirs = open_clip.create_model("ordclip-tiny").float()
    torch.save(theirs.state_dict(), tmp_path / "w.pt")
    ours = clip.create_model(cfg, tmp_path / "w.pt").float()
    assert isinstance(ours.transformer.resblocks[0].mlp.gelu, clip.nn.GELU)  # ordclip-tiny: no quick_gelu
    images = torch.randn(5, 3, 32, 32)
    tok = open_clip.get_tokenizer("ordclip-tiny")
    ids = tok(["the colours of this photo are faded.", "a photo of 3 dogs!"])
    for model in (ours, theirs):
        model.zero_grad()
        (model.encode_image(images).sum() + encode_token_embeddings(
            model, model.token_embedding(ids), ids.argmax(-1)).sum()).backward()
    assert torch.equal(ours.encode_image(images), theirs.encode_image(images))
    assert torch.equal(ours.encode_text(ids), theirs.encode_text(ids))
    grads = {n: p.grad for n, p in theirs.named_parameters()}
    assert all(torch.equal(p.grad, grads[n]) for n, p in ours.named_parameters() if p.grad is not None)


def test_same_tokens_as_open_clip():
    ours, theirs = clip.SimpleTokenizer(), open_clip.get_tokenizer("ViT-B-16-quickgelu")
    texts = ["the number of shapes is seven.", "Ünïcode &amp; HTML  spaces", "it's 1,234 years' worth!!",
             "very " * 80 + "long"]
    assert torch.equal(ours(texts), theirs(texts))
    assert ours.encode(".") == theirs.encode(".") and ours.sot_token_id == theirs.sot_token_id
    assert ours.eot_token_id == theirs.eot_token_id


def test_other_configs_are_left_to_open_clip():
    assert not clip.supports(clip.model_config("RN50-quickgelu", CONFIG_DIR))
    assert not clip.supports({"embed_dim": 8, "vision_cfg": {"layers": 2, "width": 8, "qk_norm": True},
                              "text_cfg": {}})
