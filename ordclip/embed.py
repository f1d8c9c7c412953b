"""Frozen-tower caches: image features of every image and text features of the rank prompts."""

from __future__ import annotations

import numpy as np
import torch

from ordclip import layout
from ordclip.config import apply_rank_space
from ordclip.data.loader import ImagePipeline
from ordclip.data.splits import read_index
from ordclip.io import atomic_path, load_numpy
from ordclip.models.backbone import create_backbone, encode_texts, tokenizer
from ordclip.runs import device_for, make_task


def zeroshot_prompts(context: str, rank_names: list[str]) -> list[str]:
    """The hand-written rank prompts: "{context} {rank name}." (the prompt learners' sentence)."""
    return [f"{context} {name}." for name in rank_names]


@torch.no_grad()
def embed(job: dict, batch_size: int = 256) -> None:
    """Write features.npz of a job (ordclip.jobs.job_config "embed"): image_features (N, D),
    text_features (R, D), logit_scale, prompts."""
    suite, bb, ds = job["suite"], job["backbone"], job["dataset"]
    dataset = ds["name"]
    device = device_for(job["device"], f"embed {suite}/{dataset}")
    torch.manual_seed(job["seed"])
    model = create_backbone(bb, layout.backbone_weights(bb["name"])).to(device)
    images = load_numpy(layout.prepared_images(dataset, bb["resize"]), "prepare", mmap_mode="r")
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
    with atomic_path(layout.features(suite, dataset), checked=True) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, image_features=torch.cat(feats).numpy(), text_features=text.numpy(),
                     logit_scale=np.float32(model.logit_scale.item()), prompts=np.array(prompts))
