"""How many proposals and detections an image may keep: by its area, not one number for all.

A 256 px CoNSeP patch and a 2500x2000 px HW3 image hold cells at similar densities, so a budget
that suits one is 75 times too small or too large for the other. A test config may give, beside
mmdet's ``nms_pre`` and ``max_per_img``, ``<key>_per_mpx``: the budget per megapixel of the
image (of the tile, for a tiled image). The key's own value is then the floor: an image gets
``max(key, ceil(key_per_mpx * pixels / 1e6))``. Without ``<key>_per_mpx`` the key means what it
means in mmdet.

``max_per_class`` (RoI head) keeps each class's best ``max_per_class`` detections of an image:
COCO's AP at 100 detections ranks each image's detections per category and counts the first
100, so a larger list changes nothing it counts while the mask head would run on all of them.
Detections scoring at least ``uncapped_score`` are kept whatever the cap says (the nuclei
metrics and the prediction outputs count every detection above their threshold).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData


def area_budget(cfg: Mapping, key: str, shape: Sequence[int]) -> int | None:
    """``cfg[key]`` for an image of ``shape`` (height, width, ...): scaled by its area when
    ``cfg`` has ``<key>_per_mpx``, the key's value being the floor."""
    base = cfg.get(key)
    per_mpx = cfg.get(f'{key}_per_mpx')
    if per_mpx is None or base is None or base < 0:
        return base
    pixels = int(shape[0]) * int(shape[1])
    return max(int(base), math.ceil(float(per_mpx) * pixels / 1e6))


def budgeted_cfg(cfg: ConfigDict, keys: Sequence[str], shape: Sequence[int]) -> ConfigDict:
    """A copy of ``cfg`` with each of ``keys`` replaced by its ``area_budget`` for ``shape``
    (``cfg`` itself when it has no ``<key>_per_mpx``)."""
    if not any(cfg.get(f'{k}_per_mpx') is not None for k in keys):
        return cfg
    out = ConfigDict(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg))
    for k in keys:
        out[k] = area_budget(cfg, k, shape)
    return out


def keep_budget(results: InstanceData, cfg: Mapping, shape: Sequence[int]) -> InstanceData:
    """``results`` (one image's detections) cut to its best ``max_per_img`` (by area) and to
    each class's best ``max_per_class`` among those scoring below ``uncapped_score``; equal
    scores keep the earlier detection, as mmdet's ``multiclass_nms`` orders them."""
    n = len(results)
    scores, labels = results.scores, results.labels
    keep = torch.ones(n, dtype=torch.bool, device=scores.device)
    order = torch.argsort(scores, descending=True, stable=True)
    budget = area_budget(cfg, 'max_per_img', shape)
    if budget is not None and 0 <= budget < n:
        keep[order[budget:]] = False
    per_class = cfg.get('max_per_class')
    if per_class is not None and n > per_class:
        # rank of each detection within its class, in score order
        sorted_labels = labels[order]
        one_hot = torch.nn.functional.one_hot(sorted_labels, int(labels.max()) + 1)
        rank_sorted = (one_hot.cumsum(0) * one_hot).sum(1) - 1
        rank = torch.empty_like(rank_sorted)
        rank[order] = rank_sorted
        capped = rank >= per_class
        uncapped = cfg.get('uncapped_score')
        if uncapped is not None:
            capped &= scores < uncapped
        keep &= ~capped
    return results if bool(keep.all()) else results[keep]
