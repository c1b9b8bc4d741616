"""The nuclei metrics (``cellseg.evaluation.nuclei_metrics``) of detections against a COCO
ground truth: what ``NucleiMetric`` reports and the evaluation report writes.

Each image becomes a pair of label images as ``tools/predict.py`` writes them: the detections
scoring >= ``score_thr``, overlaps given to the higher score; the ground truth, where an overlap,
which label-image data sets do not have, goes to the later annotation. Images are painted and
compared in batches (``cellseg.structures.sparse_labels``), not one at a time: on a data set of
small images the per-image overhead of a loop was most of the cost.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cellseg.evaluation.nuclei_metrics import NucleiMetrics, overlap_of
from cellseg.structures.sparse_labels import SparseLabels, paint_masks, rle_images

#: per image: (masks as COCO RLEs or HxW arrays, scores, class ids 1..K = place in cat_ids + 1)
ImageDetections = tuple[Sequence, np.ndarray, np.ndarray]

# images are painted together up to this many pixels; nothing holds them all, but positions
# in the stacked images must fit int64 (and batches bound a cached ground truth's pieces)
BATCH_PIXELS = 2 ** 28

#: a batch's ground truth: its label images, the class of each instance, areas and centroids
GroundTruth = tuple[SparseLabels, np.ndarray, np.ndarray, np.ndarray]


def coco_gt_rles(coco, img_id: int, cat_ids: Sequence[int]) -> tuple[list, np.ndarray]:
    """(RLEs, class ids 1..K) of an image's ground-truth annotations of ``cat_ids`` (the k-th
    category is class k + 1), in annotation order; crowd and ignored annotations, which
    COCOeval does not count as instances, are left out. ``coco``: a pycocotools ``COCO``;
    polygons, RLEs and uncompressed RLEs all pass through its ``annToRLE``."""
    col = {c: k + 1 for k, c in enumerate(cat_ids)}
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            if a['category_id'] in col and not a.get('iscrowd', 0) and not a.get('ignore', 0)]
    return ([coco.annToRLE(a) for a in anns],
            np.array([col[a['category_id']] for a in anns], np.int64))


def batches(shapes: Sequence[tuple[int, int]], max_pixels: int = BATCH_PIXELS
            ) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of consecutive images holding at most ``max_pixels`` pixels
    together (an image larger than that alone)."""
    out, start, total = [], 0, 0
    for k, (h, w) in enumerate(shapes):
        if total and total + h * w > max_pixels:
            out.append((start, k))
            start, total = k, 0
        total += h * w
    if start < len(shapes):
        out.append((start, len(shapes)))
    return out


def ground_truth(coco, img_ids: Sequence[int], shapes: Sequence[tuple[int, int]],
                 cat_ids: Sequence[int]) -> GroundTruth:
    """The ground-truth label images of ``img_ids`` with their instances' classes, areas and
    centroids."""
    rles, classes = [], []
    for img_id in img_ids:
        r, c = coco_gt_rles(coco, img_id, cat_ids)
        rles.append(r)
        classes.append(c)
    labels = rle_images(rles, shapes, [f'image {i} (ground truth)' for i in img_ids])
    area = labels.areas()
    return (labels, np.concatenate(classes + [np.zeros(0, np.int64)])[labels.source], area,
            labels.centroids(area))


def coco_nuclei_metrics(coco, detections: Mapping[int, ImageDetections], cat_ids: Sequence[int],
                        img_ids: Sequence[int] | None = None, score_thr: float = 0.5,
                        match_iou: float = 0.5, radius: float = 12.0,
                        gt_cache: dict | None = None) -> NucleiMetrics:
    """``NucleiMetrics`` of detections against a COCO ground truth, classes included.

    Images: ``img_ids``, default all of ``coco`` in id order; one without detections is an
    empty prediction. Classes are 1..len(cat_ids), all reported. ``gt_cache``: a dict kept
    between calls on the same ``coco`` (validation evaluates every epoch), holding the ground
    truth of each batch of images (its foreground pixels, so memory follows the cells, not the
    images) so it is decoded and painted once.
    """
    metrics = NucleiMetrics(classes=range(1, len(cat_ids) + 1), match_iou=match_iou,
                            radius=radius)
    ids = sorted(coco.getImgIds()) if img_ids is None else list(img_ids)
    shapes = [(int(coco.imgs[i]['height']), int(coco.imgs[i]['width'])) for i in ids]
    empty: ImageDetections = ([], np.zeros(0), np.zeros(0, np.int64))
    for start, end in batches(shapes):
        batch, batch_shapes = ids[start:end], shapes[start:end]
        key = (tuple(batch), tuple(cat_ids))
        gt = None if gt_cache is None else gt_cache.get(key)
        if gt is None:
            gt = ground_truth(coco, batch, batch_shapes, cat_ids)
            if gt_cache is not None:
                gt_cache[key] = gt
        gt_labels, gt_classes, gt_area, gt_centroid = gt
        masks, scores, classes = [], [], []
        for img_id in batch:
            m, s, c = detections.get(img_id, empty)
            s = np.asarray(s, np.float64).ravel()
            keep = np.flatnonzero(s >= score_thr)
            masks.append([m[i] for i in keep])
            scores.append(s[keep])
            classes.append(np.asarray(c, np.int64).ravel()[keep])
        pred = paint_masks(masks, scores, batch_shapes,
                           [f'image {i} ({h}x{w} in the ground truth)'
                            for i, (h, w) in zip(batch, batch_shapes)])
        pred_classes = np.concatenate(classes + [np.zeros(0, np.int64)])[pred.source]
        metrics.add_overlap(overlap_of(gt_labels, pred, gt_area, gt_centroid),
                            gt_classes, pred_classes)
    return metrics
