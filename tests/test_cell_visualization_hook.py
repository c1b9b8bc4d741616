"""CellVisualizationHook draws what cellseg predicts: RLE-list masks, HW3 TIFFs (16-bit too)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile
import torch
from mmdet.engine.hooks import DetVisualizationHook
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData

from cellseg.engine.hooks.cell_visualization_hook import (
    CellVisualizationHook,
    drawable_sample,
    picture_name,
)
from cellseg.formats.images import read_image

H, W = 160, 200


def rle_sample(img_path: Path) -> DetDataSample:
    """A test-time sample as ``ChunkedMaskHead`` leaves it: masks as a list of COCO RLEs."""
    masks = np.zeros((3, H, W), np.uint8)
    masks[0, 10:60, 10:70] = 1
    masks[1, 90:150, 100:190] = 1
    masks[2, 120:150, 10:40] = 1  # scored below the threshold: not drawn
    sample = DetDataSample(metainfo=dict(img_path=str(img_path), ori_shape=(H, W),
                                         img_shape=(H, W)))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[10., 10, 70, 60], [100, 90, 190, 150], [10, 120, 40, 150]]),
        labels=torch.tensor([0, 2, 1]), scores=torch.tensor([0.9, 0.8, 0.1]),
        masks=[mask_utils.encode(np.asfortranarray(m)) for m in masks])
    return sample


@pytest.fixture()
def visualizer() -> DetLocalVisualizer:
    vis = DetLocalVisualizer.get_instance('test_cell_visualization_hook', alpha=1.0)
    vis.dataset_meta = dict(classes=('class1', 'class2', 'class3', 'class4'))
    return vis


def test_rle_masks_are_decoded_for_drawing_only() -> None:
    sample = rle_sample(Path('unused.tif'))
    drawn = drawable_sample(sample, score_thr=0.3)
    masks = drawn.pred_instances.masks
    assert masks.dtype == torch.bool and masks.shape == (2, H, W)
    expected = [mask_utils.decode(r).astype(bool) for r in sample.pred_instances.masks[:2]]
    assert all(np.array_equal(m.numpy(), e) for m, e in zip(masks, expected))
    assert isinstance(sample.pred_instances.masks, list)  # the evaluator's sample keeps its RLEs
    assert drawn.img_path == sample.img_path
    none = drawable_sample(sample, score_thr=0.95).pred_instances
    assert len(none) == 0 and none.masks.shape == (0, H, W)


def test_test_time_drawing_with_rle_masks_and_a_16_bit_tiff(tmp_path: Path,
                                                            visualizer: DetLocalVisualizer) -> None:
    """What ``default_hooks.visualization.draw=True`` (mmdet's ``--show-dir``) does after each
    test batch. mmdet's own hook crashes on the RLE list; this one writes the pictures, drawn
    on the image as training saw it (16-bit normalised by its percentiles)."""
    grey16 = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    img_path = tmp_path / 'cells.tif'
    tifffile.imwrite(img_path, grey16)
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='20260101_000000')
    outputs = [rle_sample(img_path)]

    with pytest.raises(AttributeError, match='astype'):  # the bug this hook exists for
        DetVisualizationHook(draw=True, test_out_dir='parent').after_test_iter(
            runner, 0, {}, outputs)

    hook = CellVisualizationHook(draw=True, test_out_dir='vis')
    hook.after_test_iter(runner, 0, {}, outputs)
    hook.after_test_iter(runner, 1, {}, outputs)  # the folder stays the same batch after batch
    out = tmp_path / runner.timestamp / 'vis' / 'cells.png'
    assert sorted(p.name for p in out.parent.iterdir()) == ['cells.png']
    picture = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]  # RGB
    # the visualizer puts the ground truth (none at test time: the image alone) left of the
    # predictions
    assert picture.shape == (H, 2 * W, 3) and picture.dtype == np.uint8
    grey = read_image(img_path)[..., 0]  # as training reads it (the percentile rule)
    assert np.array_equal(picture[:, :W], np.repeat(grey[..., None], 3, 2))
    drawn = picture[:, W:].astype(int)
    colours = drawn - grey[..., None]  # alpha 1: a drawn mask replaces the image
    masks = drawable_sample(outputs[0], 0.3).pred_instances.masks.numpy()
    for m in masks:  # each drawn mask: one colour over its whole interior
        inside = cv2.erode(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        inside[:25 + np.flatnonzero(m.any(1))[0]] = False  # clear of its label, drawn at the top
        assert inside.sum() > 10
        assert (np.abs(colours[inside]).max(1) > 20).all()
        assert len(np.unique(drawn[inside], axis=0)) == 1
    below = np.zeros((H, W), bool)
    below[120:150, 10:40] = True  # the detection scored 0.1: not drawn
    assert np.array_equal(drawn[below], np.repeat(grey[below][:, None], 3, 1))
    assert isinstance(outputs[0].pred_instances.masks, list)


def test_pictures_of_hw3_training_images_do_not_overwrite_each_other() -> None:
    assert picture_name('/d/train/abc/image.tif') == 'abc_image.png'
    assert picture_name('/d/train/xyz/image.tif') == 'xyz_image.png'
    assert picture_name('/d/test_release/t1.tif') == 't1.png'
