"""COCO metric that says at how many detections per image each number was taken."""
from __future__ import annotations

import os.path as osp
import tempfile
from collections import OrderedDict

import numpy as np
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger

BACKENDS = ('pycocotools', 'faster_coco_eval')


def average_precision(precision: np.ndarray, iou_index: int | None = None,
                      class_index: int | None = None, dets_index: int = 0) -> float:
    """Mean of COCOeval's precision array (iou, recall, class, area, maxdets) over the valid
    entries at all areas, one maxDets setting, and optionally one IoU threshold and one class."""
    p = precision[:, :, :, 0, dets_index]
    if iou_index is not None:
        p = p[iou_index:iou_index + 1]
    if class_index is not None:
        p = p[:, :, class_index]
    p = p[p > -1]
    return float(p.mean()) if p.size else float('nan')


@METRICS.register_module()
class CellCocoMetric(CocoMetric):
    """``CocoMetric`` reporting AP at both 100 and ``max_dets[-1]`` detections per image.

    mmdet's ``CocoMetric`` sets COCOeval's ``maxDets`` to ``proposal_nums`` (100, 300, 1000), so
    its ``segm_mAP_50`` counts up to 1000 detections per image, while pycocotools' defaults and the
    CodaBench leaderboard count 100. On dense images (>100 cells) the two differ. This metric runs
    COCOeval once per IoU type with ``maxDets=max_dets`` and names the numbers:

    - ``{bbox,segm}_mAP``, ``_mAP_50``, ``_mAP_75``: at 100 detections per image, the leaderboard's
      setting (``segm_mAP_50`` is the leaderboard number);
    - ``{bbox,segm}_mAP_maxdets1000``, ``_mAP_50_maxdets1000``: at ``max_dets[-1]``;
    - with ``classwise``: ``segm_{class}_mAP`` and ``segm_{class}_mAP_50`` at 100.

    ``format_only`` and proposal metrics behave as in ``CocoMetric``.

    ``backend`` picks the COCOeval implementation: ``'pycocotools'`` (the reference, used by
    CodaBench) or ``'faster_coco_eval'`` (the ``faster-coco-eval`` package: the same matching and
    accumulation in C++, several times faster on dense images at 1000 detections; its AP agrees
    with pycocotools', see ``tests/test_speed_equivalences.py``).
    """

    def __init__(self, *args, max_dets: tuple[int, int] = (100, 1000),
                 backend: str = 'pycocotools', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if len(max_dets) != 2 or max_dets[0] != 100:
            raise ValueError(f'max_dets must be (100, N), got {max_dets}')
        self.max_dets = tuple(int(m) for m in max_dets)
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        if backend == 'faster_coco_eval':
            try:
                import faster_coco_eval  # noqa: F401
            except ImportError as e:
                raise ImportError("CellCocoMetric(backend='faster_coco_eval') needs the "
                                  'faster-coco-eval package (pip install faster-coco-eval); '
                                  "backend='pycocotools' needs nothing more") from e
        self.backend = backend
        self._fast_gt = None  # (the mmdet COCO it was made from, faster_coco_eval's COCO)

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only or any(m.startswith('proposal') for m in self.metrics):
            return super().compute_metrics(results)
        logger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        with tempfile.TemporaryDirectory() as tmp_dir:
            prefix = self.outfile_prefix or osp.join(tmp_dir, 'results')
            if self._coco_api is None:
                self._coco_api = COCO(self.gt_to_coco_json(gt_dicts=gts, outfile_prefix=prefix))
            if self.cat_ids is None:
                self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta['classes'])
            if self.img_ids is None:
                self.img_ids = self._coco_api.get_img_ids()
            result_files = self.results2json(preds, prefix)
            eval_results = OrderedDict()
            for iou_type in self.metrics:
                predictions = load(result_files[iou_type])
                eval_results.update(self._evaluate(iou_type, predictions, logger))
        return eval_results

    def _coco_eval(self, iou_type: str, predictions: list):
        """A COCOeval of the chosen backend over the ground truth and ``predictions``."""
        if self.backend == 'pycocotools':
            return COCOeval(self._coco_api, self._coco_api.loadRes(predictions), iou_type)
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster

        if self._fast_gt is None or self._fast_gt[0] is not self._coco_api:
            # faster_coco_eval adds its own keys to the annotation dicts it evaluates: give it
            # copies, so mmdet's ground truth stays as it was loaded
            data = self._coco_api.dataset
            gt = FastCOCO(dict(data, annotations=[dict(a) for a in data['annotations']]))
            self._fast_gt = (self._coco_api, gt)
        gt = self._fast_gt[1]
        return COCOeval_faster(gt, gt.loadRes(predictions), iou_type,
                               print_function=lambda *args: None)

    def _evaluate(self, iou_type: str, predictions: list, logger: MMLogger) -> dict[str, float]:
        names = [c['name'] for c in self._coco_api.loadCats(self.cat_ids)]
        big = self.max_dets[-1]
        out = OrderedDict()
        if not predictions:
            logger.error(f'{iou_type}: no predictions at all; every AP is 0')
            keys = ['mAP', 'mAP_50', 'mAP_75', f'mAP_maxdets{big}', f'mAP_50_maxdets{big}']
            if self.classwise:
                keys += [f'{n}_mAP{s}' for n in names for s in ('', '_50')]
            return OrderedDict((f'{iou_type}_{k}', 0.0) for k in keys)
        if iou_type == 'segm':
            # as mmdet does: without boxes, COCO computes instance areas from the masks
            for p in predictions:
                p.pop('bbox', None)
        coco_eval = self._coco_eval(iou_type, predictions)
        coco_eval.params.catIds = self.cat_ids
        coco_eval.params.imgIds = self.img_ids
        coco_eval.params.iouThrs = self.iou_thrs
        coco_eval.params.maxDets = list(self.max_dets)
        coco_eval.evaluate()
        coco_eval.accumulate()
        precision = coco_eval.eval['precision']
        iou50 = int(np.argmin(np.abs(np.asarray(self.iou_thrs) - 0.5)))
        iou75 = int(np.argmin(np.abs(np.asarray(self.iou_thrs) - 0.75)))
        out['mAP'] = average_precision(precision)
        out['mAP_50'] = average_precision(precision, iou50)
        out['mAP_75'] = average_precision(precision, iou75)
        out[f'mAP_maxdets{big}'] = average_precision(precision, dets_index=1)
        out[f'mAP_50_maxdets{big}'] = average_precision(precision, iou50, dets_index=1)
        if self.classwise:
            for k, name in enumerate(names):
                out[f'{name}_mAP'] = average_precision(precision, class_index=k)
                out[f'{name}_mAP_50'] = average_precision(precision, iou50, class_index=k)
        table = ', '.join(f'{k} {v:.3f}' for k, v in out.items())
        logger.info(f'{iou_type} (maxDets 100 unless named): {table}')
        return OrderedDict((f'{iou_type}_{k}', round(v, 4)) for k, v in out.items())
