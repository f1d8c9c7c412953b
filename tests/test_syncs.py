"""No host sync inside a training step: each method's step (batch, augmentation, forward, every
loss term, backward, RAdam) reads nothing back from the device, so the host can queue ahead.
Counted on the CPU by ordclip.syncs.count_syncs (what would wait on an accelerator)."""

import numpy as np
import pytest
import torch

from conftest import ROOT
from ordclip.config import load_params
from ordclip.data.loader import ImagePipeline, Part, to_device
from ordclip.methods import load
from ordclip.models.backbone import create_backbone, tokenizer
from ordclip.runs import make_task
from ordclip.syncs import count_syncs
from ordclip.train import make_optimizer, set_trainable, train_batch, train_step
from test_prompts import TINY

PARAMS = load_params([ROOT / "params.yaml"])
NAMES = ["zero", "one", "two", "three", "seventy seven"]   # rank words of 1 and 2 tokens


def test_the_counter_sees_each_kind_of_sync():
    x = torch.randn(6)
    with count_syncs() as events:
        x.sum().item()
        int(x.argmax())
        if x.max() > 0:
            pass
        x[x > 0]
        x.nonzero()
        x.tolist()
        x.cpu()
        x.numpy()
        torch.repeat_interleave(torch.tensor([1, 2]))
        x.to("meta")                             # a blocking copy to another device
        x.to("meta", non_blocking=True)          # none
        x[:2] * 2 + x[torch.tensor([0, 3])]      # none: elementwise and integer indexing
    assert len(events) == 10, events
    assert torch.Tensor.tolist is torch._C.TensorBase.tolist    # restored


def _method(kind):
    data = {"name": "d", "ranks": [0, 4], "prompt": {"context": "the level is"}, "rank_names": NAMES,
            "coarse": {"starts": [0, 1, 2, 3, 4], "names": NAMES}}
    torch.manual_seed(0)
    cfg = dict(PARAMS["methods"][kind])
    return load(kind).build(create_backbone(TINY, None), tokenizer(TINY), make_task(data, np.array([0])), cfg), cfg


@pytest.mark.parametrize("kind, stage_index", [("baseline", 0), ("coop", 0), ("ordinalclip", 0), ("l2rclip", 0),
                                               ("l2rclip", 1), ("numclip", 0)])
def test_a_training_step_has_no_host_sync(kind, stage_index):
    method, cfg = _method(kind)
    stage = method.stages()[stage_index]
    set_trainable(method, stage)
    opt = make_optimizer(stage, cfg)
    gen = torch.Generator().manual_seed(0)
    n, bs = 40, 8
    part = Part(np.arange(n), torch.randint(0, 256, (n, 36, 36, 3), dtype=torch.uint8, generator=gen),
                torch.arange(n) % 5)
    pipeline = ImagePipeline(32, "imagenet", True, torch.device("cpu"))
    stage_inputs = getattr(method, "stage_inputs", None)
    inputs = stage_inputs(stage, part, pipeline, torch.autocast("cpu", enabled=False)) if stage_inputs else None
    perm = torch.randperm(n, generator=gen)
    order = to_device(perm, part.ranks.device)
    method.train()
    with count_syncs() as events:
        for start in [0, 8, 16, 24, 32, 0, 8]:          # 7 steps: the 6th is RAdam's first update
            x, y = train_batch(part, pipeline, gen, stage, order, perm, start, bs, inputs)
            terms = train_step(method, stage, opt, x, y, torch.autocast("cpu", enabled=False))
    assert set(terms) == set(stage.loss_weights)
    assert events == []
    assert all(s["step"] == 7 for s in opt.state.values())


def test_host_tensors_go_to_cuda_pinned_and_non_blocking(monkeypatch):
    # the CPU cannot see a blocking host-to-device copy, so the one path every per-step copy takes
    # (data.loader.to_device) is pinned here: pinned memory, then a non-blocking copy
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append(("to", str(a[0]), k)) or self)
    t = torch.arange(3)
    to_device(t, torch.device("cuda"))
    assert calls == ["pin", ("to", "cuda", {"non_blocking": True})]
    calls.clear()
    monkeypatch.setattr(torch.Tensor, "to", real_to)
    assert to_device(t, torch.device("cpu")) is t and calls == []
