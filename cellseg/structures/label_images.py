"""Instance label images from detections: what ``tools/predict.py`` writes (TIFFs) and the
evaluation report draws.

Rules. A label image cannot hold the overlaps Mask R-CNN masks of neighbouring cells may have,
so the higher score wins a pixel (equal scores: the earlier detection wins). An instance left
without pixels is dropped, and ids 1..N follow decreasing score (id 1 is the most confident).
The painting is ``cellseg.structures.sparse_labels.paint_runs``, the one painter the nuclei
metrics use too: masks travel as ``CropMasks`` (each the pixels of its bounding rectangle) and
are painted as runs of pixels, so memory holds the label image and the crops, never one full-size
array per detection.
"""
from __future__ import annotations

import numpy as np

from cellseg.structures.crop_masks import CropMasks
from cellseg.structures.sparse_labels import crop_runs, image_layout, label_image_of, paint_runs


def paint_labels(masks: CropMasks, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label image of ``masks`` (of their ``height`` x ``width`` image) and which detection
    each id is.

    Returns ``(labels, index)``: ``labels`` HxW uint16 (uint32 past 65535 instances), ids 1..N
    by decreasing score, higher score winning overlaps, instances left without pixels dropped;
    ``index[i - 1]`` is the detection of id ``i``.
    """
    scores = np.asarray(scores, np.float64).ravel()
    if len(scores) != len(masks):
        raise ValueError(f'{len(masks)} masks and {len(scores)} scores')
    shape = (masks.height, masks.width)
    heights, pixel_start = image_layout([shape])
    labels = paint_runs(*crop_runs(masks), [scores], np.array([len(masks)]), heights,
                        pixel_start)
    return label_image_of(labels, 0, shape), labels.source


def class_map(labels: np.ndarray, class_of_id: np.ndarray) -> np.ndarray:
    """uint8 map of the 1-based class of each pixel's instance (0 = background);
    ``class_of_id[i - 1]`` is the class of id ``i``."""
    lut = np.concatenate([[0], np.asarray(class_of_id, np.int64)])
    if lut.max(initial=0) > 255:
        raise ValueError(f'class ids up to {lut.max()} do not fit a uint8 class map')
    return lut.astype(np.uint8)[labels]


def label_image(masks: CropMasks, scores: np.ndarray, classes: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, class_of_id, index)`` of detections with 1-based ``classes``: the label image
    (``paint_labels``), the class of each id and the detection of each id."""
    labels, index = paint_labels(masks, scores)
    return labels, np.asarray(classes, np.int64).ravel()[index], index
