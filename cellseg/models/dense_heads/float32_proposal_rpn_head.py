"""An RPN head whose proposals are computed in float32 whatever precision its layers ran in."""
from __future__ import annotations

from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor


@MODELS.register_module()
class Float32ProposalRPNHead(RPNHead):
    """``RPNHead`` that decodes and suppresses its proposals in float32.

    Under a bfloat16 autocast on the CPU (``CpuAmpOptimWrapper``) the head's convolutions give
    bfloat16 scores, and mmcv's CPU ``nms`` takes float32 only ("expected scalar type Float but
    found BFloat16"). The scores and deltas are cast before mmdet's proposal step; in float32 (every
    test, and training without mixed precision) the casts return the tensors themselves. Layers,
    losses and weights are ``RPNHead``'s.
    """

    def predict_by_feat(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], *args,
                        **kwargs) -> list[InstanceData]:
        return super().predict_by_feat([s.float() for s in cls_scores],
                                       [b.float() for b in bbox_preds], *args, **kwargs)
