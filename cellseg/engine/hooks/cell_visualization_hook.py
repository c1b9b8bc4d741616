"""CellVisualizationHook: mmdet's ``DetVisualizationHook`` for cellseg's images and RLE masks."""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence
from pathlib import Path

from mmdet.engine.hooks import DetVisualizationHook
from mmdet.registry import HOOKS
from mmdet.structures import DetDataSample
from mmengine.runner import Runner
from mmengine.utils import mkdir_or_exist
from mmengine.visualization import Visualizer

from cellseg.formats.hw3 import IMAGE_FILE
from cellseg.formats.images import read_image
from cellseg.visualization import CellLocalVisualizer


def predictions_only(sample: DetDataSample) -> DetDataSample:
    """A new sample holding ``sample``'s metainfo and predictions: what the hook draws (the
    picture is mmdet's, the image on the left and the predictions on the right). ``sample``
    itself, which the evaluator and other hooks may still hold, is left as it is."""
    drawn = DetDataSample(metainfo=sample.metainfo)
    if 'pred_instances' in sample:
        drawn.pred_instances = sample.pred_instances
    return drawn


def cell_visualizer(visualizer: Visualizer) -> CellLocalVisualizer:
    """``visualizer`` if it can draw RLE masks, else a TypeError naming the config entry
    (mmdet's ``DetLocalVisualizer`` would fail deep inside with ``'list' object has no attribute
    'astype'``)."""
    if not isinstance(visualizer, CellLocalVisualizer):
        raise TypeError(f'CellVisualizationHook draws with a CellLocalVisualizer, the config\'s '
                        f'visualizer is a {type(visualizer).__name__}: set '
                        f"visualizer = dict(type='CellLocalVisualizer', ...) "
                        f'(configs/_base_/default_runtime.py does)')
    return visualizer


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
    - draws with ``CellLocalVisualizer`` (the config's ``visualizer``), which draws predicted
      masks given as RLE lists (``ChunkedMaskHead``, ``TiledMaskRCNN``), on which mmdet's
      visualizer crashes, as the contours predict's overlays show, and
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
        cell_visualizer(self._visualizer).add_datasample(
            osp.basename(img_path) if self.show else 'val_img',
            read_image(img_path),
            data_sample=predictions_only(outputs[0]),
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
            cell_visualizer(self._visualizer).add_datasample(
                osp.basename(img_path) if self.show else 'test_img',
                read_image(img_path),
                data_sample=predictions_only(data_sample),
                show=self.show,
                wait_time=self.wait_time,
                pred_score_thr=self.score_thr,
                out_file=out_file,
                step=self._test_index)
