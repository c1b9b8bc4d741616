from cellseg.models.detectors.tiled_mask_rcnn import TiledMaskRCNN

__all__ = ['TiledMaskRCNN']
