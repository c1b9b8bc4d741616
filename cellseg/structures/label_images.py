"""Instance label images from detections: the one painter behind ``tools/predict.py``'s TIFFs,
the evaluation report's galleries and the nuclei metrics of ``CellCocoMetric``.

Rules. A label image cannot hold the overlaps Mask R-CNN masks of neighbouring cells may have,
so the higher score wins a pixel (masks are painted in increasing score order; equal scores: the
earlier detection wins). An instance left without pixels is dropped, and ids 1..N follow
decreasing score (id 1 is the most confident). Masks travel as ``MaskCrop``s (the pixels of
their bounding rectangle), painted one at a time into one buffer: memory holds the label image
and the crops, never one full-size array per detection.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_utils

from cellseg.structures.mask_crops import EMPTY_CROP, MaskCrop, trim
from cellseg.structures.rle import rle_string_counts

_UINT16_MAX = np.iinfo(np.uint16).max


def paint_labels(crops: Sequence[MaskCrop], scores: np.ndarray, shape: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The label image of masks (``MaskCrop``s) and which detection each id is.

    Returns ``(labels, index)``: ``labels`` HxW uint16 (uint32 past 65535 instances), ids 1..N
    by decreasing score, higher score winning overlaps, instances left without pixels dropped;
    ``index[i - 1]`` is the detection of id ``i``.
    """
    scores = np.asarray(scores, np.float64).ravel()
    if len(scores) != len(crops):
        raise ValueError(f'{len(crops)} masks and {len(scores)} scores')
    order = np.argsort(-scores, kind='stable')  # equal scores: the earlier detection wins
    n = len(order)
    buf = np.zeros(tuple(shape), np.uint16 if n <= _UINT16_MAX else np.uint32)
    for rank in range(n - 1, -1, -1):  # lowest score first, so higher scores paint over
        c = crops[order[rank]]
        if c.pixels.size:
            buf[c.y0:c.y1, c.x0:c.x1][c.pixels] = rank + 1
    kept = np.flatnonzero(np.bincount(buf.ravel(), minlength=n + 1)[1:])
    if kept.size == n:  # nothing dropped: the ranks are the ids
        return buf, order
    lut = np.zeros(n + 1, buf.dtype)
    lut[kept + 1] = np.arange(1, kept.size + 1)
    dtype = np.uint16 if kept.size <= _UINT16_MAX else np.uint32
    return lut[buf].astype(dtype, copy=False), order[kept]


def class_map(labels: np.ndarray, class_of_id: np.ndarray) -> np.ndarray:
    """uint8 map of the 1-based class of each pixel's instance (0 = background);
    ``class_of_id[i - 1]`` is the class of id ``i``."""
    lut = np.concatenate([[0], np.asarray(class_of_id, np.int64)])
    if lut.max(initial=0) > 255:
        raise ValueError(f'class ids up to {lut.max()} do not fit a uint8 class map')
    return lut.astype(np.uint8)[labels]


def _is_rle(mask: object) -> bool:
    return isinstance(mask, dict) or isinstance(mask, Mapping)  # dict first: the quick check


def mask_size(mask: np.ndarray | Mapping) -> tuple[int, int]:
    """(height, width) of the image a mask (HxW array or COCO RLE) lies in."""
    if _is_rle(mask):
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


def crops_of_masks(masks: Sequence[np.ndarray | Mapping],
                   shape: tuple[int, int] | None = None) -> list[MaskCrop]:
    """Crops of masks given as HxW arrays or COCO RLEs (mixed is fine), all of one image of
    ``shape`` (default: the first mask's); a mask of another size raises ValueError."""
    if shape is None and len(masks):
        shape = mask_size(masks[0])
    shape = tuple(shape) if shape is not None else None
    for i, m in enumerate(masks):
        if mask_size(m) != shape:
            raise ValueError(f'mask {i} has shape {mask_size(m)}, expected {shape}')
    is_rle = [_is_rle(m) for m in masks]
    rle_index = [i for i, r in enumerate(is_rle) if r]
    out = [EMPTY_CROP] * len(masks)
    for i, crop in zip(rle_index, crops_of_rles([masks[i] for i in rle_index])):
        out[i] = crop
    for i, m in enumerate(masks):
        if not is_rle[i]:
            out[i] = trim(np.asarray(m).astype(bool, copy=False))
    return out


def label_image(crops: Sequence[MaskCrop], scores: np.ndarray, classes: np.ndarray,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, class_of_id, index)`` of detections with 1-based ``classes``: the label image
    (``paint_labels``), the class of each id and the detection of each id."""
    labels, index = paint_labels(crops, scores, shape)
    return labels, np.asarray(classes, np.int64).ravel()[index], index
