"""cellseg's one instance-mask type: ``CropMasks``, each mask the pixels of its bounding
rectangle and the rectangle's position.

Large images hold thousands of cells, and a full-image array per mask (mmdet's ``BitmapMasks``,
the tensors of its mask head) grows with the image; a crop grows with the cell. ``CropMasks`` is
a ``BitmapMasks`` (it goes wherever mmdet's transforms, heads and visualizer take one: any
operation not overridden here builds the (N, H, W) array once and gives mmdet's result) that
holds masks as crops from the loader (``LoadCellAnnotations``) through tiling, test-time
augmentation and the painter of label images to the writers. COCO RLEs are the codec at the
edges (annotation files, mmdet's ``CocoMetric``, submissions): ``from_rles`` and ``to_rles``,
on ``cellseg.structures.rle``. ``MaskCrop`` is one mask of a ``CropMasks``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from mmdet.structures.bbox import HorizontalBoxes, get_box_type
from mmdet.structures.mask import BitmapMasks
from torch import Tensor

from cellseg.structures.rle import encode_windows, foreground_runs, rle_string_counts


@dataclass(frozen=True)
class MaskCrop:
    """One instance mask as the bool pixels of a rectangle and the rectangle's top-left corner in
    image coordinates. An empty mask has a 0x0 ``pixels`` array."""

    pixels: np.ndarray
    y0: int
    x0: int

    @property
    def y1(self) -> int:
        return self.y0 + self.pixels.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.pixels.shape[1]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.pixels))

    def shifted(self, dy: int, dx: int) -> MaskCrop:
        return MaskCrop(self.pixels, self.y0 + dy, self.x0 + dx) if self.pixels.size else self

    def overlap(self, other: MaskCrop) -> int:
        """Pixels in both masks."""
        y0, y1 = max(self.y0, other.y0), min(self.y1, other.y1)
        x0, x1 = max(self.x0, other.x0), min(self.x1, other.x1)
        if y0 >= y1 or x0 >= x1:
            return 0
        pa = self.pixels[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0]
        pb = other.pixels[y0 - other.y0:y1 - other.y0, x0 - other.x0:x1 - other.x0]
        return int(np.count_nonzero(pa & pb))

    def flipped(self, height: int, width: int, direction: str) -> MaskCrop:
        """This mask in its ``height`` x ``width`` image flipped ``horizontal``ly,
        ``vertical``ly or both (``diagonal``), as mmdet's ``RandomFlip`` flips images."""
        if direction not in ('horizontal', 'vertical', 'diagonal'):
            raise ValueError(f'unknown flip direction {direction!r}')
        if not self.pixels.size:
            return self
        y0, x0, pixels = self.y0, self.x0, self.pixels
        if direction in ('horizontal', 'diagonal'):
            pixels, x0 = pixels[:, ::-1], width - self.x1
        if direction in ('vertical', 'diagonal'):
            pixels, y0 = pixels[::-1], height - self.y1
        return MaskCrop(pixels.copy(), y0, x0)

    def turned(self, height: int, width: int, k: int) -> MaskCrop:
        """This mask of a ``height`` x ``width`` image, in that image turned ``k`` quarter turns
        counter-clockwise as ``np.rot90(image, k)`` turns it (a pixel permutation).

        ``k`` counts modulo 4, so ``-k`` undoes ``k``: a mask of the turned image goes back with
        ``.turned(*rotated_shape(height, width, k), -k)``."""
        k %= 4
        if not self.pixels.size or k == 0:
            return self
        if k == 1:  # pixel (y, x) -> (width - 1 - x, y)
            y0, x0 = width - self.x1, self.y0
        elif k == 2:  # (y, x) -> (height - 1 - y, width - 1 - x)
            y0, x0 = height - self.y1, width - self.x1
        else:  # (y, x) -> (x, height - 1 - y)
            y0, x0 = self.x0, height - self.y1
        return MaskCrop(np.ascontiguousarray(np.rot90(self.pixels, k)), y0, x0)


EMPTY_CROP = MaskCrop(np.zeros((0, 0), bool), 0, 0)


def trim(pixels: np.ndarray, y0: int = 0, x0: int = 0) -> MaskCrop:
    """The crop of the non-zero extent of ``pixels`` (which start at ``y0, x0``)."""
    rows = np.flatnonzero(pixels.any(axis=1))
    if rows.size == 0:
        return EMPTY_CROP
    cols = np.flatnonzero(pixels.any(axis=0))
    return MaskCrop(np.ascontiguousarray(pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1],
                                         dtype=bool), y0 + int(rows[0]), x0 + int(cols[0]))


def rotated_shape(height: int, width: int, k: int) -> tuple[int, int]:
    """The shape of a ``height`` x ``width`` image turned ``k`` quarter turns."""
    return (width, height) if k % 2 else (height, width)


def is_rle(mask: object) -> bool:
    return isinstance(mask, dict) or isinstance(mask, Mapping)  # dict first: the quick check


def mask_size(mask: np.ndarray | Mapping) -> tuple[int, int]:
    """(height, width) of the image a mask (HxW array or COCO RLE) lies in."""
    if is_rle(mask):
        h, w = mask['size']
        return int(h), int(w)
    shape = np.shape(mask)
    if len(shape) != 2:
        raise ValueError(f'a mask must be 2-D, got shape {shape}')
    return int(shape[0]), int(shape[1])


def _crops_of_rles(rles: Sequence[Mapping]) -> list[MaskCrop]:
    """Crops of the COCO RLEs of one image (compressed, ``counts`` bytes or str, or uncompressed
    lists), decoded together from their runs without any full-image array.

    The work follows the runs (one per mask column, about) and the crops' areas, not the pixels
    one by one: each foreground run, split at column ends, is a contiguous range of its crop
    stored column by column, so ``pixels`` is a transposed (Fortran-ordered) view of one buffer
    shared by the crops."""
    if not rles:
        return []
    height, width = mask_size(rles[0])
    if any([int(v) for v in r['size']] != [height, width] for r in rles):
        raise ValueError('RLEs of one image must share one size')
    counts, owner = rle_string_counts([
        (mask_utils.frPyObjects(dict(r), height, width) if isinstance(r['counts'], list)
         else r)['counts'] for r in rles])
    if counts.size and counts.min() < 0:
        raise ValueError('an RLE holds a negative run length')
    n = len(rles)
    if (np.bincount(owner, weights=counts, minlength=n) != height * width).any():
        raise ValueError(f'an RLE does not cover its {height}x{width} image')
    start, length, inst = foreground_runs(counts, owner, n)
    out = [EMPTY_CROP] * n
    if not inst.size:
        return out
    # column-major runs: split those that go on past a column's last row
    first_col, last_col = start // height, (start + length - 1) // height
    col, row0, row1 = first_col, start % height, (start + length - 1) % height + 1
    pieces = last_col - first_col + 1
    if (pieces > 1).any():
        run = np.repeat(np.arange(inst.size), pieces)
        col = first_col[run] + np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        row0 = np.where(col == first_col[run], row0[run], 0)
        row1 = np.where(col == last_col[run], row1[run], height)
        inst = inst[run]
    per_inst = np.bincount(inst, minlength=n)
    nonempty = np.flatnonzero(per_inst)
    group = (np.cumsum(per_inst) - per_inst)[nonempty]
    y0, y1 = np.minimum.reduceat(row0, group), np.maximum.reduceat(row1, group)
    x0, x1 = np.minimum.reduceat(col, group), np.maximum.reduceat(col, group) + 1
    h, w = y1 - y0, x1 - x0
    size = h * w
    offset = np.cumsum(size) - size
    g = np.repeat(np.arange(nonempty.size), per_inst[nonempty])
    begin = offset[g] + (col - x0[g]) * h[g] + row0 - y0[g]
    # runs of one crop never overlap: +1 at each start, -1 at each end, and a running sum
    change = np.zeros(int(size.sum()) + 1, np.int8)
    change[begin] += 1
    change[begin + row1 - row0] -= 1
    buf = np.cumsum(change[:-1], dtype=np.int8).view(bool)
    for i, o, hk, wk, yk, xk in zip(nonempty.tolist(), offset.tolist(), h.tolist(), w.tolist(),
                                    y0.tolist(), x0.tolist()):
        out[i] = MaskCrop(buf[o:o + hk * wk].reshape(wk, hk).T, yk, xk)
    return out




def mask_frame(masks: object) -> tuple[int, int]:
    """(height, width) of the image of masks in any form ``CropMasks.from_masks`` reads, when
    they say it (an empty list does not: ValueError)."""
    if isinstance(masks, BitmapMasks):
        return masks.height, masks.width
    if isinstance(masks, Tensor) and masks.ndim == 3:
        return int(masks.shape[1]), int(masks.shape[2])
    if isinstance(masks, (list, tuple, np.ndarray)) and len(masks):
        return mask_size(masks[0])
    raise ValueError('the masks do not say the size of their image: give it')


def _crops_of_tensor(masks: Tensor) -> list[MaskCrop]:
    """Crops of an (N, H, W) bool tensor, cut on its device so only the crops travel to the
    CPU."""
    if len(masks) == 0:
        return []
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    h, w = masks.shape[1:]
    y0 = rows.float().argmax(dim=1).tolist()
    y1 = (h - rows.flip(1).float().argmax(dim=1)).tolist()
    x0 = cols.float().argmax(dim=1).tolist()
    x1 = (w - cols.flip(1).float().argmax(dim=1)).tolist()
    nonempty = rows.any(dim=1).tolist()
    return [MaskCrop(masks[i, y0[i]:y1[i], x0[i]:x1[i]].cpu().numpy(), y0[i], x0[i])
            if nonempty[i] else EMPTY_CROP for i in range(len(masks))]


class CropMasks(BitmapMasks):
    """``BitmapMasks`` held as crops (see the module doc): ``crops[i]`` is mask ``i``.

    Build one with ``from_crops``, ``from_rles``, ``from_tensor`` or ``from_masks``;
    ``CropMasks(masks, height, width)`` takes an (N, H, W) array or a list of HxW arrays as
    ``BitmapMasks`` does. ``.masks`` builds the uint8 array on first use (the mask head's target
    cropping does) and keeps it until the masks change.
    """

    def __init__(self, masks, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        self._dense: np.ndarray | None = None
        self.crops: list[MaskCrop] = [trim(np.asarray(m).astype(bool, copy=False))
                                      for m in masks]

    @classmethod
    def from_crops(cls, crops: Sequence[MaskCrop], height: int, width: int) -> CropMasks:
        self = cls.__new__(cls)
        self.height, self.width = int(height), int(width)
        self._dense = None
        self.crops = list(crops)
        return self

    @classmethod
    def from_rles(cls, rles: Sequence[Mapping], height: int | None = None,
                  width: int | None = None) -> CropMasks:
        """The masks of COCO RLEs of one image (compressed, ``counts`` bytes or str, or
        uncompressed lists), decoded together from their runs without a full-image array;
        ``height`` and ``width`` default to the RLEs' size (needed when there are none)."""
        if rles:
            h, w = mask_size(rles[0])
            if height is not None and (h, w) != (int(height), int(width)):
                raise ValueError(f'RLEs of a {h}x{w} image given for a {height}x{width} one')
            height, width = h, w
        elif height is None:
            raise ValueError('no RLEs and no image size')
        return cls.from_crops(_crops_of_rles(list(rles)), height, width)

    @classmethod
    def from_tensor(cls, masks: Tensor) -> CropMasks:
        """The masks of an (N, H, W) bool tensor (as mmdet's mask head returns)."""
        if masks.dtype != torch.bool:
            raise TypeError(f'expected bool masks (mask_thr_binary >= 0), got {masks.dtype}')
        return cls.from_crops(_crops_of_tensor(masks), *masks.shape[1:])

    @classmethod
    def from_masks(cls, masks: object, height: int, width: int) -> CropMasks:
        """Masks in any form mmdet or a file gives them: ``CropMasks``, a bool tensor, COCO RLEs,
        ``BitmapMasks``, HxW arrays (a list may mix RLEs and arrays); all of one ``height`` x
        ``width`` image, or ValueError."""
        if isinstance(masks, CropMasks):
            got = (masks.height, masks.width)
        elif isinstance(masks, Tensor):
            got = tuple(masks.shape[1:]) if masks.ndim == 3 else None
        elif isinstance(masks, BitmapMasks):
            got = (masks.height, masks.width)
        else:
            got = None
            for i, m in enumerate(masks):
                if mask_size(m) != (int(height), int(width)):
                    raise ValueError(f'mask {i} has shape {mask_size(m)}, '
                                     f'expected {(int(height), int(width))}')
        if got is not None and tuple(int(v) for v in got) != (int(height), int(width)):
            raise ValueError(f'masks of a {got[0]}x{got[1]} image given for a '
                             f'{height}x{width} one')
        if isinstance(masks, CropMasks):
            return masks
        if isinstance(masks, Tensor):
            return cls.from_tensor(masks.bool() if masks.numel() == 0 else masks)
        if isinstance(masks, BitmapMasks):
            return cls(masks.masks, height, width)
        masks = list(masks)
        crops = [EMPTY_CROP] * len(masks)
        rle_index = [i for i, m in enumerate(masks) if is_rle(m)]
        for i, crop in zip(rle_index, _crops_of_rles([masks[i] for i in rle_index])):
            crops[i] = crop
        for i, m in enumerate(masks):
            if not is_rle(m):
                crops[i] = trim(np.asarray(m).astype(bool, copy=False))
        return cls.from_crops(crops, height, width)

    # the array, built when mmdet's own operations need it
    @property
    def masks(self) -> np.ndarray:
        if self._dense is None:
            dense = np.zeros((len(self.crops), self.height, self.width), np.uint8)
            for i, c in enumerate(self.crops):
                if c.pixels.size:
                    dense[i, c.y0:c.y1, c.x0:c.x1] = c.pixels
            self._dense = dense
        return self._dense

    @masks.setter
    def masks(self, value: np.ndarray) -> None:
        self.crops = [trim(np.asarray(m).astype(bool, copy=False)) for m in value]
        self._dense = None

    def __len__(self) -> int:
        return len(self.crops)

    def __iter__(self):
        return iter(self.masks)

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _dense=None)  # the crops say it all

    def __getitem__(self, index) -> CropMasks:
        keep = np.atleast_1d(np.arange(len(self.crops))[index])
        return CropMasks.from_crops([self.crops[i] for i in keep.tolist()], self.height,
                                    self.width)

    @classmethod
    def cat(cls, masks: Sequence[CropMasks]) -> CropMasks:
        if len(masks) == 0:
            raise ValueError('masks should not be an empty list.')
        if len({(m.height, m.width) for m in masks}) != 1:
            raise ValueError('masks of one image have one size')
        return cls.from_crops([c for m in masks for c in m.crops], masks[0].height,
                              masks[0].width)

    # operations on the crops, giving what BitmapMasks' give for the same masks
    def crop(self, bbox: np.ndarray) -> CropMasks:
        assert isinstance(bbox, np.ndarray) and bbox.ndim == 1
        bbox = bbox.copy()  # clipped and sized as BitmapMasks.crop does
        bbox[0::2] = np.clip(bbox[0::2], 0, self.width)
        bbox[1::2] = np.clip(bbox[1::2], 0, self.height)
        x1, y1, x2, y2 = (int(v) for v in bbox)
        w, h = max(x2 - x1, 1), max(y2 - y1, 1)
        crops = []
        for c in self.crops:
            top, bottom = max(c.y0, y1), min(c.y1, y1 + h)
            left, right = max(c.x0, x1), min(c.x1, x1 + w)
            crops.append(trim(c.pixels[top - c.y0:bottom - c.y0, left - c.x0:right - c.x0],
                              top - y1, left - x1)
                         if top < bottom and left < right else EMPTY_CROP)
        return CropMasks.from_crops(crops, h, w)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> BitmapMasks:
        # mmcv.impad pads at the bottom and right: the crops keep their places
        if pad_val != 0:
            return super().pad(out_shape, pad_val)
        return CropMasks.from_crops(self.crops, *out_shape[:2])

    def flip(self, flip_direction: str = 'horizontal') -> CropMasks:
        return CropMasks.from_crops(
            [c.flipped(self.height, self.width, flip_direction) for c in self.crops],
            self.height, self.width)

    def turned(self, k: int) -> CropMasks:
        """The masks in their image turned ``k`` quarter turns as ``np.rot90`` turns it."""
        return CropMasks.from_crops([c.turned(self.height, self.width, k) for c in self.crops],
                                    *rotated_shape(self.height, self.width, k))

    def placed(self, dy: int, dx: int, height: int, width: int) -> CropMasks:
        """The masks moved by ``dy, dx`` into a ``height`` x ``width`` image (a tile's masks
        into the whole image's frame, or back); a mask must stay inside it."""
        return CropMasks.from_crops([c.shifted(dy, dx) for c in self.crops], height, width)

    def rescaled_to(self, scale_factor: tuple[float, float], height: int, width: int
                    ) -> CropMasks:
        """The masks of an image resized by ``scale_factor`` (mmdet's ``(w_scale, h_scale)``) on
        its ``height`` x ``width`` original, nearest neighbour, each crop resized on its own."""
        sx, sy = (float(s) for s in scale_factor)
        if sx == 1.0 and sy == 1.0:
            return CropMasks.from_crops(self.crops, height, width)
        crops = []
        for c in self.crops:
            if not c.pixels.size:
                crops.append(c)
                continue
            y0, x0 = int(np.floor(c.y0 / sy)), int(np.floor(c.x0 / sx))
            y1, x1 = min(int(np.ceil(c.y1 / sy)), height), min(int(np.ceil(c.x1 / sx)), width)
            pixels = cv2.resize(c.pixels.astype(np.uint8), (max(x1 - x0, 1), max(y1 - y0, 1)),
                                interpolation=cv2.INTER_NEAREST).astype(bool)
            crops.append(trim(pixels, y0, x0))
        return CropMasks.from_crops(crops, height, width)

    @property
    def areas(self) -> np.ndarray:
        return np.array([c.area for c in self.crops], np.uint64)

    def extents(self) -> np.ndarray:
        """(N, 4) ``y0 x0 y1 x1`` of each crop (zeros for an empty mask)."""
        return np.array([(c.y0, c.x0, c.y1, c.x1) for c in self.crops],
                        np.int64).reshape(-1, 4)

    def get_bboxes(self, dst_type='hbox'):
        """Boxes of the masks as ``HorizontalBoxes.from_instance_masks`` gives them:
        ``x1 y1 x2+1 y2+1`` of the pixels, zeros for an empty mask."""
        _, box_type = get_box_type(dst_type)
        if box_type is not HorizontalBoxes:
            return super().get_bboxes(dst_type)
        boxes = np.array([(c.x0, c.y0, c.x1, c.y1) if c.pixels.size else (0, 0, 0, 0)
                          for c in self.crops], np.float32).reshape(-1, 4)
        return HorizontalBoxes(boxes)

    def to_rles(self) -> list[dict]:
        """Compressed COCO RLEs (the bytes pycocotools' ``encode`` gives), crops of one shape
        encoded together."""
        out: list[dict | None] = [None] * len(self.crops)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(self.crops):
            by_shape.setdefault(c.pixels.shape, []).append(i)
        for shape, index in by_shape.items():
            if 0 in shape:  # an empty crop: a window of one background pixel
                windows = np.zeros((len(index), 1, 1), bool)
                y0 = x0 = np.zeros(len(index))
            else:
                windows = np.stack([self.crops[i].pixels for i in index])
                y0 = np.array([self.crops[i].y0 for i in index])
                x0 = np.array([self.crops[i].x0 for i in index])
            for i, rle in zip(index, encode_windows(windows, y0, x0, self.height, self.width)):
                out[i] = rle
        return out

    def to_bool_tensor(self, device: torch.device | str = 'cpu') -> Tensor:
        """An (N, H, W) bool tensor, as mmdet's mask head returns."""
        out = torch.zeros((len(self.crops), self.height, self.width), dtype=torch.bool)
        for i, c in enumerate(self.crops):
            if c.pixels.size:
                out[i, c.y0:c.y1, c.x0:c.x1] = torch.from_numpy(c.pixels)
        return out.to(device)
