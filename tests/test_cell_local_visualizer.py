"""CellLocalVisualizer: one picture of the same cells whoever draws them (the training hook,
predict's overlay, the report, browse), each class in its palette colour."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import tifffile
import torch
from mmdet.registry import VISUALIZERS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from cellseg.apis.predict import write_image_outputs
from cellseg.engine.hooks.cell_visualization_hook import CellVisualizationHook
from cellseg.formats.images import read_image
from cellseg.structures.crop_masks import CropMasks
from cellseg.visualization import CellLocalVisualizer
from cellseg.visualization.cell_local_visualizer import class_maps_instances

H, W = 300, 360
CLASSES = ('epithelial', 'lymphocyte', 'stroma', 'other', 'necrosis')
PALETTE = [(255, 221, 0), (0, 200, 255), (255, 64, 160), (80, 255, 80), (120, 40, 255)]


def disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def detections() -> InstanceData:
    """Detections as ``ChunkedMaskHead`` predicts them: RLE masks, two of them overlapping (the
    higher score keeps the shared pixels) and one touching another of another class."""
    masks = [disc(150, 120, 30), disc(150, 160, 25), disc(230, 250, 20), disc(230, 291, 21),
             disc(120, 280, 15)]
    return InstanceData(
        bboxes=torch.zeros((5, 4)), labels=torch.tensor([0, 1, 2, 4, 3]),
        scores=torch.tensor([0.6, 0.9, 0.8, 0.7, 0.95]),
        masks=[mask_utils.encode(np.asfortranarray(m)) for m in masks])


def contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` next to one outside it, by OpenCV's erosion (not the visualizer's
    filter)."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask.astype(bool) & ~inner.astype(bool)


def test_hook_and_predict_draw_the_same_picture(tmp_path: Path) -> None:
    img_path = tmp_path / 'cells.tif'
    rng = np.random.default_rng(0)
    tifffile.imwrite(img_path, rng.integers(200, 3000, (H, W, 3), dtype=np.uint16))
    pred = detections()

    # the training hook's path: mmdet's add_datasample through the config's visualizer
    visualizer = VISUALIZERS.build(dict(type='CellLocalVisualizer',
                                        name='test_cell_local_visualizer_hook'))
    visualizer.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    sample = DetDataSample(metainfo=dict(img_path=str(img_path), ori_shape=(H, W)))
    sample.pred_instances = pred
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='t')
    CellVisualizationHook(draw=True, test_out_dir='vis', score_thr=0.3).after_test_iter(
        runner, 0, {}, [sample])
    hook_picture = cv2.imread(str(tmp_path / 't' / 'vis' / 'cells.png'))[:, W:, ::-1]

    # predict's path: the detections as predict holds them (CropMasks), into the overlay PNG
    write_image_outputs(tmp_path / 'predict', 'cells', read_image(img_path),
                        CropMasks.from_rles(pred.masks, H, W), pred.labels.numpy(),
                        pred.scores.numpy(),
                        CLASSES, PALETTE)
    overlay = cv2.imread(str(tmp_path / 'predict' / 'cells_overlay.png'))[..., ::-1]

    assert overlay.shape == hook_picture.shape == (H, W, 3)
    assert np.array_equal(overlay, hook_picture)
    assert (overlay != read_image(img_path)).any(axis=2).sum() > 500  # contours and legend drawn


def test_each_class_is_drawn_in_its_palette_colour() -> None:
    """Contours of non-overlapping masks, each class's in its colour, the rest the image but
    for the legend; a label image per class (HW3's ground truth) draws as the same instances."""
    image = np.full((H, W, 3), 40, np.uint8)
    masks = [disc(100, 100, 20), disc(100, 200, 25), disc(200, 120, 18), disc(220, 250, 30),
             disc(60, 300, 12)]
    labels = [0, 1, 2, 3, 4]
    visualizer = CellLocalVisualizer(name='test_cell_local_visualizer_palette')
    visualizer.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    drawn = visualizer.draw_instances(image, InstanceData(
        labels=torch.tensor(labels), masks=[mask_utils.encode(np.asfortranarray(m))
                                            for m in masks]))
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    edges = np.zeros((H, W), bool)
    for m, k in zip(masks, labels):
        edge = contour(m)
        assert (drawn[edge] == PALETTE[k]).all(), CLASSES[k]
        edges |= edge
    legend_only = visualizer.draw_instances(image, InstanceData(
        labels=torch.zeros(0, dtype=torch.long), masks=[]))
    legend = (legend_only != image).any(axis=2)
    assert legend.any() and not (legend & edges).any()
    rest = ~edges & ~legend
    assert np.array_equal(drawn[rest], image[rest])
    # a legend row per class with its count: the legend differs once a class has none
    assert not np.array_equal(drawn[legend], legend_only[legend])

    class_maps = {k + 1: m.astype(np.uint16) * (i + 7) for i, (m, k) in enumerate(
        zip(masks, labels))}
    from_label_images = visualizer.draw_instances(image, class_maps_instances(class_maps))
    assert np.array_equal(from_label_images, drawn)
