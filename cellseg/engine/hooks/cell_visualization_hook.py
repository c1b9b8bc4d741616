"""CellVisualizationHook: mmdet's ``DetVisualizationHook`` for cellseg's images and RLE masks."""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from mmdet.engine.hooks import DetVisualizationHook
from mmdet.registry import HOOKS
from mmdet.structures import DetDataSample
from mmengine.runner import Runner
from mmengine.utils import mkdir_or_exist

from cellseg.formats.hw3 import IMAGE_FILE
from cellseg.formats.images import read_image
from cellseg.structures.rle import rle_pixels


def drawable_sample(sample: DetDataSample, score_thr: float) -> DetDataSample:
    """``sample`` as mmdet's ``DetLocalVisualizer`` can draw it.

    ``ChunkedMaskHead`` and ``TiledMaskRCNN`` predict masks as a list of COCO RLE dicts, which the
    visualizer cannot draw (it calls ``masks.astype``). The predictions above ``score_thr`` (the
    only ones the visualizer draws) are decoded to an (N, H, W) bool tensor, so full-size masks
    exist only for the detections drawn. A new sample is returned: ``sample`` itself, which the
    evaluator and other hooks may still hold, keeps its RLEs.
    """
    pred = sample.get('pred_instances')
    if pred is None or 'masks' not in pred or not isinstance(pred.masks, list):
        return sample
    if 'scores' in pred:
        pred = pred[pred.scores > score_thr]
    rles = list(pred.masks)
    h, w = (int(v) for v in rles[0]['size']) if rles else sample.ori_shape[:2]
    masks = np.zeros((len(rles), h, w), bool)
    masks[rle_pixels(rles)] = True
    pred = pred.new()  # shallow copies: only ``masks`` is replaced
    pred.masks = torch.from_numpy(masks)
    drawn = sample.new()
    drawn.pred_instances = pred
    return drawn


def picture_name(img_path: str) -> str:
    """The drawn picture's file name: ``<stem>.png``, or ``<folder>_image.png`` for HW3's
    ``train/<name>/image.tif`` (the names ``tools/predict.py`` gives them). mmdet's hook uses the
    image's base name, under which every HW3 training image would overwrite the one before."""
    path = Path(img_path)
    stem = f'{path.parent.name}_{path.stem}' if path.name == IMAGE_FILE else path.stem
    return f'{stem}.png'


@HOOKS.register_module()
class CellVisualizationHook(DetVisualizationHook):
    """``DetVisualizationHook`` (same arguments) that

    - reads each image with ``cellseg.formats.images.read_image``, the reader of training, testing
      and prediction (the parent's ``mmcv.imfrombytes`` shows a 16-bit image as ``value / 256``,
      nearly black for a 12-bit camera, instead of normalised by its percentiles),
    - draws predicted masks given as RLE lists (``ChunkedMaskHead``, ``TiledMaskRCNN``), on which
      the parent's visualizer crashes (``drawable_sample``), and
    - names test pictures so that HW3's training images do not overwrite each other.

    Set with ``default_hooks = dict(visualization=dict(type='CellVisualizationHook'))``; mmdet's
    ``tools/test.py --show-dir`` then only sets ``draw`` and ``test_out_dir`` on it. Pictures are
    PNGs named by ``picture_name``. Files are read from the local file system (``backend_args``
    is not used).
    """

    def after_val_iter(self, runner: Runner, batch_idx: int, data_batch: dict,
                       outputs: Sequence[DetDataSample]) -> None:
        """Draw the first prediction of every ``interval``-th validation iteration."""
        if self.draw is False:
            return
        total_curr_iter = runner.iter + batch_idx
        if total_curr_iter % self.interval != 0:  # the parent decodes first, then checks
            return
        img_path = outputs[0].img_path
        self._visualizer.add_datasample(
            osp.basename(img_path) if self.show else 'val_img',
            read_image(img_path),
            data_sample=drawable_sample(outputs[0], self.score_thr),
            show=self.show,
            wait_time=self.wait_time,
            pred_score_thr=self.score_thr,
            step=total_curr_iter)

    def after_test_iter(self, runner: Runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence[DetDataSample]) -> None:
        """Draw every test prediction, into ``test_out_dir`` (under the run's folder) if set."""
        if self.draw is False:
            return
        out_dir = None
        if self.test_out_dir is not None:  # the parent's folder, without rewriting the attribute
            out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
            mkdir_or_exist(out_dir)
        for data_sample in outputs:
            self._test_index += 1
            img_path = data_sample.img_path
            out_file = None if out_dir is None else osp.join(out_dir, picture_name(img_path))
            self._visualizer.add_datasample(
                osp.basename(img_path) if self.show else 'test_img',
                read_image(img_path),
                data_sample=drawable_sample(data_sample, self.score_thr),
                show=self.show,
                wait_time=self.wait_time,
                pred_score_thr=self.score_thr,
                out_file=out_file,
                step=self._test_index)
