"""Model parts (importing this registers them)."""
from cellseg.models.dense_heads import Float32ProposalRPNHead
from cellseg.models.detectors import TiledMaskRCNN
from cellseg.models.roi_heads import ChunkedMaskHead, ChunkedRoIHead, Float32RoIExtractor
from cellseg.models.test_time_augs import MaskTTAModel

__all__ = ['ChunkedMaskHead', 'ChunkedRoIHead', 'Float32ProposalRPNHead', 'Float32RoIExtractor',
           'MaskTTAModel', 'TiledMaskRCNN']
