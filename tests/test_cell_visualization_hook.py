"""CellVisualizationHook draws what cellseg predicts (RLE-list masks, HW3 TIFFs, 16-bit too)
through CellLocalVisualizer."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile
import torch
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData

from cellseg.engine.hooks.cell_visualization_hook import (
    CellVisualizationHook,
    picture_name,
    predictions_only,
)
from cellseg.formats.images import read_image
from cellseg.visualization import CellLocalVisualizer

H, W = 160, 200
CLASSES = ('class1', 'class2', 'class3', 'class4')
PALETTE = [(255, 221, 0), (0, 200, 255), (255, 64, 160), (80, 255, 80)]


def rle_sample(img_path: Path) -> DetDataSample:
    """A test-time sample as ``ChunkedMaskHead`` leaves it: masks as a list of COCO RLEs."""
    masks = np.zeros((3, H, W), np.uint8)
    masks[0, 70:120, 10:70] = 1  # below the legend, drawn in the top-left corner
    masks[1, 90:150, 100:190] = 1
    masks[2, 130:155, 80:95] = 1  # scored below the threshold: not drawn
    sample = DetDataSample(metainfo=dict(img_path=str(img_path), ori_shape=(H, W),
                                         img_shape=(H, W)))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[10., 70, 70, 120], [100, 90, 190, 150], [80, 130, 95, 155]]),
        labels=torch.tensor([0, 2, 1]), scores=torch.tensor([0.9, 0.8, 0.1]),
        masks=[mask_utils.encode(np.asfortranarray(m)) for m in masks])
    return sample


def contour(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` next to a pixel outside it (the image's outside included), found
    with OpenCV's erosion rather than the visualizer's own filter."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask.astype(bool) & ~inner.astype(bool)


def test_predictions_only_keeps_the_evaluators_sample() -> None:
    sample = rle_sample(Path('unused.tif'))
    sample.gt_instances = InstanceData(labels=torch.tensor([1]))
    drawn = predictions_only(sample)
    assert drawn.keys() == ['pred_instances'] and 'gt_instances' in sample
    assert drawn.pred_instances is sample.pred_instances
    assert drawn.img_path == sample.img_path


def test_a_visualizer_without_rle_support_is_named(tmp_path: Path) -> None:
    """mmdet's own visualizer cannot draw RLE lists (``'list' object has no attribute
    'astype'``); the hook says which config entry to set instead of failing inside it."""
    tifffile.imwrite(tmp_path / 'cells.tif', np.zeros((H, W), np.uint8))
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='20260101_000000')
    DetLocalVisualizer.get_instance('test_cell_visualization_hook_mmdet')  # the current one
    hook = CellVisualizationHook(draw=True, test_out_dir='vis')
    with pytest.raises(TypeError, match="type='CellLocalVisualizer'"):
        hook.after_test_iter(runner, 0, {}, [rle_sample(tmp_path / 'cells.tif')])


def test_test_time_drawing_with_rle_masks_and_a_16_bit_tiff(tmp_path: Path) -> None:
    """What ``default_hooks.visualization.draw=True`` (mmdet's ``--show-dir``) does after each
    test batch: pictures of the RLE masks, drawn on the image as training saw it (16-bit
    normalised by its percentiles), each mask outlined in its class's palette colour."""
    grey16 = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    img_path = tmp_path / 'cells.tif'
    tifffile.imwrite(img_path, grey16)
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='20260101_000000')
    outputs = [rle_sample(img_path)]
    visualizer = CellLocalVisualizer.get_instance('test_cell_visualization_hook')
    visualizer.dataset_meta = dict(classes=CLASSES, palette=PALETTE)

    hook = CellVisualizationHook(draw=True, test_out_dir='vis')
    hook.after_test_iter(runner, 0, {}, outputs)
    hook.after_test_iter(runner, 1, {}, outputs)  # the folder stays the same batch after batch
    out = tmp_path / runner.timestamp / 'vis' / 'cells.png'
    assert sorted(p.name for p in out.parent.iterdir()) == ['cells.png']
    picture = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]  # RGB
    # mmdet's picture: the ground truth (none at test time: the image alone) left of the
    # predictions
    assert picture.shape == (H, 2 * W, 3) and picture.dtype == np.uint8
    grey = np.repeat(read_image(img_path)[..., :1], 3, 2)  # as training reads it (percentiles)
    assert np.array_equal(picture[:, :W], grey)
    drawn = picture[:, W:]
    masks = [mask_utils.decode(r).astype(bool) for r in outputs[0].pred_instances.masks]
    labels = outputs[0].pred_instances.labels.tolist()
    edges = np.zeros((H, W), bool)
    for m, k in zip(masks[:2], labels[:2]):
        edge = contour(m)
        assert (drawn[edge] == PALETTE[k]).all()
        edges |= edge
    legend = np.zeros((H, W), bool)
    legend[:60, :120] = True  # the legend's corner, kept clear of the masks
    assert not np.array_equal(drawn[legend], grey[legend])
    # everything else is the image: mask interiors, and the detection scored 0.1 below the
    # threshold
    rest = ~edges & ~legend
    assert np.array_equal(drawn[rest], grey[rest]) and masks[2][rest].sum() == masks[2].sum()
    assert isinstance(outputs[0].pred_instances.masks, list)  # the evaluator's sample keeps them


def test_pictures_of_hw3_training_images_do_not_overwrite_each_other() -> None:
    assert picture_name('/d/train/abc/image.tif') == 'abc_image.png'
    assert picture_name('/d/train/xyz/image.tif') == 'xyz_image.png'
    assert picture_name('/d/test_release/t1.tif') == 't1.png'
