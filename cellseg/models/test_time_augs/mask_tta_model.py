"""Test-time augmentation that merges instance masks, not only boxes.

mmdet's ``DetTTAModel`` un-flips and NMS-merges boxes and refuses predictions with masks.
``MaskTTAModel`` merges whole instances instead. Per image:

1. every view's boxes and masks are mapped back into the original image: un-flipped (boxes as
   ``DetTTAModel`` does), then turned back when the view was turned by ``Rot90`` (exact pixel
   permutations, ``CropMasks.turned``);
2. instances are matched across views greedily by decreasing score: each unmatched instance
   takes, from every other view, the unmatched instance of the same class with the highest mask
   IoU, if that reaches ``match_iou`` (classes stay apart as in mmdet's per-class NMS);
3. a matched group becomes one instance: a pixel belongs to its mask when at least ``vote_thr``
   of the group's masks hold it; its box is the mean of their boxes; its score is their summed
   score over the number of views (``score='mean'``: a cell seen in one view of four ranks below
   one seen in all) or their highest (``score='max'``).

Masks are binary votes, so any module works as it is (``MaskRCNN`` with tensor masks,
``TiledMaskRCNN`` with RLEs for large images); the merged masks keep the module's form.

Configs switch it on the mmdet way: ``tta_model`` and ``tta_pipeline`` in the config (see
``configs/cell_r50_scratch_dense_tta.py``: the four flips;
``configs/cell_r50_scratch_dense_tta8.py``: the eight symmetries of the square), applied by
``use_tta`` (``tools/test.py --tta``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmdet.models.test_time_augs import DetTTAModel
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_flip
from torch import Tensor

from cellseg.structures.crop_masks import EMPTY_CROP, CropMasks, MaskCrop, rotated_shape, trim
from cellseg.structures.detections import Detections, rotate_boxes

SCORE_MODES = ('mean', 'max')


def unflip(dets: Detections, height: int, width: int, direction: str) -> Detections:
    """Detections of a flipped image mapped back to the ``height`` x ``width`` original."""
    boxes = bbox_flip(torch.from_numpy(dets.bboxes), (height, width), direction).numpy()
    return Detections(boxes, dets.scores, dets.labels, dets.masks.flip(direction))


def unrotate(dets: Detections, height: int, width: int, k: int) -> Detections:
    """Detections of a ``height`` x ``width`` view turned ``k`` quarter turns (``Rot90``) mapped
    back to the unturned image."""
    return Detections(rotate_boxes(dets.bboxes, height, width, -k), dets.scores, dets.labels,
                      dets.masks.turned(-k))


def to_original(dets: Detections, sample: DetDataSample) -> tuple[Detections, tuple[int, int]]:
    """A view's detections in the original image, and that image's height and width.

    A view is the original turned (``rot90`` quarter turns), then flipped; its predictions lie
    in its ``ori_shape``, which the turn swapped, so they are unflipped there and then turned
    back.
    """
    height, width = sample.ori_shape[:2]
    if sample.metainfo.get('flip', False):
        dets = unflip(dets, height, width, sample.flip_direction)
    k = sample.metainfo.get('rot90', 0) % 4
    if k:
        dets = unrotate(dets, height, width, k)
    return dets, rotated_shape(height, width, k)


def vote(crops: Sequence[MaskCrop], vote_thr: float) -> MaskCrop:
    """The pixels held by at least ``vote_thr`` of the masks (all of them counted)."""
    present = [c for c in crops if c.pixels.size]
    if not present:
        return EMPTY_CROP
    y0, x0 = min(c.y0 for c in present), min(c.x0 for c in present)
    y1, x1 = max(c.y1 for c in present), max(c.x1 for c in present)
    count = np.zeros((y1 - y0, x1 - x0), np.int32)
    for c in present:
        count[c.y0 - y0:c.y1 - y0, c.x0 - x0:c.x1 - x0] += c.pixels
    return trim(count >= vote_thr * len(crops) - 1e-9, y0, x0)


def merge_views(views: Sequence[Detections], match_iou: float = 0.5, vote_thr: float = 0.5,
                score: str = 'mean', max_per_img: int | None = None) -> Detections:
    """One image's instances from its augmented views (all in original coordinates); the rules
    are in the module doc. Returns them by decreasing score, at most ``max_per_img``."""
    if score not in SCORE_MODES:
        raise ValueError(f'score must be one of {SCORE_MODES}, got {score!r}')
    dets = Detections.concat(views, *views[0].shape)
    if len(dets) == 0:
        return dets
    view_of = np.repeat(np.arange(len(views)), [len(v) for v in views])
    crops = dets.masks.crops
    area = dets.masks.areas.astype(np.int64)
    ext = dets.masks.extents()
    free = np.ones(len(dets), bool)
    boxes, scores, labels, voted = [], [], [], []
    for i in np.argsort(-dets.scores, kind='stable'):
        if not free[i]:
            continue
        free[i] = False
        group = [int(i)]
        cand = np.flatnonzero(free & (view_of != view_of[i]) & (dets.labels == dets.labels[i])
                              & (ext[:, 0] < ext[i, 2]) & (ext[i, 0] < ext[:, 2])
                              & (ext[:, 1] < ext[i, 3]) & (ext[i, 1] < ext[:, 3]))
        best: dict[int, tuple[float, int]] = {}
        for j in cand:
            inter = crops[i].overlap(crops[j])
            iou = inter / (area[i] + area[j] - inter) if inter else 0.0
            v = int(view_of[j])
            if iou >= match_iou and iou > best.get(v, (-1.0, -1))[0]:
                best[v] = (iou, int(j))
        for _, j in best.values():
            group.append(j)
            free[j] = False
        member_scores = dets.scores[group]
        boxes.append(dets.bboxes[group].mean(axis=0))
        scores.append(member_scores.sum() / len(views) if score == 'mean'
                      else member_scores.max())
        labels.append(dets.labels[i])
        voted.append(vote([crops[j] for j in group], vote_thr))
    order = np.argsort(-np.asarray(scores), kind='stable')[:max_per_img]
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4)[order],
                      np.asarray(scores, np.float32)[order], np.asarray(labels, np.int64)[order],
                      CropMasks.from_crops([voted[k] for k in order], *dets.shape))


@MODELS.register_module()
class MaskTTAModel(DetTTAModel):
    """``DetTTAModel`` for instance segmentation: merges flipped views with their masks.

    ``tta_cfg`` keys (chosen in the config): ``match_iou`` (mask IoU making two views' instances
    one, default 0.5), ``vote_thr`` (share of a group's masks that must hold a pixel, default
    0.5), ``score`` (``'mean'`` over all views or ``'max'``, default ``'mean'``) and
    ``max_per_img`` (default: no cap). Views may be turned by quarter turns (``Rot90``), then
    flipped horizontally, vertically or both (mmdet's ``RandomFlip`` directions), and resized
    (the module predicts in its view's ``ori_shape``); each view's ``DetDataSample`` needs
    ``flip`` and ``flip_direction`` in its metainfo (``PackDetInputs`` ``meta_keys``), and
    ``rot90`` when turned.
    """

    def __init__(self, tta_cfg: dict | None = None, **kwargs) -> None:
        super().__init__(tta_cfg=tta_cfg, **kwargs)
        cfg = dict(match_iou=0.5, vote_thr=0.5, score='mean', max_per_img=None)
        unknown = set(tta_cfg or {}) - set(cfg)
        if unknown:
            raise ValueError(f'MaskTTAModel tta_cfg: unknown keys {sorted(unknown)} (known: '
                             f'{sorted(cfg)})')
        cfg.update(tta_cfg or {})
        if cfg['score'] not in SCORE_MODES:
            raise ValueError(f"MaskTTAModel tta_cfg: score must be one of {SCORE_MODES}, got "
                             f"{cfg['score']!r}")
        self.merge_cfg = cfg

    def _merge_single_sample(self, data_samples: list[DetDataSample]) -> DetDataSample:
        first = data_samples[0]
        views, shapes, as_tensor, device = [], set(), False, 'cpu'
        for sample in data_samples:
            pred = sample.pred_instances
            if 'masks' not in pred:
                raise ValueError('MaskTTAModel merges instance masks; the model predicted none '
                                 '(use DetTTAModel for box-only detectors)')
            if isinstance(pred.masks, Tensor):
                as_tensor, device = True, pred.masks.device
            dets, shape = to_original(Detections.from_instances(pred, sample.ori_shape[:2]),
                                      sample)
            views.append(dets)
            shapes.add(shape)
        if len(shapes) > 1:
            raise ValueError(f'MaskTTAModel: the views of {first.get("img_path")} turn back to '
                             f'different images {sorted(shapes)}')
        height, width = shapes.pop()
        merged = merge_views(views, self.merge_cfg['match_iou'], self.merge_cfg['vote_thr'],
                             self.merge_cfg['score'], self.merge_cfg['max_per_img'])
        # as DetTTAModel: the first view's sample carries the result, now in the original frame
        first.set_metainfo(dict(flip=False, flip_direction=None))
        k = first.metainfo.get('rot90', 0) % 4
        if k:
            meta = dict(rot90=0, ori_shape=(height, width),
                        img_shape=rotated_shape(*first.img_shape[:2], k))
            if k % 2 and 'scale_factor' in first:
                meta['scale_factor'] = tuple(first.scale_factor[::-1])
            first.set_metainfo(meta)
        first.pred_instances = merged.to_instances('tensor' if as_tensor else 'rle', device)
        return first
