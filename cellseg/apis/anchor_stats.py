"""Box size statistics of a COCO annotation file, and the FPN anchors they call for.

mmdet's ``AnchorGenerator`` places, at every position of FPN level ``i`` (stride ``strides[i]``),
one anchor per (scale, ratio) with area ``(stride * scale)**2`` and ``h / w == ratio``. Its
COCO defaults (``scales=[8]``, ratios 0.5/1/2, strides 4..64) start at 32 px; cells of 8-40 px
then overlap their best anchor with IoU below the RPN's positive threshold (0.7), most of them
even below its low-quality threshold (0.3), which leaves them no positive anchor at all.
:func:`suggest_anchors` searches half-octave scale sets and ratio sets for the anchors that give
the most boxes a positive anchor.

Anchor centres lie on each level's stride grid, so a box is up to ``stride/2`` px off its nearest
anchor in each axis, which for a 6 px cell at stride 4 costs more IoU than a size mismatch. The
IoUs here are taken that way: every box gets a pseudo-random (seeded) centre and is compared with
the anchors at the nearest grid point of each level, as the RPN's assigner would see it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.structures.bbox import bbox_overlaps

FPN_STRIDES = (4, 8, 16, 32, 64)
# mmdet's _base_/models/mask-rcnn_r50_fpn.py
MMDET_DEFAULT_ANCHORS = dict(scales=[8], ratios=[0.5, 1.0, 2.0], strides=list(FPN_STRIDES))
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
# mask-rcnn_r50_fpn's train_cfg.rpn.assigner: pos_iou_thr and min_pos_iou
RPN_POS_IOU = 0.7
MIN_POS_IOU = 0.3


@dataclass(frozen=True)
class Boxes:
    """Widths and heights (px) of the annotated boxes of one COCO file, with their classes."""

    wh: np.ndarray  # (N, 2) float
    category_ids: np.ndarray  # (N,) int
    category_names: dict[int, str]
    instances_per_image: np.ndarray  # (images,) int, images without instances included


def load_boxes(ann_path: str | Path) -> Boxes:
    """Read the non-crowd boxes of a COCO file; boxes of zero width or height are left out."""
    ann_path = Path(ann_path)
    try:
        coco = json.loads(ann_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{ann_path}: cannot read as COCO JSON ({e})') from e
    for key in ('images', 'annotations', 'categories'):
        if key not in coco:
            raise ValueError(f'{ann_path}: no "{key}" list (not a COCO annotation file)')
    anns = [a for a in coco['annotations'] if not a.get('iscrowd', 0)]
    wh = np.array([a['bbox'][2:4] for a in anns], np.float64).reshape(-1, 2)
    cats = np.array([a['category_id'] for a in anns], np.int64)
    valid = (wh > 0).all(axis=1)
    if not valid.any():
        raise ValueError(f'{ann_path}: holds no boxes of positive size')
    counts = {img['id']: 0 for img in coco['images']}
    for a in anns:
        counts[a['image_id']] = counts.get(a['image_id'], 0) + 1
    return Boxes(wh[valid], cats[valid], {c['id']: c['name'] for c in coco['categories']},
                 np.array(list(counts.values()), np.int64))


def anchor_iou(wh: np.ndarray, cfg: dict, centres: np.ndarray | None = None,
               seed: int = 0) -> np.ndarray:
    """For each box (widths, heights ``wh``), the highest IoU with an anchor of mmdet's
    ``AnchorGenerator(**cfg)`` at the grid point of each level nearest to the box centre.
    ``centres``: (N, 2) x, y of the boxes; by default drawn uniformly (``seed``) over a period
    of every stride."""
    generator = AnchorGenerator(strides=cfg['strides'], ratios=cfg['ratios'],
                                scales=cfg['scales'])
    strides = np.array([s[0] for s in generator.strides], np.float64)
    if centres is None:
        period = float(np.lcm.reduce(strides.astype(np.int64)))
        centres = np.random.default_rng(seed).uniform(0, period, size=(len(wh), 2))
    best = torch.zeros(len(wh), dtype=torch.float64)
    for stride, anchors in zip(strides, generator.base_anchors):  # centred on (0, 0)
        # the box relative to its nearest grid point (anchor centres are multiples of stride)
        off = centres - np.round(centres / stride) * stride
        boxes = torch.from_numpy(np.concatenate([off - wh / 2, off + wh / 2], axis=1))
        iou = bbox_overlaps(boxes, anchors.to(torch.float64))
        best = torch.maximum(best, iou.max(dim=1).values)
    return best.numpy()


def _nice(x: float) -> float:
    return float(f'{x:.3g}')


def suggest_anchors(wh: np.ndarray, strides: tuple[int, ...] = FPN_STRIDES,
                    anchors_per_position: int = 9, tolerance: float = 0.01) -> dict:
    """Anchor ``scales``/``ratios``/``strides`` for mmdet's ``AnchorGenerator`` fitted to ``wh``.

    Candidates: 1 to 4 scales a factor ``sqrt(2)`` apart (two per octave: with scales doubling,
    as in mmdet's single scale over levels, a box between two anchor sizes overlaps either with
    IoU 0.5 at best, under the RPN's positive threshold 0.7; half-octave steps reach 0.71), the
    first one a power of ``sqrt(2)`` putting the smallest anchor between 2 and 32 px; ratios
    ``[1.0]`` or ``[1/e, 1, e]`` for ``e`` in 1.5, 2, 2.5, 3 (cells lie at any angle, so
    elongation is symmetric); at most ``anchors_per_position`` anchors (scales x ratios) per
    grid point, which sets the RPN's cost (mmdet's default has 3).

    Chosen, in this order (grid-aware IoUs, see the module doc):

    1. the most boxes with an anchor at IoU >= 0.3 (the RPN assigner's ``min_pos_iou``: below
       it a box gets no positive anchor at all and is never proposed), ties within
       ``tolerance`` (a few fragments of 3-4 px cannot be served by stride-4 anchors at all);
    2. the most boxes with an anchor at IoU >= 0.7 (a full positive);
    3. the fewest anchors per position.
    """
    step = math.sqrt(2.0)
    lo = math.floor(math.log(2 / strides[0], step))
    hi = math.ceil(math.log(32 / strides[0], step))
    candidates = []
    for ratios in ([1.0], *([_nice(1 / e), 1.0, e] for e in (1.5, 2.0, 2.5, 3.0))):
        for num_scales in range(1, 5):
            if num_scales * len(ratios) > anchors_per_position:
                continue
            for exponent in range(lo, hi + 1):
                scales = [_nice(step ** (exponent + i)) for i in range(num_scales)]
                cfg = dict(scales=scales, ratios=ratios, strides=list(strides))
                iou = anchor_iou(wh, cfg)
                candidates.append((float((iou >= MIN_POS_IOU).mean()),
                                   float((iou >= RPN_POS_IOU).mean()),
                                   num_scales * len(ratios), cfg))
    reach = max(c[0] for c in candidates)
    eligible = [c for c in candidates if c[0] >= reach - tolerance]
    return max(eligible, key=lambda c: (c[1], -c[2]))[3]


def report(ann_path: str | Path, anchors_per_position: int = 9) -> tuple[str, dict]:
    """Human-readable statistics of ``ann_path`` and the suggested anchors (also returned)."""
    boxes = load_boxes(ann_path)
    wh = boxes.wh
    sizes = np.sqrt(wh[:, 0] * wh[:, 1])
    side = wh.max(axis=1)
    hw = wh[:, 1] / wh[:, 0]
    pct = ', '.join(f'p{p} {v:.1f}' for p, v in zip(PERCENTILES, np.percentile(sizes, PERCENTILES)))
    lines = [f'{ann_path}: {len(wh)} boxes in {len(boxes.instances_per_image)} images',
             f'sqrt(w*h) px: {pct}, max {sizes.max():.1f}']
    for cat, name in sorted(boxes.category_names.items()):
        s = sizes[boxes.category_ids == cat]
        if s.size:
            lines.append(f'  {name}: {s.size} boxes, sqrt(w*h) p5 {np.percentile(s, 5):.1f}, '
                         f'median {np.median(s):.1f}, p95 {np.percentile(s, 95):.1f}')
    lines.append('h/w: ' + ', '.join(f'p{p} {v:.2f}' for p, v in
                                     zip(PERCENTILES, np.percentile(hw, PERCENTILES))))
    lines.append(f'longest box side px: p99 {np.percentile(side, 99):.0f}, p99.9 '
                 f'{np.percentile(side, 99.9):.0f}, max {side.max():.0f} (tile overlap must '
                 'exceed it)')
    per_img = boxes.instances_per_image
    lines.append(f'instances per image: median {np.median(per_img):.0f}, p99 '
                 f'{np.percentile(per_img, 99):.0f}, max {per_img.max()} (detections per image '
                 'must exceed it)')
    suggested = suggest_anchors(wh, anchors_per_position=anchors_per_position)
    for name, cfg in (('mmdet default', MMDET_DEFAULT_ANCHORS), ('suggested', suggested)):
        iou = anchor_iou(wh, cfg)
        sizes_px = sorted({round(s * st, 1) for s in cfg['scales'] for st in cfg['strides']})
        lines.append(f'{name}: scales={cfg["scales"]} ratios={cfg["ratios"]} '
                     f'strides={cfg["strides"]} (anchor sizes {sizes_px} px); boxes whose '
                     f'best anchor IoU >= {RPN_POS_IOU}: {(iou >= RPN_POS_IOU).mean():.1%}'
                     f', >= {MIN_POS_IOU}: {(iou >= MIN_POS_IOU).mean():.1%}, median IoU '
                     f'{np.median(iou):.2f}')
    return '\n'.join(lines), suggested
