"""Image loading for the HW3 TIFFs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS

from cellseg.formats.hw3 import TIFF_SUFFIXES, read_image


@TRANSFORMS.register_module()
class LoadCellImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that also reads HW3 TIFFs: RGBA, RGB or grey, uint8 or uint16.

    TIFFs go through ``cellseg.formats.hw3.read_image`` (alpha dropped, grey replicated, 16-bit rescaled
    per image) and come out as HxWx3 uint8 BGR, which mmdet's pipeline expects. Other formats
    (PNG, JPEG) use the parent's decoder with ``color_type='color'``, which also yields 3-channel
    BGR.
    """

    def transform(self, results: dict) -> dict | None:
        filename = results['img_path']
        if Path(filename).suffix.lower() not in TIFF_SUFFIXES:
            return super().transform(results)
        img = read_image(filename, bgr=True)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results
