from cellseg.models.roi_heads.mask_heads.chunked_mask_head import ChunkedMaskHead

__all__ = ['ChunkedMaskHead']
