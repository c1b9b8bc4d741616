"""Instance masks as crops: the pixels of each mask's bounding rectangle and its position.

Large images hold thousands of cells, and a full-image array per detection (what mmdet's mask
head and ``encode_mask_results`` build) grows with the image. A ``MaskCrop`` grows with the cell:
tiled inference, mask TTA, label images and reports hold masks this way and convert to COCO RLEs
(``cellseg.structures.rle``, the one codec) or to mmdet's tensors only at their edges.
``Detections`` holds one image's boxes, scores, labels and crops.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from mmengine.structures import InstanceData
from torch import Tensor

from cellseg.structures.rle import encode_windows, rle_string_counts


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

    def shifted(self, dy: int, dx: int) -> MaskCrop:
        return MaskCrop(self.pixels, self.y0 + dy, self.x0 + dx)


EMPTY_CROP = MaskCrop(np.zeros((0, 0), bool), 0, 0)


def trim(pixels: np.ndarray, y0: int = 0, x0: int = 0) -> MaskCrop:
    """The crop of the non-zero extent of ``pixels`` (which start at ``y0, x0``)."""
    rows = np.flatnonzero(pixels.any(axis=1))
    if rows.size == 0:
        return EMPTY_CROP
    cols = np.flatnonzero(pixels.any(axis=0))
    return MaskCrop(np.ascontiguousarray(pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1],
                                         dtype=bool), y0 + int(rows[0]), x0 + int(cols[0]))


def crops_from_tensor(masks: Tensor) -> list[MaskCrop]:
    """Crops of an (N, H, W) bool mask tensor (as mmdet's mask head returns), cut on its device so
    only the crops travel to the CPU."""
    if masks.dtype != torch.bool:
        raise TypeError(f'expected bool masks (mask_thr_binary >= 0), got {masks.dtype}')
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


def crops_of_rles(rles: Sequence[Mapping]) -> list[MaskCrop]:
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
    per_string = np.bincount(owner, minlength=n)
    first = np.cumsum(per_string) - per_string
    index = np.arange(counts.size) - np.repeat(first, per_string)  # place in its string
    start = np.cumsum(counts) - counts
    start -= np.repeat(start[first[per_string > 0]], per_string[per_string > 0])
    fg = (index % 2 == 1) & (counts > 0)  # odd places are foreground runs
    start, length, inst = start[fg], counts[fg], owner[fg]
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


def crop_from_rle(rle: Mapping) -> MaskCrop:
    """The crop of one COCO RLE (``crops_of_rles`` of a list of one)."""
    return crops_of_rles([rle])[0]


def crops_from_masks(masks: Tensor | Sequence[dict]) -> list[MaskCrop]:
    """Crops of predicted masks given as mmdet's tensor or as a list of COCO RLEs."""
    if isinstance(masks, Tensor):
        return crops_from_tensor(masks)
    return crops_of_rles(list(masks))


def crops_to_rles(crops: Sequence[MaskCrop], height: int, width: int) -> list[dict]:
    """Compressed COCO RLEs of crops in a ``height`` x ``width`` image, crops of one shape
    encoded together."""
    out: list[dict | None] = [None] * len(crops)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(crops):
        by_shape.setdefault(c.pixels.shape, []).append(i)
    for shape, index in by_shape.items():
        if 0 in shape:  # an empty crop: a window of one background pixel
            rles = encode_windows(np.zeros((len(index), 1, 1), bool), np.zeros(len(index)),
                                  np.zeros(len(index)), height, width)
        else:
            rles = encode_windows(np.stack([crops[i].pixels for i in index]),
                                  np.array([crops[i].y0 for i in index]),
                                  np.array([crops[i].x0 for i in index]), height, width)
        for i, rle in zip(index, rles):
            out[i] = rle
    return out


def crops_to_tensor(crops: Sequence[MaskCrop], height: int, width: int,
                    device: torch.device | str = 'cpu') -> Tensor:
    """An (N, H, W) bool tensor of the crops, as mmdet's mask head returns."""
    out = torch.zeros((len(crops), height, width), dtype=torch.bool)
    for i, c in enumerate(crops):
        if c.pixels.size:
            out[i, c.y0:c.y1, c.x0:c.x1] = torch.from_numpy(c.pixels)
    return out.to(device)


def intersection(a: MaskCrop, b: MaskCrop) -> int:
    """Pixels in both masks."""
    y0, y1 = max(a.y0, b.y0), min(a.y1, b.y1)
    x0, x1 = max(a.x0, b.x0), min(a.x1, b.x1)
    if y0 >= y1 or x0 >= x1:
        return 0
    pa = a.pixels[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
    pb = b.pixels[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]
    return int(np.count_nonzero(pa & pb))


def areas(crops: Sequence[MaskCrop]) -> np.ndarray:
    return np.array([np.count_nonzero(c.pixels) for c in crops], np.int64)


def flip_crop(crop: MaskCrop, height: int, width: int, direction: str) -> MaskCrop:
    """``crop`` in the image flipped ``horizontal``ly, ``vertical``ly or both (``diagonal``), as
    mmdet's ``RandomFlip`` flips images."""
    if not crop.pixels.size:
        return crop
    y0, x0, pixels = crop.y0, crop.x0, crop.pixels
    if direction in ('horizontal', 'diagonal'):
        pixels, x0 = pixels[:, ::-1], width - crop.x1
    if direction in ('vertical', 'diagonal'):
        pixels, y0 = pixels[::-1], height - crop.y1
    if direction not in ('horizontal', 'vertical', 'diagonal'):
        raise ValueError(f'unknown flip direction {direction!r}')
    return MaskCrop(pixels.copy(), y0, x0)


def rotated_shape(height: int, width: int, k: int) -> tuple[int, int]:
    """The shape of a ``height`` x ``width`` image turned ``k`` quarter turns."""
    return (width, height) if k % 2 else (height, width)


def rotate_crop(crop: MaskCrop, height: int, width: int, k: int) -> MaskCrop:
    """``crop`` of a ``height`` x ``width`` image, in that image turned ``k`` quarter turns
    counter-clockwise as ``np.rot90(image, k)`` turns it (a pixel permutation, no interpolation).

    ``k`` counts modulo 4, so ``-k`` undoes ``k``: a crop of the turned image goes back with
    ``rotate_crop(crop, *rotated_shape(height, width, k), -k)``.
    """
    k %= 4
    if not crop.pixels.size or k == 0:
        return crop
    if k == 1:  # pixel (y, x) -> (width - 1 - x, y)
        y0, x0 = width - crop.x1, crop.y0
    elif k == 2:  # (y, x) -> (height - 1 - y, width - 1 - x)
        y0, x0 = height - crop.y1, width - crop.x1
    else:  # (y, x) -> (x, height - 1 - y)
        y0, x0 = crop.x0, height - crop.y1
    return MaskCrop(np.ascontiguousarray(np.rot90(crop.pixels, k)), y0, x0)


def rotate_boxes(boxes: np.ndarray, height: int, width: int, k: int) -> np.ndarray:
    """(N, 4) ``x1 y1 x2 y2`` boxes of a ``height`` x ``width`` image, in that image turned as
    ``rotate_crop`` turns crops (``-k`` undoes ``k`` likewise). Boxes lie on pixel edges, so a
    crop's box turns into the turned crop's box."""
    x1, y1, x2, y2 = np.asarray(boxes, np.float32).reshape(-1, 4).T
    k %= 4
    if k == 0:
        out = (x1, y1, x2, y2)
    elif k == 1:  # point (x, y) -> (y, width - x)
        out = (y1, width - x2, y2, width - x1)
    elif k == 2:  # (x, y) -> (width - x, height - y)
        out = (width - x2, height - y2, width - x1, height - y1)
    else:  # (x, y) -> (height - y, x)
        out = (height - y2, x1, height - y1, x2)
    return np.stack(out, axis=1).astype(np.float32)


@dataclass
class Detections:
    """Detections of one image (or tile) with masks as crops, in image coordinates."""

    bboxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64
    crops: list[MaskCrop]

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: np.ndarray | Sequence[int]) -> Detections:
        index = np.asarray(index, np.int64)
        return Detections(self.bboxes[index], self.scores[index], self.labels[index],
                          [self.crops[i] for i in index])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), [])

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        parts = [cls.empty(), *parts]
        return cls(np.concatenate([p.bboxes for p in parts]).reshape(-1, 4).astype(np.float32),
                   np.concatenate([p.scores for p in parts]).astype(np.float32),
                   np.concatenate([p.labels for p in parts]).astype(np.int64),
                   [c for p in parts for c in p.crops])

    @classmethod
    def from_instances(cls, instances: InstanceData, dy: int = 0, dx: int = 0) -> Detections:
        """From mmdet's ``pred_instances`` (masks as tensor or RLEs), shifted by ``dy, dx``."""
        bboxes = instances.bboxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4)
        crops = crops_from_masks(instances.masks)
        return cls(bboxes + np.array([dx, dy, dx, dy], np.float32),
                   instances.scores.detach().cpu().numpy().astype(np.float32),
                   instances.labels.detach().cpu().numpy().astype(np.int64),
                   [c.shifted(dy, dx) if c.pixels.size else c for c in crops])

    def to_instances(self, height: int, width: int, masks: str = 'rle',
                     device: torch.device | str = 'cpu') -> InstanceData:
        """mmdet's ``pred_instances``, masks as COCO RLEs (``'rle'``) or a bool tensor."""
        out = InstanceData()
        out.bboxes = torch.from_numpy(self.bboxes.reshape(-1, 4)).to(device)
        out.scores = torch.from_numpy(self.scores).to(device)
        out.labels = torch.from_numpy(self.labels).to(device)
        out.masks = (crops_to_rles(self.crops, height, width) if masks == 'rle'
                     else crops_to_tensor(self.crops, height, width, device))
        return out

    def extents(self) -> np.ndarray:
        """(N, 4) y0 x0 y1 x1 covering each mask and its box, integer pixels."""
        b = self.bboxes
        ext = np.stack([np.floor(b[:, 1]), np.floor(b[:, 0]), np.ceil(b[:, 3]),
                        np.ceil(b[:, 2])], axis=1).astype(np.int64).reshape(-1, 4)
        for i, c in enumerate(self.crops):
            if c.pixels.size:
                ext[i] = (min(ext[i, 0], c.y0), min(ext[i, 1], c.x0), max(ext[i, 2], c.y1),
                          max(ext[i, 3], c.x1))
        return ext



def rescale_detections(dets: Detections, scale_factor: tuple[float, float], height: int,
                       width: int) -> Detections:
    """Detections of a resized image mapped back to its ``height`` x ``width`` original;
    ``scale_factor`` is mmdet's ``(w_scale, h_scale)``."""
    sx, sy = (float(s) for s in scale_factor)
    if sx == 1.0 and sy == 1.0:
        return dets
    bboxes = dets.bboxes / np.array([sx, sy, sx, sy], np.float32)
    crops = []
    for c in dets.crops:
        if not c.pixels.size:
            crops.append(c)
            continue
        y0, x0 = math.floor(c.y0 / sy), math.floor(c.x0 / sx)
        y1, x1 = min(math.ceil(c.y1 / sy), height), min(math.ceil(c.x1 / sx), width)
        pixels = cv2.resize(c.pixels.astype(np.uint8), (max(x1 - x0, 1), max(y1 - y0, 1)),
                            interpolation=cv2.INTER_NEAREST).astype(bool)
        crops.append(trim(pixels, y0, x0))
    return Detections(bboxes, dets.scores, dets.labels, crops)
