"""Backbone weights: a random init, or a file downloaded by URL, checked by sha256, and OpenAI's
checkpoint format converted to open_clip's. The server is a real HTTP server on 127.0.0.1."""

import functools
import hashlib
import http.server
import threading

import pytest
import torch

from conftest import ROOT
from ordclip.cli import main
from ordclip.models.backbone import create_backbone

TINY = {"name": "tiny", "model": "ordclip-tiny"}


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _params(tmp_path, weights: dict) -> str:
    import yaml

    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({"backbones": {"fetched": {
        "model": "ordclip-tiny", "weights": weights, "image_size": 32, "resize": 36,
        "resize_interpolation": "bicubic", "normalize": "imagenet"}}}))
    return str(path)


@pytest.mark.parametrize("fmt", ["open_clip", "openai"])
def test_weights_by_url_are_verified_and_load(tmp_path, server, monkeypatch, fmt):
    www, base = server
    torch.manual_seed(1)
    source = create_backbone(TINY, None)
    if fmt == "openai":  # OpenAI's release stores fp16 values (open_clip loads them through fp16)
        source.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                                for k, v in source.state_dict().items()})
    torch.save(source.state_dict(), www / "tiny.pt")   # OpenAI's key names are open_clip's
    digest = hashlib.sha256((www / "tiny.pt").read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    rc = main(["backbone", "--params", str(ROOT / "params.yaml"),
               "--params", _params(tmp_path, {"url": f"{base}/tiny.pt", "sha256": digest, "format": fmt}),
               "--backbone", "fetched"])
    assert rc == 0
    model = create_backbone(TINY, tmp_path / "data/weights/fetched.pt")
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_a_wrong_checksum_stops_and_leaves_no_weights(tmp_path, server, monkeypatch, capsys):
    www, base = server
    (www / "tiny.pt").write_bytes(b"not the weights")
    monkeypatch.chdir(tmp_path)
    rc = main(["backbone", "--params", str(ROOT / "params.yaml"),
               "--params", _params(tmp_path, {"url": f"{base}/tiny.pt", "sha256": "0" * 64}),
               "--backbone", "fetched"])
    err = capsys.readouterr().err
    assert rc == 2 and "0" * 64 in err and "tiny.pt" in err
    assert not (tmp_path / "data/weights/fetched.pt").exists()


def test_a_file_that_is_no_openai_checkpoint_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    monkeypatch.chdir(tmp_path)
    rc = main(["backbone", "--params", str(ROOT / "params.yaml"),
               "--params", _params(tmp_path, {"path": str(tmp_path / "junk.pt"), "format": "openai"}),
               "--backbone", "fetched"])
    assert rc == 2 and "junk.pt: not an OpenAI CLIP checkpoint" in capsys.readouterr().err
