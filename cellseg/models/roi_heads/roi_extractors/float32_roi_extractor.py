"""An RoI extractor that samples float32 features whatever precision the network ran in."""
from __future__ import annotations

from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class Float32RoIExtractor(SingleRoIExtractor):
    """``SingleRoIExtractor`` fed float32 features and RoIs.

    Under a bfloat16 autocast on the CPU (``CpuAmpOptimWrapper``) the FPN's features are
    bfloat16; mmcv's CPU RoIAlign takes float32 only, and mmdet's extractor casts the RoIs to the
    features' type, which in bfloat16 would round box corners of a 1000 px image by up to 4 px.
    Here both are float32 before mmdet's extractor sees them; the heads after it still run
    under the autocast. In float32 the casts return the tensors themselves.

    ``ChunkedRoIHead`` casts the features once per image batch itself; this extractor is for
    mmdet's other RoI heads (``CascadeRoIHead``), which extract per stage. Weights: none.
    """

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor,
                roi_scale_factor: float | None = None) -> Tensor:
        return super().forward(tuple(f.float() for f in feats), rois.float(), roi_scale_factor)
