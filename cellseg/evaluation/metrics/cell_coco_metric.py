"""COCO metric that says at how many detections per image each number was taken, and also
reports the nuclei metrics (PQ, DQ, SQ, AJI, Dice, mPQ, detection F1) of the same predictions."""
from __future__ import annotations

import os.path as osp
import tempfile
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger

from cellseg.evaluation.coco_nuclei_metrics import coco_nuclei_metrics

BACKENDS = ('pycocotools', 'faster_coco_eval')
# the class-agnostic nuclei metrics, as NucleiMetrics.summary() names them
NUCLEI_ITEMS = ('pq', 'dq', 'sq', 'aji', 'dice', 'mpq', 'f1_detection')
# predictions scoring at least this become the label images of the nuclei metrics
NUCLEI_SCORE_THR = 0.5
# AP items: name -> (IoU threshold or None for 0.50:0.95, area index, maxDets index)
_AP_ITEMS = {'mAP': (None, 0, 0), 'mAP_50': (0.5, 0, 0), 'mAP_75': (0.75, 0, 0),
             'mAP_s': (None, 1, 0), 'mAP_m': (None, 2, 0), 'mAP_l': (None, 3, 0)}


def average_precision(precision: np.ndarray, iou_index: int | None = None,
                      class_index: int | None = None, dets_index: int = 0,
                      area_index: int = 0) -> float:
    """Mean of COCOeval's precision array (iou, recall, class, area, maxdets) over the valid
    entries at one area range (default 0: all areas), one maxDets setting, and optionally one
    IoU threshold and one class."""
    p = precision[:, :, :, area_index, dets_index]
    if iou_index is not None:
        p = p[iou_index:iou_index + 1]
    if class_index is not None:
        p = p[:, :, class_index]
    p = p[p > -1]
    return float(p.mean()) if p.size else float('nan')


@METRICS.register_module()
class CellCocoMetric(CocoMetric):
    """``CocoMetric`` reporting AP at both 100 and ``max_dets[-1]`` detections per image, and
    the nuclei metrics of the masks.

    mmdet's ``CocoMetric`` sets COCOeval's ``maxDets`` to ``proposal_nums`` (100, 300, 1000), so
    its ``segm_mAP_50`` counts up to 1000 detections per image, while pycocotools' defaults and the
    CodaBench leaderboard count 100. On dense images (>100 cells) the two differ. This metric runs
    COCOeval once per IoU type with ``maxDets=max_dets`` and names the numbers:

    - ``{bbox,segm}_mAP``, ``_mAP_50``, ``_mAP_75``: at 100 detections per image, the leaderboard's
      setting (``segm_mAP_50`` is the leaderboard number);
    - ``{bbox,segm}_mAP_maxdets1000``, ``_mAP_50_maxdets1000``: at ``max_dets[-1]``;
    - with ``classwise``: ``segm_{class}_mAP`` and ``segm_{class}_mAP_50`` at 100.

    Nuclei metrics (``nuclei_metrics=True``, with ``'segm'`` in ``metric``): the predicted masks
    scoring at least ``nuclei_score_thr`` become one label image per image, overlaps resolved by
    score (the higher score keeps the pixel), as ``tools/predict.py`` writes label images; the
    ground truth's annotations of each image become its label image. Over those pairs
    ``cellseg.evaluation.nuclei_metrics.NucleiMetrics`` (HoVer-Net's definitions, pairs at IoU
    > 0.5, centroids within 12 px for F1) gives ``pq``, ``dq``, ``sq``, ``aji``, ``dice`` (means
    over images), ``mpq`` (CoNIC's mPQ+) and ``f1_detection``; with ``classwise`` also
    ``pq_{class}`` and ``f1_{class}`` (HoVer-Net's type F1), NaN for a class absent from both
    sides. Unlike AP these numbers depend on the score threshold, and they ignore the
    ``backend``. Keys carry no IoU-type prefix (mmengine adds ``coco/``: ``coco/pq``).

    ``metric_items`` names what is reported, as in ``CocoMetric``: any of ``mAP``, ``mAP_50``,
    ``mAP_75``, ``mAP_s``, ``mAP_m``, ``mAP_l`` (all at 100 detections), ``mAP_maxdets{N}``,
    ``mAP_50_maxdets{N}`` (N = ``max_dets[-1]``) for each IoU type, and the nuclei items above
    (a list without them skips the nuclei computation); per-class keys follow ``classwise``.
    Default: the ``mAP``, ``mAP_50``, ``mAP_75`` and maxdets items, and every nuclei item. An
    item outside these (such as ``CocoMetric``'s ``AR@100``) raises ValueError.

    ``format_only`` and proposal metrics behave as in ``CocoMetric`` (no nuclei metrics there).

    ``backend`` picks the COCOeval implementation: ``'pycocotools'`` (the reference, used by
    CodaBench) or ``'faster_coco_eval'`` (the ``faster-coco-eval`` package: the same matching and
    accumulation in C++, several times faster on dense images at 1000 detections; its AP agrees
    with pycocotools', see ``tests/test_speed_equivalences.py``).
    """

    def __init__(self, *args, max_dets: tuple[int, int] = (100, 1000),
                 backend: str = 'pycocotools', nuclei_metrics: bool = True,
                 nuclei_score_thr: float = NUCLEI_SCORE_THR, **kwargs) -> None:
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
        self.nuclei_metrics = bool(nuclei_metrics)
        self.nuclei_score_thr = float(nuclei_score_thr)
        if isinstance(self.metric_items, str):
            self.metric_items = [self.metric_items]
        if not any(m.startswith('proposal') for m in self.metrics):  # those go to CocoMetric
            self._check_metric_items()
        self._fast_gt = None  # (the mmdet COCO it was made from, faster_coco_eval's COCO)
        # (the mmdet COCO it was made from, {img_id: its ground-truth label image, sparse})
        self._nuclei_gt = None

    def _ap_items(self) -> dict[str, tuple[float | None, int, int]]:
        big = self.max_dets[-1]
        return dict(_AP_ITEMS, **{f'mAP_maxdets{big}': (None, 0, 1),
                                  f'mAP_50_maxdets{big}': (0.5, 0, 1)})

    def _check_metric_items(self) -> None:
        if self.metric_items is None:
            return
        supported = [*self._ap_items(), *NUCLEI_ITEMS]
        unknown = [m for m in self.metric_items if m not in supported]
        if unknown:
            raise ValueError(f'CellCocoMetric: metric_items {unknown} not supported; it reports '
                             f'{", ".join(supported)}')
        nuclei = [m for m in self.metric_items if m in NUCLEI_ITEMS]
        if nuclei and not self.nuclei_metrics:
            raise ValueError(f'CellCocoMetric: metric_items {nuclei} need nuclei_metrics=True')
        if nuclei and 'segm' not in self.metrics:
            raise ValueError(f"CellCocoMetric: metric_items {nuclei} need 'segm' in metric")

    def _selected(self, names: Sequence[str], default: Sequence[str]) -> list[str]:
        """The items of ``names`` to report: ``metric_items``' (in its order) or ``default``."""
        if self.metric_items is None:
            return list(default)
        return [m for m in self.metric_items if m in names]

    def _wants_nuclei(self) -> bool:
        return (self.nuclei_metrics and 'segm' in self.metrics
                and bool(self._selected(NUCLEI_ITEMS, NUCLEI_ITEMS)))

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
        if self._wants_nuclei() and 'masks' in preds[0]:
            eval_results.update(self._nuclei(preds, logger))
        return eval_results

    def _nuclei(self, preds: Sequence[dict], logger: MMLogger) -> dict[str, float]:
        """The nuclei metrics of ``preds`` (``process``'s result dicts, masks as COCO RLEs or
        HxW arrays) against the ground truth; per-class keys with ``classwise``."""
        if self._nuclei_gt is None or self._nuclei_gt[0] is not self._coco_api:
            self._nuclei_gt = (self._coco_api, {})  # built once per ground truth
        detections = {}
        for idx, r in enumerate(preds):
            scores = np.asarray(r.get('mask_scores', r['scores']), np.float64)
            detections[r.get('img_id', idx)] = (r['masks'], scores,
                                                np.asarray(r['labels'], np.int64) + 1)
        summary = coco_nuclei_metrics(self._coco_api, detections, self.cat_ids, self.img_ids,
                                      self.nuclei_score_thr, gt_cache=self._nuclei_gt[1]
                                      ).summary()
        out = OrderedDict((k, summary[k]) for k in self._selected(NUCLEI_ITEMS, NUCLEI_ITEMS))
        if self.classwise:
            names = [c['name'] for c in self._coco_api.loadCats(self.cat_ids)]
            for k, name in enumerate(names, start=1):
                out[f'pq_{name}'] = summary[f'pq_class{k}']
            for k, name in enumerate(names, start=1):
                out[f'f1_{name}'] = summary[f'f1_class{k}']
        table = ', '.join(f'{k} {v:.3f}' for k, v in out.items())
        logger.info(f'nuclei metrics of {summary["n_images"]} label images (masks scoring >= '
                    f'{self.nuclei_score_thr:g}, overlaps resolved by score): {table}')
        return OrderedDict((k, round(float(v), 4)) for k, v in out.items())

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
        ap_items = self._ap_items()
        items = self._selected(list(ap_items), [k for k in ap_items if k not in _AP_ITEMS
                                                or k in ('mAP', 'mAP_50', 'mAP_75')])
        if not predictions:
            logger.error(f'{iou_type}: no predictions at all; every AP is 0')
            keys = list(items)
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
        thrs = np.asarray(self.iou_thrs)

        def iou_index(thr: float | None) -> int | None:
            return None if thr is None else int(np.argmin(np.abs(thrs - thr)))

        out = OrderedDict()
        for item in items:
            thr, area, dets = ap_items[item]
            out[item] = average_precision(precision, iou_index(thr), dets_index=dets,
                                          area_index=area)
        if self.classwise:
            for k, name in enumerate(names):
                out[f'{name}_mAP'] = average_precision(precision, class_index=k)
                out[f'{name}_mAP_50'] = average_precision(precision, iou_index(0.5),
                                                          class_index=k)
        table = ', '.join(f'{k} {v:.3f}' for k, v in out.items())
        logger.info(f'{iou_type} (maxDets 100 unless named): {table}')
        return OrderedDict((f'{iou_type}_{k}', round(v, 4)) for k, v in out.items())
