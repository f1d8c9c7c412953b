"""Frozen-tower caches: image features of every image and text features of the rank prompts."""

from __future__ import annotations

import numpy as np
import torch

from ordclip import layout
from ordclip.config import apply_rank_space, backbone_config, dataset_config, suite_config
from ordclip.data.loader import ImagePipeline
from ordclip.data.splits import read_index
from ordclip.io import atomic_path
from ordclip.models.backbone import create_backbone, encode_texts, tokenizer
from ordclip.runs import device_for, make_task


def zeroshot_prompts(context: str, rank_names: list[str]) -> list[str]:
    """The hand-written rank prompts: "{context} {rank name}." (the prompt learners' sentence)."""
    return [f"{context} {name}." for name in rank_names]


@torch.no_grad()
def embed(params: dict, suite: str, dataset: str, batch_size: int = 256) -> None:
    """Write features.npz: image_features (N, D), text_features (R, D), logit_scale, prompts."""
    s = suite_config(params, suite)
    bb, ds = backbone_config(params, s["backbone"]), dataset_config(params, dataset)
    device = device_for(s.get("device", "auto"))
    torch.manual_seed(params["seed"])
    model = create_backbone(bb, layout.backbone_weights(bb["name"])).to(device)
    images = np.load(layout.prepared_images(dataset, bb["resize"]), mmap_mode="r")
    # zero-shot CLIP and the probe on frozen CLIP features see images as CLIP was trained on them
    pipeline = ImagePipeline(bb["image_size"], bb.get("features_normalize", "clip"), False, device)
    feats = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[start:start + batch_size])).to(device)
        feats.append(model.encode_image(pipeline(x, train=False)).float().cpu())
    # the text side serves zero-shot CLIP only (the linear probe fits its own head): its rank space
    labels = read_index(layout.prepared_index(dataset, bb["resize"]))["label"]
    task = make_task(apply_rank_space(ds, "zeroshot"), labels)
    prompts = zeroshot_prompts(task.context, task.rank_names)
    text = encode_texts(model, tokenizer(bb), prompts).float().cpu()
    with atomic_path(layout.features(suite, dataset)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, image_features=torch.cat(feats).numpy(), text_features=text.numpy(),
                     logit_scale=np.float32(model.logit_scale.item()), prompts=np.array(prompts))
