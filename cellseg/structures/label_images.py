"""Instance label images from detections: what ``tools/predict.py`` writes (TIFFs) and the
evaluation report draws.

Rules. A label image cannot hold the overlaps Mask R-CNN masks of neighbouring cells may have,
so the higher score wins a pixel (equal scores: the earlier detection wins). An instance left
without pixels is dropped, and ids 1..N follow decreasing score (id 1 is the most confident).
The painting is ``cellseg.structures.sparse_labels.paint_runs``, the one painter the nuclei
metrics use too: masks travel as ``MaskCrop``s (the pixels of their bounding rectangle) and are
painted as runs of pixels, so memory holds the label image and the crops, never one full-size
array per detection.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cellseg.structures.mask_crops import (
    EMPTY_CROP,
    MaskCrop,
    crops_of_rles,
    is_rle,
    mask_size,
    trim,
)
from cellseg.structures.sparse_labels import crop_runs, image_layout, label_image_of, paint_runs


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
    heights, pixel_start = image_layout([shape])
    labels = paint_runs(*crop_runs(crops, shape), [scores], np.array([len(crops)]), heights,
                        pixel_start)
    return label_image_of(labels, 0, shape), labels.source


def class_map(labels: np.ndarray, class_of_id: np.ndarray) -> np.ndarray:
    """uint8 map of the 1-based class of each pixel's instance (0 = background);
    ``class_of_id[i - 1]`` is the class of id ``i``."""
    lut = np.concatenate([[0], np.asarray(class_of_id, np.int64)])
    if lut.max(initial=0) > 255:
        raise ValueError(f'class ids up to {lut.max()} do not fit a uint8 class map')
    return lut.astype(np.uint8)[labels]


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
    rle_flags = [is_rle(m) for m in masks]
    rle_index = [i for i, r in enumerate(rle_flags) if r]
    out = [EMPTY_CROP] * len(masks)
    for i, crop in zip(rle_index, crops_of_rles([masks[i] for i in rle_index])):
        out[i] = crop
    for i, m in enumerate(masks):
        if not rle_flags[i]:
            out[i] = trim(np.asarray(m).astype(bool, copy=False))
    return out


def label_image(crops: Sequence[MaskCrop], scores: np.ndarray, classes: np.ndarray,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, class_of_id, index)`` of detections with 1-based ``classes``: the label image
    (``paint_labels``), the class of each id and the detection of each id."""
    labels, index = paint_labels(crops, scores, shape)
    return labels, np.asarray(classes, np.int64).ravel()[index], index
