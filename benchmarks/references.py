"""The baselines: what the original study's script and cellseg's first versions did, and mmdet's
own components where cellseg replaced them, in one place.

``benchmarks/speed.py`` times cellseg's fast paths against these, and
``tests/test_speed_equivalences.py`` checks that the fast paths give exactly what these give, so
both read the same code: a baseline fixed in one place cannot drift from the other.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

# ---- data loading -------------------------------------------------------------------------------

MASK_LOADERS = ('LoadCellAnnotations', 'LoadAnnotations')


def original_loader(folder: Path, image_id: int, pack: Any) -> dict:
    """What the original study's script did per training item: read the image and every class
    TIFF again, and build one dense mask and box per instance from the float maps.

    ``pack`` is mmdet's ``PackDetInputs()``; returns the packed sample, as a dataset item is."""
    import tifffile
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks

    from cellseg.formats.images import read_image

    img = np.ascontiguousarray(read_image(folder / 'image.tif')[..., ::-1])
    h, w = img.shape[:2]
    masks, labels, boxes = [], [], []
    for k in range(1, 5):
        path = folder / f'class{k}.tif'
        if not path.is_file():
            continue
        values = tifffile.imread(path)
        for v in np.unique(values):
            if v == 0:
                continue
            mask = (values == v).astype(np.uint8)
            ys, xs = np.nonzero(mask)
            masks.append(mask)
            labels.append(k - 1)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    results = dict(
        img=img, img_shape=(h, w), ori_shape=(h, w), img_path=str(folder / 'image.tif'),
        img_id=image_id,
        gt_bboxes=HorizontalBoxes(np.asarray(boxes, np.float32).reshape(-1, 4)),
        gt_bboxes_labels=np.asarray(labels, np.int64),
        gt_masks=BitmapMasks(np.stack(masks) if masks else np.zeros((0, h, w), np.uint8), h, w),
        gt_ignore_flags=np.zeros(len(masks), bool))
    return pack(results)


def set_mask_loader(pipeline: list, loader: str) -> None:
    """Load training masks with ``loader`` in a pipeline (a list of transform configs, changed in
    place): ``'LoadCellAnnotations'`` (the configs' choice) or mmdet's ``'LoadAnnotations'``
    (the reference). A pipeline without either is an error: nothing would be compared."""
    import cellseg.datasets.transforms.load_cell_annotations  # noqa: F401  (registers it)

    if loader not in MASK_LOADERS:
        raise ValueError(f'loader must be one of {MASK_LOADERS}, got {loader!r}')
    found = [t for t in pipeline if t['type'] in MASK_LOADERS]
    if not found:
        raise ValueError(f'the pipeline has no {" or ".join(MASK_LOADERS)}')
    for t in found:
        t['type'] = loader


# ---- models -------------------------------------------------------------------------------------

def mmdet_roi_head(roi_head: Any, mask_head: bool = True) -> Any:
    """A copy of a config's RoI head as mmdet's ``StandardRoIHead`` (cellseg's chunk and mask
    positive settings dropped) and, with ``mask_head``, mmdet's ``FCNMaskHead`` in place of
    ``ChunkedMaskHead``: the same weights, mmdet's code."""
    roi_head = copy.deepcopy(roi_head)
    roi_head['type'] = 'StandardRoIHead'
    for key in ('bbox_chunk', 'mask_chunk', 'mask_pos_per_img'):
        roi_head.pop(key, None)
    if mask_head:
        roi_head['mask_head']['type'] = 'FCNMaskHead'
    return roi_head


# The tuned recipe before it bounded the RoI head's training work (configs/cell_r50_scratch_tuned.py
# now samples 128 RoIs per image and trains the mask branch on at most 16 positives per image).
PREVIOUS_TUNED_SETTINGS = {'model.train_cfg.rcnn.sampler.num': 512,
                           'model.roi_head.mask_pos_per_img': None}


def use_previous_tuned_settings(cfg: Any) -> None:
    """Give a config cell_r50_scratch_tuned's previous RoI settings (mmdet's 512 sampled RoIs per
    image, every positive to the mask branch), the baseline of the train item's step time."""
    cfg.model.train_cfg.rcnn.sampler.num = PREVIOUS_TUNED_SETTINGS[
        'model.train_cfg.rcnn.sampler.num']
    cfg.model.roi_head.mask_pos_per_img = PREVIOUS_TUNED_SETTINGS[
        'model.roi_head.mask_pos_per_img']


# ---- annotation encoding ------------------------------------------------------------------------

def encode_instance_map_per_mask(labels: np.ndarray) -> list[dict]:
    """The baseline encoder (cellseg's first, and what the original script did): one pycocotools
    ``encode`` of a full-image mask per instance, painted into one reused buffer.

    Returns ``[{'id', 'segmentation', 'bbox', 'area'}]`` by increasing id, ``counts`` as str:
    what ``cellseg.structures.rle.encode_instances`` must return from its one pass."""
    import pycocotools.mask as mask_utils

    from cellseg.formats.hw3 import iter_instances

    buf = np.zeros(labels.shape, dtype=np.uint8, order='F')
    out = []
    for inst_id, sl in iter_instances(labels):
        buf[sl] = labels[sl] == inst_id
        rle = mask_utils.encode(buf)
        buf[sl] = 0
        rle['counts'] = rle['counts'].decode('ascii')
        out.append(dict(id=inst_id, segmentation=rle,
                        bbox=[float(v) for v in mask_utils.toBbox(rle)],
                        area=float(mask_utils.area(rle))))
    return out
