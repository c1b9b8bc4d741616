"""A Mask R-CNN mask head whose predicted masks never all exist at full size at once."""
from __future__ import annotations

import numpy as np
import torch
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from torch import Tensor

from cellseg.models.roi_heads.mask_heads.mask_paste import DEFAULT_CHUNK_PIXELS, paste_masks_to_rles


@MODELS.register_module()
class ChunkedMaskHead(FCNMaskHead):
    """``FCNMaskHead`` that predicts masks as COCO RLEs, pasted and encoded a chunk at a time.

    mmdet's head pastes all N detections into an (N, H, W) tensor (1000 detections of a
    2500x2000 image: 5 GB), which ``CocoMetric`` then encodes one full-size mask at a time. This
    head pastes each detection into a window around its box, ``paste_chunk_pixels`` window pixels
    at a time, and encodes every chunk at once (``mask_paste.paste_masks_to_rles``):
    the same RLEs, bytes for bytes, for any ``mask_thr_binary`` in [0, 1] (compared at 0.3, 0.5
    and 0.9 in tests/test_speed_equivalences.py).

    On the CPU, the upsampling deconvolution and the logits run on channels-last tensors: fed
    mmdet's NCHW tensors, PyTorch's oneDNN deconvolution converts layouts around the computation,
    and the conversions cost more than the computation (``benchmarks/speed.py --only predict``
    times both heads). The logits may then differ from ``FCNMaskHead``'s in the last bits (the
    1x1 convolution sums its channels in another order); what that does to the outputs is in
    docs/speed.md.

    Layers, losses, weights and checkpoints are ``FCNMaskHead``'s, so a config switches with
    ``mask_head=dict(type='ChunkedMaskHead')``. ``pred_instances.masks`` is then a list of N
    pycocotools RLE dicts, the form ``TiledMaskRCNN`` already gives for tiled images:
    ``CocoMetric`` (and the submission writer after it) and ``cellseg.apis.predict`` take it.
    mmdet's ``DetLocalVisualizer`` does not: ``CellVisualizationHook``
    (``cellseg/engine/hooks/cell_visualization_hook.py``) decodes the masks it draws. A negative
    ``mask_thr_binary`` (soft masks, for debugging) falls back to ``FCNMaskHead``'s uint8
    tensor. ``ChunkedRoIHead`` bounds what comes before the paste: the RoI features and the
    layers' outputs.
    """

    def __init__(self, *args, paste_chunk_pixels: int = DEFAULT_CHUNK_PIXELS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if paste_chunk_pixels < 1:
            raise ValueError(f'paste_chunk_pixels must be positive, got {paste_chunk_pixels}')
        self.paste_chunk_pixels = int(paste_chunk_pixels)

    def forward(self, x: Tensor) -> Tensor:
        """``FCNMaskHead.forward``, with the deconvolution fed channels-last on the CPU."""
        if x.device.type != 'cpu' or self.upsample_method != 'deconv':
            return super().forward(x)
        for conv in self.convs:
            x = conv(x)
        x = self.relu(self.upsample(x.contiguous(memory_format=torch.channels_last)))
        return self.conv_logits(x)

    def _predict_by_feat_single(self, mask_preds: Tensor, bboxes: Tensor, labels: Tensor,
                                img_meta: dict, rcnn_test_cfg: ConfigDict,
                                rescale: bool = False,
                                activate_map: bool = False) -> list[dict] | Tensor:
        threshold = rcnn_test_cfg.mask_thr_binary
        if threshold < 0:
            return super()._predict_by_feat_single(mask_preds, bboxes, labels, img_meta,
                                                   rcnn_test_cfg, rescale, activate_map)
        # the parent's preparation, step for step: probabilities, boxes in place (the caller's
        # results.bboxes are rescaled through them), the output size, each box's class map
        scale_factor = bboxes.new_tensor(img_meta['scale_factor']).repeat((1, 2))
        img_h, img_w = img_meta['ori_shape'][:2]
        mask_preds = mask_preds.sigmoid() if not activate_map else bboxes.new_tensor(mask_preds)
        if rescale:
            bboxes /= scale_factor
        else:
            w_scale, h_scale = scale_factor[0, 0], scale_factor[0, 1]
            img_h = np.round(img_h * h_scale.item()).astype(np.int32)
            img_w = np.round(img_w * w_scale.item()).astype(np.int32)
        if not self.class_agnostic:
            mask_preds = mask_preds[range(len(mask_preds)), labels][:, None]
        return paste_masks_to_rles(mask_preds, bboxes, img_h, img_w, threshold,
                                   self.paste_chunk_pixels)
