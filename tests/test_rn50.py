"""The OpenAI RN50 backbone: a modified-ResNet CLIP checkpoint in OpenAI's format converts to an
open_clip state_dict that loads bit for bit (a tiny RN built here; the real RN50 shape in the slow
test). No download: the test builds and saves the checkpoint itself."""

import pytest
import torch
import yaml

from conftest import ROOT
from ordclip.models.backbone import convert_openai, create_backbone, register_configs


def _openai_checkpoint(model_name: str, path) -> dict:
    """A random open_clip model saved as OpenAI stores it: the same key names, fp16-rounded values."""
    import open_clip

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None)
    state = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, path)
    return state


def _check_conversion(tmp_path, model_name):
    state = _openai_checkpoint(model_name, tmp_path / "openai.pt")
    assert "visual.attnpool.positional_embedding" in state       # a modified ResNet, not a ViT
    convert_openai(tmp_path / "openai.pt", tmp_path / "converted.pt")
    model = create_backbone({"name": "rn", "model": model_name}, tmp_path / "converted.pt")
    got = model.state_dict()
    for name, value in state.items():
        assert torch.equal(got[name], value), name
    size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
    with torch.no_grad():
        f = model.encode_image(torch.randn(2, 3, size, size))
    assert f.shape == (2, state["text_projection"].shape[1]) and torch.isfinite(f).all()


def test_tiny_rn_openai_checkpoint_converts_exactly(tmp_path):
    _check_conversion(tmp_path, "ordclip-tiny-rn")


@pytest.mark.slow
def test_rn50_openai_checkpoint_converts_exactly(tmp_path):
    _check_conversion(tmp_path, "RN50-quickgelu")


def test_rn50_backbone_entry_uses_the_verified_openai_download():
    import open_clip

    bb = yaml.safe_load((ROOT / "params.yaml").read_text())["backbones"]["rn50_openai"]
    assert bb["model"] in open_clip.list_models() and bb["weights"]["format"] == "openai"
    # OpenAI names each release folder by the file's sha256
    assert bb["weights"]["url"].split("/")[-2] == bb["weights"]["sha256"]
    assert bb["weights"]["url"].endswith("/RN50.pt")
