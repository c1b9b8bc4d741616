"""An RPN head whose proposals are computed in float32 whatever precision its layers ran in, in
numbers that follow each image's area."""
from __future__ import annotations

from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from cellseg.models.detection_budget import budgeted_cfg


@MODELS.register_module()
class Float32ProposalRPNHead(RPNHead):
    """``RPNHead`` that decodes and suppresses its proposals in float32.

    Under a bfloat16 autocast on the CPU (``CpuAmpOptimWrapper``) the head's convolutions give
    bfloat16 scores, and mmcv's CPU ``nms`` takes float32 only ("expected scalar type Float but
    found BFloat16"). The scores and deltas are cast before mmdet's proposal step; in float32 (every
    test, and training without mixed precision) the casts return the tensors themselves. Layers,
    losses and weights are ``RPNHead``'s.

    ``nms_pre`` (per FPN level) and ``max_per_img`` may follow each image's area
    (``nms_pre_per_mpx``, ``max_per_img_per_mpx``; ``cellseg.models.detection_budget``): the
    proposals a 256 px patch needs are a fraction of a 2500 px image's.
    """

    def predict_by_feat(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], *args,
                        **kwargs) -> list[InstanceData]:
        return super().predict_by_feat([s.float() for s in cls_scores],
                                       [b.float() for b in bbox_preds], *args, **kwargs)

    def _predict_by_feat_single(self, cls_score_list: list[Tensor], bbox_pred_list: list[Tensor],
                                score_factor_list: list[Tensor], mlvl_priors: list[Tensor],
                                img_meta: dict, cfg: ConfigDict, rescale: bool = False,
                                with_nms: bool = True) -> InstanceData:
        cfg = budgeted_cfg(self.test_cfg if cfg is None else cfg, ('nms_pre', 'max_per_img'),
                           img_meta['ori_shape'])
        return super()._predict_by_feat_single(cls_score_list, bbox_pred_list,
                                               score_factor_list, mlvl_priors, img_meta, cfg,
                                               rescale, with_nms)
