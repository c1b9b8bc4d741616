"""Quarter turns of the image: the test-time views that flips alone do not give."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

from cellseg.structures.crop_masks import rotated_shape

# keys Rot90 would have to turn as well, and does not: it makes views to predict on
_ANNOTATIONS = ('gt_bboxes', 'gt_masks', 'gt_seg_map')


def _turn_matrix(height: int, width: int, k: int) -> np.ndarray:
    """The homography taking points of a ``height`` x ``width`` image to the image turned ``k``
    quarter turns as ``np.rot90`` turns it (``x' = y, y' = width - x`` per turn)."""
    m = np.eye(3, dtype=np.float32)
    for _ in range(k % 4):
        m = np.array([[0, 1, 0], [-1, 0, width], [0, 0, 1]], np.float32) @ m
        height, width = width, height
    return m


@TRANSFORMS.register_module()
class Rot90(BaseTransform):
    """Turns the image ``k`` quarter turns counter-clockwise (``np.rot90``), an exact view.

    mmdet's ``RandomFlip`` only flips, and its ``Rotate`` turns by an angle inside the same
    canvas with interpolation; a quarter turn permutes the pixels and swaps height and width.
    ``Rot90(k=0)`` and ``Rot90(k=1)`` followed by the four ``RandomFlip`` views make the eight
    symmetries of the square (``configs/cell_r50_scratch_dense_tta8.py``), which ``MaskTTAModel``
    undoes: it unflips first, then unturns, so the flip must come after the turn (a ``flip`` already
    in the results is refused).

    The model is to predict in the turned frame, so ``ori_shape`` and ``scale_factor`` turn with
    ``img_shape``; ``rot90`` records the quarter turns so far (modulo 4) for ``PackDetInputs``'
    ``meta_keys``, and ``homography_matrix``, when present, composes the turn. Annotations are
    refused rather than left unturned: this is a test-time view.

    Required keys: ``img``. Modified keys: ``img``, ``img_shape``, ``ori_shape``,
    ``scale_factor``, ``homography_matrix``. Added keys: ``rot90``.
    """

    def __init__(self, k: int = 1) -> None:
        if not isinstance(k, int) or not 0 <= k <= 3:
            raise ValueError(f'Rot90: k must be 0, 1, 2 or 3 quarter turns, got {k!r}')
        self.k = k

    def transform(self, results: dict) -> dict:
        if 'flip' in results:
            raise ValueError('Rot90 must come before RandomFlip: MaskTTAModel undoes the flip '
                             'in the turned image, then the turn')
        given = [key for key in _ANNOTATIONS if results.get(key) is not None]
        if given:
            raise ValueError(f'Rot90 turns test images only; the results hold {given}')
        height, width = results['img'].shape[:2]
        results['img'] = np.ascontiguousarray(np.rot90(results['img'], self.k))
        results['img_shape'] = results['img'].shape[:2]
        if self.k % 2:
            if 'ori_shape' in results:
                results['ori_shape'] = rotated_shape(*results['ori_shape'][:2], self.k)
            if 'scale_factor' in results:
                w_scale, h_scale = results['scale_factor']
                results['scale_factor'] = (h_scale, w_scale)
        if results.get('homography_matrix') is not None:
            results['homography_matrix'] = (_turn_matrix(height, width, self.k)
                                            @ results['homography_matrix']).astype(np.float32)
        results['rot90'] = (results.get('rot90', 0) + self.k) % 4
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k})'
