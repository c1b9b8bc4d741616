"""Image loading for training and testing: the same reader as prediction, for every format."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS

from cellseg.formats.images import PERCENTILES, read_image


@TRANSFORMS.register_module()
class LoadCellImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that reads every image through ``cellseg.formats.images.read_image``.

    TIFF, PNG and JPEG alike: RGBA, RGB or grey, uint8, uint16 or float, with the conversion
    rules of ``cellseg.formats.images`` (alpha dropped, grey replicated, other types than uint8
    normalised by the image's ``percentiles``). ``cellseg.apis.predict`` and the reports read
    images with the same function and the ``percentiles`` of the config saved in the
    checkpoint, so a model sees at prediction exactly the pixels it was trained and tested on.
    (mmcv's decoder, which the parent uses, turns a 16-bit PNG into ``value / 256``: a 12-bit
    camera's image would train nearly black and predict at full contrast.) The output is HxWx3
    uint8 BGR, the channel order mmdet's pipeline expects.

    Files are read from the local file system: ``backend_args`` is accepted for config
    compatibility, and ``color_type``/``imdecode_backend`` other than mmcv's defaults are refused,
    since ``read_image`` fixes both the colour conversion and the decoder.
    """

    def __init__(self, *args, percentiles: tuple[float, float] = PERCENTILES, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        lo, hi = percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f'LoadCellImageFromFile: percentiles must be 0 <= low < high <= '
                             f'100, got {percentiles}')
        self.percentiles = (float(lo), float(hi))
        if self.color_type != 'color' or self.imdecode_backend != 'cv2':
            raise ValueError(
                'LoadCellImageFromFile always converts with cellseg.formats.images.read_image '
                f'(3-channel uint8); got color_type={self.color_type!r}, imdecode_backend='
                f'{self.imdecode_backend!r}')

    def transform(self, results: dict) -> dict | None:
        try:
            img = read_image(results['img_path'], bgr=True, percentiles=self.percentiles)
        except Exception:
            if self.ignore_empty:  # the parent's contract: an unreadable image drops the sample
                return None
            raise
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results
