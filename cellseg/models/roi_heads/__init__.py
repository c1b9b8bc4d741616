from cellseg.models.roi_heads.chunked_roi_head import ChunkedRoIHead
from cellseg.models.roi_heads.mask_heads import ChunkedMaskHead
from cellseg.models.roi_heads.roi_extractors import Float32RoIExtractor

__all__ = ['ChunkedMaskHead', 'ChunkedRoIHead', 'Float32RoIExtractor']
