from cellseg.models.roi_heads.chunked_roi_head import ChunkedRoIHead
from cellseg.models.roi_heads.mask_heads import ChunkedMaskHead

__all__ = ['ChunkedMaskHead', 'ChunkedRoIHead']
