"""OpenAI's CLIP backbones (rn50_openai, vitb16_openai, vitb32_openai, vitl14_openai): a checkpoint in
OpenAI's format converts to an open_clip state_dict that loads bit for bit into the entry's open_clip
model and computes what OpenAI's architecture (QuickGELU) computes. Fast tests use tiny models of each
entry's family (its patch size / modified ResNet, its activation); the real shapes are the slow tests.
No download: the tests build and save the checkpoints themselves."""

import json

import pytest
import torch
import yaml

from conftest import ROOT
from ordclip.models.backbone import convert_openai, create_backbone, register_configs

BACKBONES = yaml.safe_load((ROOT / "params.yaml").read_text())["backbones"]
OPENAI = ["rn50_openai", "vitb16_openai", "vitb32_openai", "vitl14_openai"]


def _openai_checkpoint(model_name: str, path) -> dict:
    """A random open_clip model saved as OpenAI stores it: the same key names, fp16-rounded values."""
    import open_clip

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None)
    state = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, path)
    return state


def _tiny_of(model_name: str, folder) -> str:
    """A tiny open_clip config of ``model_name``'s family, registered with open_clip: the same vision
    kind (patch size for a ViT, the modified ResNet's stem and attention pool otherwise) and the same
    activation flag, with 1 layer per tower, 64-wide heads (OpenAI's checkpoints imply head width 64),
    and a 2x2 grid of patches (or of the ResNet's last feature map)."""
    import open_clip

    real = open_clip.get_model_config(model_name)
    vision = real["vision_cfg"]
    if isinstance(vision["layers"], int):
        vision_cfg = {"layers": 1, "width": 64, "patch_size": vision["patch_size"], "image_size": 2 * vision["patch_size"]}
    else:
        vision_cfg = {"layers": [1, 1, 1, 1], "width": 8, "head_width": 64, "image_size": 64}
    tiny = {"embed_dim": 32, "vision_cfg": vision_cfg,
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 1}}
    if real.get("quick_gelu"):
        tiny["quick_gelu"] = True
    name = f"tiny-of-{model_name}"
    (folder / f"{name}.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(folder)
    return name


def _check_conversion(tmp_path, model_name):
    from open_clip.openai import load_openai_model

    state = _openai_checkpoint(model_name, tmp_path / "openai.pt")
    convert_openai(tmp_path / "openai.pt", tmp_path / "converted.pt")
    model = create_backbone({"name": "openai", "model": model_name}, tmp_path / "converted.pt")
    got = model.state_dict()
    assert set(got) == set(state)
    for name, value in state.items():
        assert torch.equal(got[name], value), name
    # OpenAI's architecture, as open_clip rebuilds it from the checkpoint's shapes (always QuickGELU)
    reference = load_openai_model(str(tmp_path / "openai.pt"), precision="fp32", device="cpu").eval()
    size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
    torch.manual_seed(1)
    images, text = torch.randn(2, 3, size, size), torch.randint(1, 49407, (2, 77))
    with torch.no_grad():
        f, g = model.encode_image(images), model.encode_text(text)
        assert torch.allclose(f, reference.encode_image(images), atol=1e-5)
        assert torch.allclose(g, reference.encode_text(text), atol=1e-5)
    assert f.shape == (2, state["text_projection"].shape[1]) and torch.isfinite(f).all()
    return state


def test_tiny_rn_openai_checkpoint_converts_exactly(tmp_path):
    state = _check_conversion(tmp_path, "ordclip-tiny-rn")
    assert "visual.attnpool.positional_embedding" in state       # a modified ResNet, not a ViT


@pytest.mark.parametrize("entry", OPENAI)
def test_a_tiny_model_of_each_entrys_family_converts_exactly(tmp_path, entry):
    name = _tiny_of(BACKBONES[entry]["model"], tmp_path)
    state = _check_conversion(tmp_path, name)
    if entry == "rn50_openai":
        assert "visual.attnpool.positional_embedding" in state
    else:
        patch = BACKBONES[entry]["model"].split("-")[2]          # ViT-B-32-quickgelu -> 32
        assert state["visual.conv1.weight"].shape[-1] == int(patch)


def test_an_entry_without_quickgelu_would_differ_from_openais_model(tmp_path):
    """The activation check above can fail: open_clip's plain ViT-B-32 (GELU) loads OpenAI's weights
    but computes other features than OpenAI's model."""
    with pytest.raises(AssertionError):
        _check_conversion(tmp_path, _tiny_of("ViT-B-32", tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["RN50-quickgelu", "ViT-B-16-quickgelu", "ViT-B-32-quickgelu", "ViT-L-14-quickgelu"])
def test_real_openai_shapes_convert_exactly(tmp_path, model_name):
    _check_conversion(tmp_path, model_name)


@pytest.mark.parametrize("entry", OPENAI)
def test_openai_entries_match_open_clips_table(entry):
    import open_clip

    bb = BACKBONES[entry]
    assert bb["model"] in open_clip.list_models() and bb["weights"]["format"] == "openai"
    # the URL open_clip itself downloads for this model's `openai` tag, and its QuickGELU flag
    assert bb["weights"]["url"] == open_clip.get_pretrained_url(bb["model"], "openai")
    assert open_clip.get_pretrained_cfg(bb["model"], "openai")["quick_gelu"] is True
    assert open_clip.get_model_config(bb["model"])["quick_gelu"] is True
    # OpenAI names each release folder by the file's sha256 (open_clip verifies the download against it)
    assert bb["weights"]["url"].split("/")[-2] == bb["weights"]["sha256"]
    assert bb["image_size"] == open_clip.get_model_config(bb["model"])["vision_cfg"]["image_size"] == 224
    assert bb["resize"] == 256 and bb["normalize"] == "imagenet" and bb["features_normalize"] == "clip"
