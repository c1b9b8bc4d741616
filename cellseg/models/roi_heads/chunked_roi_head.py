"""A Mask R-CNN RoI head that predicts a bounded number of RoIs at a time."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmengine.config import ConfigDict
from torch import Tensor

from cellseg.models.detection_budget import area_budget, keep_budget


@MODELS.register_module()
class ChunkedRoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose box and mask branches run a bounded number of RoIs at a time
    outside training: ``bbox_chunk`` and ``mask_chunk``.

    mmdet extracts the features of every RoI of a batch before its head sees one: at 2000
    proposals per image the box branch's RoI features are 2000 x 256 x 7 x 7 floats (100 MB per
    image), and at 1000 detections the mask branch's are 1000 x 256 x 14 x 14 (200 MB per image),
    whose deconvolution gives 0.8 GB more. A batch of 4 tiles (``TiledMaskRCNN``) holds 4 times
    that at once. Here each chunk is extracted, run through its head and dropped, so the memory
    of these branches no longer grows with the detections. A mask RoI costs about 20 times what
    a box RoI costs (256 x 14 x 14 features and their deconvolution against 256 x 7 x 7), hence
    the two sizes: 64 mask RoIs and 512 box RoIs at a time. What the chunks cost in time against
    one pass is measured in docs/speed.md.

    Each RoI's features and outputs depend on that RoI only (RoIAlign samples per RoI; the heads
    have no normalisation across RoIs), so the chunks give the same scores, boxes and masks.
    Prediction also applies ``cellseg.models.detection_budget``: ``max_per_img`` by the image's
    area (``max_per_img_per_mpx``) and ``max_per_class``, before the mask head, so masks are
    computed for kept detections only. Under a mixed-precision autocast the RoIs are extracted
    from float32 features (mmcv's CPU RoIAlign takes float32 only) and the branches' outputs
    are float32 for mmcv's NMS and the paste; the layers themselves run in the autocast's type.

    Training keeps mmdet's one pass: the sampler bounds the RoIs there, and the mask branch
    may reuse the box branch's features. Weights and checkpoints are ``StandardRoIHead``'s; a
    config switches with ``roi_head=dict(type='ChunkedRoIHead')``.

    ``mask_pos_per_img`` (training only) bounds the positive RoIs the mask branch learns on per
    image, drawn at random among the sampler's positives; the box branch still sees all of them.
    The mask head runs four 3x3 convolutions of 256 channels on every RoI it is given, so its
    cost grows with the positives, while cells are small and alike: a few RoIs per cell teach it
    as much as many. ``None`` keeps mmdet's behaviour (every positive).
    """

    def __init__(self, *args, bbox_chunk: int = 512, mask_chunk: int = 64,
                 mask_pos_per_img: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if bbox_chunk < 1 or mask_chunk < 1:
            raise ValueError(f'bbox_chunk and mask_chunk must be positive, got {bbox_chunk}, '
                             f'{mask_chunk}')
        if mask_pos_per_img is not None and mask_pos_per_img < 1:
            raise ValueError(f'mask_pos_per_img must be positive or None, got {mask_pos_per_img}')
        self.bbox_chunk, self.mask_chunk = int(bbox_chunk), int(mask_chunk)
        self.mask_pos_per_img = None if mask_pos_per_img is None else int(mask_pos_per_img)

    def loss(self, x: tuple[Tensor, ...], rpn_results_list: list,
             batch_data_samples: list) -> dict:
        # Under a bfloat16 autocast on the CPU (CpuAmpOptimWrapper) the FPN's features are
        # bfloat16, and mmcv's CPU RoIAlign takes float32 only: the RoIs are extracted from
        # float32 copies (the heads' layers still run under the autocast). In float32 the casts
        # return the features themselves.
        return super().loss(tuple(f.float() for f in x), rpn_results_list, batch_data_samples)

    def mask_loss(self, x: tuple[Tensor, ...], sampling_results: list, bbox_feats: Tensor,
                  batch_gt_instances: list) -> dict:
        if self.mask_pos_per_img is None:
            return super().mask_loss(x, sampling_results, bbox_feats, batch_gt_instances)
        # The mask branch reads only these fields of a sampling result (FCNMaskHead's targets
        # and loss, and StandardRoIHead.mask_loss); the box branch has already used the whole.
        kept = []
        for res in sampling_results:
            n = len(res.pos_priors)
            keep = (torch.randperm(n, device=res.pos_priors.device)[:self.mask_pos_per_img]
                    if n > self.mask_pos_per_img else slice(None))
            kept.append(SimpleNamespace(
                pos_priors=res.pos_priors[keep], pos_gt_labels=res.pos_gt_labels[keep],
                pos_assigned_gt_inds=res.pos_assigned_gt_inds[keep], neg_priors=res.neg_priors))
        # Features are extracted anew for the kept RoIs (a shared extractor would index the box
        # branch's features by position, which the subset no longer matches).
        pos_rois = bbox2roi([res.pos_priors for res in kept])
        mask_results = self._mask_forward(x, pos_rois)
        mask_results.update(loss_mask=self.mask_head.loss_and_target(
            mask_preds=mask_results['mask_preds'], sampling_results=kept,
            batch_gt_instances=batch_gt_instances, rcnn_train_cfg=self.train_cfg)['loss_mask'])
        return mask_results

    def predict(self, x: tuple[Tensor, ...], rpn_results_list: list, batch_data_samples: list,
                rescale: bool = False) -> list:
        # float32 features for RoIAlign whatever the autocast made them (no copy in float32)
        return super().predict(tuple(f.float() for f in x), rpn_results_list,
                               batch_data_samples, rescale)

    def predict_bbox(self, x: tuple[Tensor, ...], batch_img_metas: list[dict],
                     rpn_results_list: list, rcnn_test_cfg: ConfigDict | None,
                     rescale: bool = False) -> list:
        if rcnn_test_cfg is None:  # mmdet's "scores per class" mode: nothing is cut
            return super().predict_bbox(x, batch_img_metas, rpn_results_list, rcnn_test_cfg,
                                        rescale)
        shapes = [m['ori_shape'] for m in batch_img_metas]
        cfg = rcnn_test_cfg
        if rcnn_test_cfg.get('max_per_img_per_mpx') is not None:
            # mmdet's NMS takes one max_per_img for the batch: the largest image's, then each
            # image is cut to its own
            cfg = ConfigDict(rcnn_test_cfg.to_dict())
            cfg.max_per_img = max(area_budget(rcnn_test_cfg, 'max_per_img', s) for s in shapes)
        results = super().predict_bbox(x, batch_img_metas, rpn_results_list, cfg, rescale)
        return [keep_budget(r, rcnn_test_cfg, s) for r, s in zip(results, shapes, strict=True)]

    def _bbox_forward(self, x: tuple[Tensor, ...], rois: Tensor) -> dict:
        if self.training:
            return super()._bbox_forward(x, rois)
        parts = [super(ChunkedRoIHead, self)._bbox_forward(x, part)
                 for part in rois.split(self.bbox_chunk)]
        # the features are not returned: holding them is what the chunks avoid, and prediction
        # reads only the scores and box deltas
        return dict(cls_score=torch.cat([p['cls_score'].float() for p in parts]),
                    bbox_pred=torch.cat([p['bbox_pred'].float() for p in parts]),
                    bbox_feats=None)

    def _mask_forward(self, x: tuple[Tensor, ...], rois: Tensor | None = None,
                      pos_inds: Tensor | None = None, bbox_feats: Tensor | None = None) -> dict:
        if self.training or rois is None:
            return super()._mask_forward(x, rois, pos_inds, bbox_feats)
        preds = [super(ChunkedRoIHead, self)._mask_forward(x, part)['mask_preds'].float()
                 for part in rois.split(self.mask_chunk)]
        return dict(mask_preds=torch.cat(preds), mask_feats=None)
