"""CellLocalVisualizer: mmdet's ``DetLocalVisualizer`` drawing cell instances as class contours."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
from mmdet.registry import VISUALIZERS
from mmdet.structures.mask import PolygonMasks
from mmdet.visualization import DetLocalVisualizer
from mmdet.visualization.palette import get_palette
from mmengine.structures import InstanceData
from scipy import ndimage

from cellseg.formats.hw3 import TrainSample, read_instance_map
from cellseg.formats.images import read_image
from cellseg.structures.crop_masks import CropMasks
from cellseg.structures.label_images import paint_labels
from cellseg.structures.rle import encode_instances

Color = tuple[int, int, int]


def contour_thickness(shape: Sequence[int]) -> int:
    """1 px up to 1000 px images, then 1 px more per 1000: thin lines vanish when a big image is
    viewed whole, thick ones hide small cells."""
    return max(1, round(max(shape[:2]) / 1000))


def instance_boundaries(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels of each instance within ``thickness`` px of a pixel of another id (background, a
    touching instance, or outside the image), as a bool map. Touching instances keep separate
    contours because each draws its own inner edge."""
    size = 2 * thickness + 1
    ids = labels if labels.dtype.kind in 'iu' else labels.astype(np.int64)
    lo = ndimage.minimum_filter(ids, size=size, mode='constant', cval=0)
    hi = ndimage.maximum_filter(ids, size=size, mode='nearest')
    return (ids > 0) & ((lo != ids) | (hi != ids))


def draw_legend(image: np.ndarray, labels: Sequence[str], colors: Sequence[Color]) -> np.ndarray:
    """``image`` with a legend (a colour swatch and a label per row) in its top-left corner, on a
    dark translucent box that reads on both bright (H&E) and dark (fluorescence) images.

    The text scales with the image. An image too small to hold the legend in 60% of its width
    and height gets none: it would hide the cells it explains.
    """
    h, w = image.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = min(max(min(h, w) / 900, 0.35), 1.0)
    weight = max(1, round(scale * 1.5))
    sizes = [cv2.getTextSize(t, font, scale, weight) for t in labels]
    text_h = max(s[0][1] + s[1] for s in sizes)
    pad = max(2, text_h // 3)
    row = text_h + pad
    box_w = 3 * pad + text_h + max(s[0][0] for s in sizes)
    box_h = pad + row * len(labels)
    out = np.array(image, dtype=np.uint8, copy=True)
    if box_w > 0.6 * w or box_h > 0.6 * h:
        return out
    box = out[:box_h, :box_w]
    box[:] = (box.astype(np.float32) * 0.3).astype(np.uint8)
    for i, (label, color) in enumerate(zip(labels, colors)):
        y = pad + i * row
        cv2.rectangle(out, (pad, y), (pad + text_h - 1, y + text_h - 1),
                      tuple(int(c) for c in color), thickness=-1)
        baseline = sizes[i][1]
        cv2.putText(out, label, (2 * pad + text_h, y + text_h - baseline), font, scale,
                    (255, 255, 255), weight, cv2.LINE_AA)
    return out


def as_crop_masks(masks: object, shape: tuple[int, int]) -> CropMasks:
    """An ``InstanceData``'s ``masks`` as ``CropMasks``, whatever form they come in: COCO RLEs
    (``ChunkedMaskHead``, ``TiledMaskRCNN``), ``CropMasks``, HxW arrays, an (N, H, W) tensor or
    mmdet's ``BitmapMasks``/``PolygonMasks``."""
    if isinstance(masks, torch.Tensor):
        masks = masks.bool()
    elif isinstance(masks, PolygonMasks):
        masks = masks.to_ndarray()
    return CropMasks.from_masks(masks, *shape)


def class_maps_instances(class_maps: Mapping[int, np.ndarray]) -> InstanceData:
    """The instances of per-class label images (1-based class -> HxW ids, as HW3's
    ``classK.tif`` files hold the ground truth) as an ``InstanceData`` of 0-based ``labels`` and
    ``CropMasks`` ``masks``, class by class in increasing id."""
    parts: list[CropMasks] = []
    labels: list[int] = []
    for k, ids in sorted(class_maps.items()):
        found = encode_instances(np.asarray(ids))
        parts.append(CropMasks.from_rles([f['segmentation'] for f in found], *ids.shape))
        labels += [k - 1] * len(found)
    shape = next(iter(class_maps.values())).shape if class_maps else (0, 0)
    return InstanceData(labels=torch.tensor(labels, dtype=torch.long),
                        masks=CropMasks.cat([CropMasks.from_crops([], *shape), *parts]))


@VISUALIZERS.register_module()
class CellLocalVisualizer(DetLocalVisualizer):
    """``DetLocalVisualizer`` (same arguments) that draws instances with masks as contours
    coloured by class, with a legend of the class names and instance counts, at the image's own
    resolution, so a picture lines up with the label TIFFs in napari or Fiji.

    What differs from the parent: masks may be COCO RLEs, ``CropMasks`` or label images (the
    parent needs full-size arrays and crashes on RLE lists); overlapping masks are painted into
    one label image by ``cellseg.structures.label_images.paint_labels`` (higher score wins; for
    unscored ground truth the later instance), the label image predict writes, and each painted
    instance is outlined in ``dataset_meta['palette']``'s colour of its class, without jitter,
    boxes or per-instance text (thousands of cells would hide the image). Instances without
    masks are drawn by the parent.

    The training hook (``add_datasample``), ``tools/predict.py``'s overlays
    (``draw_label_image``), the evaluation report's galleries and ``tools/browse_dataset.py``
    (``draw_instances``) all draw through it, so their pictures of the same cells are the same.
    """

    def draw_instances(self, image: np.ndarray, instances: InstanceData,
                       classes: Sequence[str] | None = None,
                       palette: Sequence[Color] | None = None) -> np.ndarray:
        """``image`` (RGB) with ``instances`` drawn; ``classes`` and ``palette`` default to
        ``dataset_meta``'s. Unlike ``add_datasample`` it keeps no image in the visualizer."""
        return self._draw_instances(
            image, instances, self.dataset_meta.get('classes') if classes is None else classes,
            self.dataset_meta.get('palette') if palette is None else palette)

    def _draw_instances(self, image: np.ndarray, instances: InstanceData,
                        classes: Sequence[str] | None,
                        palette: Sequence[Color] | str | None) -> np.ndarray:
        if 'masks' not in instances:
            return super()._draw_instances(image, instances, classes, palette)
        shape = image.shape[:2]
        masks = as_crop_masks(instances.masks, shape)
        # ground truth has no scores: increasing ones let the later instance win, as it does in
        # the label images the evaluation report paints of annotations
        scores = (instances.scores.cpu().numpy() if 'scores' in instances
                  else np.arange(len(masks), dtype=np.float64))
        labels, index = paint_labels(masks, scores)
        class_of_id = np.asarray(instances.labels.cpu().numpy(), np.int64)[index] + 1
        return self.draw_label_image(image, labels, class_of_id, classes, palette)

    def draw_label_image(self, image: np.ndarray, labels: np.ndarray, class_of_id: np.ndarray,
                         classes: Sequence[str] | None = None,
                         palette: Sequence[Color] | str | None = None) -> np.ndarray:
        """``image`` (RGB, or grey) with each instance of the label image ``labels`` outlined in
        its class's colour (``class_of_id[i - 1]``: the 1-based class of id ``i``) and a legend
        counting the instances of each class. ``classes`` and ``palette`` default to
        ``dataset_meta``'s."""
        class_of_id = np.asarray(class_of_id, np.int64).ravel()
        if classes is None:
            classes = self.dataset_meta.get('classes')
        if palette is None:
            palette = self.dataset_meta.get('palette')
        if classes is None:  # as the parent names classes it was not told
            classes = [f'class {k}' for k in range(int(class_of_id.max(initial=1)))]
        colours = [tuple(int(v) for v in c) for c in get_palette(
            list(palette) if isinstance(palette, tuple) else palette, len(classes))]
        out = np.array(image, dtype=np.uint8, copy=True)
        if out.ndim == 2:
            out = np.repeat(out[..., None], 3, axis=2)
        edge = instance_boundaries(labels, contour_thickness(out.shape))
        lut = np.array([(0, 0, 0), *colours], np.uint8)  # row 0: background, never an edge
        out[edge] = lut[np.clip(np.concatenate([[0], class_of_id])[labels[edge]], 0,
                                len(colours))]
        if not len(classes):
            return out
        counts = np.bincount(class_of_id, minlength=len(classes) + 1)[1:len(classes) + 1]
        return draw_legend(out, [f'{name} ({n})' for name, n in zip(classes, counts)],
                           colours[:len(classes)])


def hw3_gt_overlay(sample: TrainSample, visualizer: CellLocalVisualizer) -> np.ndarray:
    """The ground truth of one HW3 train folder drawn by ``visualizer`` straight from its
    ``classK.tif`` files (read and checked by ``cellseg.formats.hw3``, not through a converted
    COCO file), so a conversion can be checked by eye against its source. The visualizer's
    ``dataset_meta`` names the data root's classes and their palette."""
    image = read_image(sample.image_path)
    maps = {k: read_instance_map(p, image.shape[:2]) for k, p in sample.class_paths.items()}
    return visualizer.draw_instances(image, class_maps_instances(maps))
