"""Instance masks kept as their pixels' coordinates until an array is needed.

A training image of 150 cells holds 150 full-size masks, mmdet's ``BitmapMasks``: 39 MB at
512x512, and every transform that touches them (crop, filter, pack) copies all of it, twice
(``BitmapMasks.__init__`` stacks what it is given). Yet a cell covers a few hundred pixels.
``SparseBitmapMasks`` stores those pixels (instance, row, column); the operations of the
training pipeline (index, crop, pad, flip, areas, boxes) work on the coordinates, pickling
between loader workers and the main process sends the coordinates, and the (N, H, W) array is
built on first use of ``.masks`` (by the mask head's target cropping), once.

Everything else is ``BitmapMasks``: any method not overridden here builds the array and returns
mmdet's ``BitmapMasks``, so each operation gives what mmdet's gives for the same masks.
"""
from __future__ import annotations

import numpy as np
from mmdet.structures.bbox import HorizontalBoxes, get_box_type
from mmdet.structures.mask import BitmapMasks


class SparseBitmapMasks(BitmapMasks):
    """``BitmapMasks`` stored as foreground pixel coordinates (see the module doc).

    Build one with ``from_pixels``; ``SparseBitmapMasks(masks, height, width)`` takes an array or
    list as ``BitmapMasks`` does (as mmdet's ``cat`` calls it).
    """

    def __init__(self, masks, height: int, width: int) -> None:
        self._pixels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._num = 0
        super().__init__(masks, height, width)

    @classmethod
    def from_pixels(cls, inst: np.ndarray, ys: np.ndarray, xs: np.ndarray, num: int,
                    height: int, width: int) -> SparseBitmapMasks:
        """``num`` masks of ``height`` x ``width`` whose foreground pixels are
        ``(inst[j], ys[j], xs[j])``, sorted by instance."""
        self = cls.__new__(cls)
        self.height, self.width = int(height), int(width)
        self._num = int(num)
        self._dense = None
        self._pixels = (np.asarray(inst, np.int32), np.asarray(ys, np.int32),
                        np.asarray(xs, np.int32))
        return self

    # storage: pixels, or the array once built (then the pixels are dropped: the array may change)
    @property
    def masks(self) -> np.ndarray:
        if self._dense is None:
            inst, ys, xs = self._pixels
            dense = np.zeros((self._num, self.height, self.width), np.uint8)
            dense[inst, ys, xs] = 1
            self._dense, self._pixels = dense, None
        return self._dense

    @masks.setter
    def masks(self, value: np.ndarray) -> None:
        self._dense, self._pixels = value, None
        self._num = len(value)

    def __len__(self) -> int:
        return self._num if self._pixels is not None else len(self._dense)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        dense = state.get('_dense')
        if dense is not None and dense.dtype == np.uint8 and dense.max(initial=0) <= 1:
            state['_pixels'] = tuple(v.astype(np.int32) for v in np.nonzero(dense))
            state['_dense'], state['_num'] = None, len(dense)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # operations on the pixels
    def __getitem__(self, index) -> BitmapMasks:
        if self._pixels is None:
            return super().__getitem__(index)
        keep = np.atleast_1d(np.arange(self._num)[index])
        inst, ys, xs = self._pixels
        if np.array_equal(keep, np.arange(self._num)):
            return SparseBitmapMasks.from_pixels(inst, ys, xs, self._num, self.height, self.width)
        per = np.bincount(inst, minlength=self._num)
        first = np.cumsum(per) - per
        sizes = per[keep]
        take = np.repeat(first[keep], sizes) + np.arange(sizes.sum()) - np.repeat(
            np.cumsum(sizes) - sizes, sizes)
        return SparseBitmapMasks.from_pixels(np.repeat(np.arange(keep.size), sizes), ys[take],
                                             xs[take], keep.size, self.height, self.width)

    def crop(self, bbox: np.ndarray) -> BitmapMasks:
        if self._pixels is None:
            return super().crop(bbox)
        assert isinstance(bbox, np.ndarray) and bbox.ndim == 1
        bbox = bbox.copy()  # clipped and sized as BitmapMasks.crop does
        bbox[0::2] = np.clip(bbox[0::2], 0, self.width)
        bbox[1::2] = np.clip(bbox[1::2], 0, self.height)
        x1, y1, x2, y2 = (int(v) for v in bbox)
        w, h = max(x2 - x1, 1), max(y2 - y1, 1)
        inst, ys, xs = self._pixels
        inside = (ys >= y1) & (ys < y1 + h) & (xs >= x1) & (xs < x1 + w)
        return SparseBitmapMasks.from_pixels(inst[inside], ys[inside] - y1, xs[inside] - x1,
                                             self._num, h, w)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> BitmapMasks:
        # mmcv.impad pads at the bottom and right: the pixels keep their coordinates
        if self._pixels is None or pad_val != 0:
            return super().pad(out_shape, pad_val)
        return SparseBitmapMasks.from_pixels(*self._pixels, self._num, *out_shape[:2])

    def flip(self, flip_direction: str = 'horizontal') -> BitmapMasks:
        if self._pixels is None or flip_direction not in ('horizontal', 'vertical', 'diagonal'):
            return super().flip(flip_direction)
        inst, ys, xs = self._pixels
        if flip_direction in ('vertical', 'diagonal'):
            ys = self.height - 1 - ys
        if flip_direction in ('horizontal', 'diagonal'):
            xs = self.width - 1 - xs
        return SparseBitmapMasks.from_pixels(inst, ys, xs, self._num, self.height, self.width)

    @property
    def areas(self) -> np.ndarray:
        if self._pixels is None:
            return super().areas
        return np.bincount(self._pixels[0], minlength=self._num).astype(np.uint64)

    def get_bboxes(self, dst_type='hbox'):
        """Boxes of the masks as ``HorizontalBoxes.from_instance_masks`` gives them:
        ``x1 y1 x2+1 y2+1`` of the pixels, zeros for an empty mask."""
        _, box_type = get_box_type(dst_type)
        if self._pixels is None or box_type is not HorizontalBoxes:
            return super().get_bboxes(dst_type)
        inst, ys, xs = self._pixels
        boxes = np.zeros((self._num, 4), np.float32)
        if inst.size:
            present = np.unique(inst)
            cut = np.flatnonzero(np.diff(inst)) + 1
            starts = np.concatenate([[0], cut])
            boxes[present, 0] = np.minimum.reduceat(xs, starts)
            boxes[present, 1] = np.minimum.reduceat(ys, starts)
            boxes[present, 2] = np.maximum.reduceat(xs, starts) + 1
            boxes[present, 3] = np.maximum.reduceat(ys, starts) + 1
        return HorizontalBoxes(boxes)
