"""Tiled inference: Mask R-CNN on overlapping tiles of large images, merged by mask overlap.

Images up to 2500 px hold thousands of cells. Predicting them whole caps them at
``max_per_img`` detections and makes mmdet's mask head paste every detection into a full-image
array (1000 detections of a 2500x2500 image: 6 GB). ``TiledMaskRCNN`` cuts such images into
overlapping tiles, predicts each tile through ``MaskRCNN.predict`` and keeps every mask as the
pixels of its bounding rectangle plus the rectangle's position (``CropMasks``), so memory
grows with the cells, not with the image.

Merging (``merge_tile_detections``), per image:

1. A detection whose mask or box comes within ``border_margin`` px of an inner tile border (one
   with a neighbouring tile beyond it) is *cut*: the tile saw part of a cell. The neighbour holds
   that whole cell provided ``overlap`` exceeds the longest cell plus the margin, so cut
   detections are the last choice, kept only when no other tile found the cell.
2. A detection lying in no other tile cannot be a duplicate and is kept as it is.
3. The others, uncut before cut and each group by decreasing score, are kept unless a kept
   detection of the same class from another tile covers it: mask intersection over the smaller
   mask >= ``merge_thr`` (a cut piece lies wholly inside its full cell, so IoU would miss it).
   Detections of one tile never suppress each other: the model's own NMS decided those, as it
   does for an untiled image, and classes stay apart for the same reason (per-class NMS).

A cell longer than the overlap is cut in every tile; it is then kept as its highest scoring
piece. ``tools/anchor_stats.py`` prints the longest cell box of a data set.

No cell is dropped without a word: the model's ``test_cfg.rcnn.max_per_img`` caps each tile (a
tile returning that many is logged, naming the tile), and a tiled image keeps every merged
detection unless ``tile_cfg.max_per_img`` says otherwise (then the cut is logged with its count).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample, SampleList
from mmengine.logging import print_log
from torch import Tensor

from cellseg.models.detection_budget import area_budget
from cellseg.structures.crop_masks import MaskCrop
from cellseg.structures.detections import Detections


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` px covering ``length`` px, neighbours overlapping by at least
    ``overlap`` px, spread evenly, the first at 0 and the last ending at ``length``."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [math.floor(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_grid(height: int, width: int, tile: int, overlap: int
              ) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` of the tiles covering a ``height`` x ``width`` image, row by row."""
    if not 0 <= overlap < tile:
        raise ValueError(f'tile overlap must be in [0, tile size {tile}), got {overlap}')
    return [(y, x, min(y + tile, height), min(x + tile, width))
            for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]



def _overlaps(ext: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """Which extents (N, 4: y0 x0 y1 x1) intersect rectangles (M, 4) -> (N, M)."""
    return ((ext[:, None, 0] < rect[None, :, 2]) & (rect[None, :, 0] < ext[:, None, 2])
            & (ext[:, None, 1] < rect[None, :, 3]) & (rect[None, :, 1] < ext[:, None, 3]))


def _covered(a: MaskCrop, area_a: int, b: MaskCrop, area_b: int, box_a: np.ndarray,
             box_b: np.ndarray) -> float:
    """Intersection over the smaller of two masks; of the boxes when a mask is empty."""
    if area_a and area_b:
        return a.overlap(b) / min(area_a, area_b)
    iw = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    ih = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    smaller = min((box_a[2] - box_a[0]) * (box_a[3] - box_a[1]),
                  (box_b[2] - box_b[0]) * (box_b[3] - box_b[1]))
    return float(max(iw, 0) * max(ih, 0) / smaller) if smaller > 0 else 0.0


def merge_tile_detections(tiles: Sequence[tuple[int, int, int, int]],
                          per_tile: Sequence[Detections], height: int, width: int,
                          border_margin: int, merge_thr: float,
                          max_per_img: int | None = None) -> Detections:
    """One image's detections from its tiles' (image coordinates); the rules are in the module
    doc. Returns them by decreasing score, at most ``max_per_img``."""
    dets = Detections.concat(per_tile, height, width)
    return dets.select(_merged_index(tiles, per_tile, dets, height, width, border_margin,
                                     merge_thr, max_per_img))


def merged_tile_index(tiles: Sequence[tuple[int, int, int, int]],
                      per_tile: Sequence[Detections], height: int, width: int,
                      border_margin: int, merge_thr: float,
                      max_per_img: int | None = None) -> np.ndarray:
    """Which of the tiles' detections (numbered tile after tile) ``merge_tile_detections``
    keeps, by decreasing score."""
    return _merged_index(tiles, per_tile, Detections.concat(per_tile, height, width), height,
                         width, border_margin, merge_thr, max_per_img)


def _merged_index(tiles: Sequence[tuple[int, int, int, int]], per_tile: Sequence[Detections],
                  dets: Detections, height: int, width: int, border_margin: int,
                  merge_thr: float, max_per_img: int | None) -> np.ndarray:
    if len(tiles) != len(per_tile):
        raise ValueError(f'{len(tiles)} tiles but {len(per_tile)} tile predictions')
    rects = np.array(tiles, np.int64).reshape(-1, 4)
    tile_of = np.repeat(np.arange(len(per_tile)), [len(d) for d in per_tile]).astype(np.int64)
    if len(dets) == 0:
        return np.zeros(0, np.int64)
    ext = dets.extents()
    own = rects[tile_of]
    m = border_margin
    cut = (((own[:, 0] > 0) & (ext[:, 0] <= own[:, 0] + m))
           | ((own[:, 1] > 0) & (ext[:, 1] <= own[:, 1] + m))
           | ((own[:, 2] < height) & (ext[:, 2] >= own[:, 2] - m))
           | ((own[:, 3] < width) & (ext[:, 3] >= own[:, 3] - m)))
    in_tiles = _overlaps(ext, rects)
    in_tiles[np.arange(len(dets)), tile_of] = False
    shared = in_tiles.any(axis=1) | cut
    keep = list(np.flatnonzero(~shared))
    candidates = np.flatnonzero(shared)
    candidates = candidates[np.lexsort((-dets.scores[candidates], cut[candidates]))]
    crops = dets.masks.crops
    area = dets.masks.areas.astype(np.int64)
    kept: list[int] = []
    for i in candidates:
        if kept:
            k = np.asarray(kept)
            near = k[(dets.labels[k] == dets.labels[i]) & (tile_of[k] != tile_of[i])
                     & _overlaps(ext[i:i + 1], ext[k])[0]]
            if any(_covered(crops[i], area[i], crops[j], area[j], dets.bboxes[i],
                            dets.bboxes[j]) >= merge_thr for j in near):
                continue
        kept.append(int(i))
    index = np.asarray(keep + kept, np.int64)
    index = index[np.argsort(-dets.scores[index], kind='stable')]
    if max_per_img is not None and len(index) > max_per_img:
        print_log(f'tiled image of {height}x{width} px: kept the {max_per_img} best of '
                  f'{len(index)} merged detections (tile_cfg.max_per_img); '
                  f'{len(index) - max_per_img} cut', logger='current', level=logging.WARNING)
        index = index[:max_per_img]
    return index



@dataclass(frozen=True)
class TileConfig:
    """``TiledMaskRCNN``'s ``tile_cfg`` (values are chosen in the configs, with reasons).

    - size: tile side in px of the network input; images larger in either side are tiled.
    - overlap: px shared by neighbouring tiles; must exceed the longest cell + ``border_margin``.
    - border_margin: a detection this close to an inner tile border counts as cut.
    - merge_thr: mask intersection over the smaller mask making two detections one cell.
    - batch_size: tiles per forward pass.
    - max_per_img: detections kept per tiled image after merging; None keeps every one (a large
      image holds thousands of cells, and each tile is already capped by the model's
      ``test_cfg.rcnn.max_per_img``).
    """

    size: int
    overlap: int
    border_margin: int = 2
    merge_thr: float = 0.5
    batch_size: int = 4
    max_per_img: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.overlap < self.size:
            raise ValueError(f'tile_cfg: overlap ({self.overlap}) must be above 0 (a cell cut '
                             f'by a border must lie whole in the neighbouring tile) and below the '
                             f'tile size ({self.size})')
        if not 0 <= self.border_margin < self.overlap:
            raise ValueError(f'tile_cfg: border_margin ({self.border_margin}) must be >= 0 and '
                             f'below the overlap ({self.overlap})')
        if not 0 < self.merge_thr <= 1 or self.batch_size < 1:
            raise ValueError(f'tile_cfg: merge_thr must be in (0, 1] and batch_size >= 1, got '
                             f'{self.merge_thr}, {self.batch_size}')


def tiled_predict(predict_tiles, image: Tensor, height: int, width: int, cfg: TileConfig,
                  pad_divisor: int = 1, pad_value: float = 0,
                  tile_cap: int | Callable[[tuple[int, int]], int | None] | None = None
                  ) -> Detections:
    """Predict one preprocessed image (C, >=H, >=W) tile by tile and merge.

    ``predict_tiles(inputs, data_samples)`` predicts a batch of tiles (N, C, h, w) whose samples
    carry ``img_shape``/``ori_shape`` = the tile's size and ``scale_factor`` 1, and returns
    samples with ``pred_instances`` in tile coordinates (masks as a tensor or RLEs).
    ``tile_cap``: the most detections ``predict_tiles`` returns for a tile (or a function of the
    tile's (height, width) giving it); a tile returning that many may have lost cells, which is
    logged.
    """
    tiles = tile_grid(height, width, cfg.size, cfg.overlap)
    per_tile: list[Detections] = []
    for start in range(0, len(tiles), cfg.batch_size):
        batch = tiles[start:start + cfg.batch_size]
        th = max(y1 - y0 for y0, _, y1, _ in batch)
        tw = max(x1 - x0 for _, x0, _, x1 in batch)
        ph, pw = (math.ceil(s / pad_divisor) * pad_divisor for s in (th, tw))
        inputs, samples = [], []
        for y0, x0, y1, x1 in batch:
            crop = image[:, y0:y1, x0:x1]
            inputs.append(F.pad(crop, (0, pw - crop.shape[2], 0, ph - crop.shape[1]),
                                value=pad_value))
            shape = (y1 - y0, x1 - x0)
            samples.append(DetDataSample(metainfo=dict(
                img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0),
                batch_input_shape=(ph, pw), pad_shape=(ph, pw), tile=(y0, x0, y1, x1))))
        for (y0, x0, y1, x1), sample in zip(batch,
                                            predict_tiles(torch.stack(inputs), samples)):
            per_tile.append(Detections.from_instances(sample.pred_instances, (y1 - y0, x1 - x0),
                                                      (y0, x0), (height, width)))
            cap = tile_cap((y1 - y0, x1 - x0)) if callable(tile_cap) else tile_cap
            if cap is not None and len(per_tile[-1]) >= cap:
                _warn_capped(f'the tile at rows {y0}:{y1}, columns {x0}:{x1}', cap)
    return merge_tile_detections(tiles, per_tile, height, width, cfg.border_margin,
                                 cfg.merge_thr, cfg.max_per_img)


def _warn_capped(what: str, cap: int) -> None:
    print_log(f'{what} returned {cap} detections, the most test_cfg.rcnn.max_per_img allows: '
              'cells there may be missing (raise model.test_cfg.rcnn.max_per_img, or its '
              'max_per_img_per_mpx)',
              logger='current', level=logging.WARNING)


@MODELS.register_module()
class TiledMaskRCNN(MaskRCNN):
    """``MaskRCNN`` whose ``predict`` tiles images larger than ``tile_cfg.size``.

    Training, weights and checkpoints are MaskRCNN's: the same checkpoint serves both types, and
    a config turns tiling on with ``model.type='TiledMaskRCNN'`` plus ``model.tile_cfg`` (see
    ``TileConfig``; ``tile_cfg=None`` predicts every image whole). Being the detector rather than
    a wrapper, it tiles wherever mmdet predicts: ``tools/test.py``, submissions,
    ``inference_detector`` and inside a TTA model (each augmented view is tiled).

    Images that fit in one tile are predicted by ``MaskRCNN.predict`` unchanged (masks as an
    (N, H, W) tensor). Tiled images get ``pred_instances.masks`` as a list of COCO RLEs
    (pycocotools' compressed dicts, what mmdet's ``encode_mask_results`` makes): an (N, H, W)
    array of a large image is what tiling avoids. ``CocoMetric`` and the submission writer take
    either form; ``CropMasks.from_masks`` reads both. Each tile, and each image predicted whole,
    is capped at ``test_cfg.rcnn.max_per_img`` (logged when reached); a tiled image keeps
    every merged detection unless ``tile_cfg.max_per_img`` is set.
    """

    def __init__(self, *args, tile_cfg: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tile_cfg = TileConfig(**tile_cfg) if tile_cfg else None

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        if self.tile_cfg is None:
            return super().predict(batch_inputs, batch_data_samples, rescale)
        size = self.tile_cfg.size
        big = [max(s.img_shape[:2]) > size for s in batch_data_samples]
        whole = [i for i, b in enumerate(big) if not b]
        rcnn_cfg = self.test_cfg.rcnn

        def cap(shape: tuple[int, int]) -> int | None:
            return area_budget(rcnn_cfg, 'max_per_img', shape)

        if whole:
            super().predict(batch_inputs[whole], [batch_data_samples[i] for i in whole], rescale)
            for i in whole:
                limit = cap(batch_data_samples[i].ori_shape[:2])
                if limit is not None and len(batch_data_samples[i].pred_instances) >= limit:
                    h, w = batch_data_samples[i].img_shape[:2]
                    _warn_capped(f'an image of {h}x{w} px predicted whole', limit)
        preprocessor = self.data_preprocessor
        for i in (i for i, b in enumerate(big) if b):
            sample = batch_data_samples[i]
            h, w = sample.img_shape[:2]
            dets = tiled_predict(
                lambda x, s: super(TiledMaskRCNN, self).predict(x, s, rescale=False),
                batch_inputs[i], h, w, self.tile_cfg,
                getattr(preprocessor, 'pad_size_divisor', 1),
                getattr(preprocessor, 'pad_value', 0), cap)
            if rescale:
                h, w = sample.ori_shape[:2]
                dets = dets.rescaled(sample.get('scale_factor', (1.0, 1.0)), h, w)
            sample.pred_instances = dets.to_instances('rle', batch_inputs.device)
        return batch_data_samples
