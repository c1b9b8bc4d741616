"""Loading the COCO annotations of cell images with masks as ``CropMasks``."""
from __future__ import annotations

from mmdet.datasets.transforms import LoadAnnotations
from mmdet.registry import TRANSFORMS

from cellseg.structures.crop_masks import CropMasks


@TRANSFORMS.register_module()
class LoadCellAnnotations(LoadAnnotations):
    """``LoadAnnotations`` whose masks are ``CropMasks``, decoded from the RLEs at once.

    mmdet decodes each instance's RLE into a full-size array and stacks them (150 cells of a
    512x512 image: 39 MB written twice), and the crop, filter and pack transforms after it copy
    them again. Here all RLEs of an image are decoded together into crops
    (``CropMasks.from_rles``), so loading costs what the cells cover and the transforms after it
    work on the crops. The masks are the same pixels: ``.masks`` gives the array
    ``LoadAnnotations`` would.

    Polygons, uncompressed RLEs, or an RLE whose size is not the image's go through
    ``LoadAnnotations`` unchanged (for the whole image).
    """

    def _load_masks(self, results: dict) -> None:
        h, w = results['ori_shape']
        anns = self._process_masks(results)
        if not self.poly2mask or not all(
                isinstance(a, dict) and isinstance(a.get('counts'), (str, bytes))
                and [int(v) for v in a.get('size', ())] == [h, w] for a in anns):
            return super()._load_masks(results)
        results['gt_masks'] = CropMasks.from_rles(anns, h, w)
