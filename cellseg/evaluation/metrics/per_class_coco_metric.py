"""mmdet's ``CocoMetric`` with the AP numbers its summary leaves out, read from the same COCOeval
run: AP and AP50 of each class, and at more detections per image than the leaderboard counts."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from mmdet.evaluation.metrics import CocoMetric
from mmdet.evaluation.metrics import coco_metric as mmdet_coco_metric
from mmdet.registry import METRICS
from mmengine.logging import MMLogger
from pycocotools.cocoeval import COCOeval

# what mmdet's CocoMetric reports for bbox and segm when metric_items is None
MMDET_ITEMS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
# mmdet writes its numbers as float(f'{round(val, 3)}'); the added ones follow it
DECIMALS = 3


def average_precision(precision: np.ndarray, iou_index: int | None = None,
                      class_index: int | None = None, dets_index: int = 0,
                      area_index: int = 0) -> float:
    """Mean of COCOeval's precision array (iou, recall, class, area, maxdets) over the valid
    entries at one area range (default 0: all areas), one maxDets setting, and optionally one
    IoU threshold and one class; NaN where nothing is valid (no ground truth)."""
    p = precision[:, :, :, area_index, dets_index]
    if iou_index is not None:
        p = p[iou_index:iou_index + 1]
    if class_index is not None:
        p = p[:, :, class_index]
    p = p[p > -1]
    return float(p.mean()) if p.size else float('nan')


@contextmanager
def _keeping_evaluations(kept: dict[str, COCOeval]) -> Iterator[None]:
    """mmdet builds its COCOeval inside ``CocoMetric.compute_metrics`` and drops it. For the time
    of that call, the COCOeval classes its module names are subclasses that also keep each
    accumulated evaluation in ``kept``, by IoU type (proposal recall, without categories, is
    left out). Metrics are computed in one thread, so the swap cannot reach another caller."""
    names = ('COCOeval', 'COCOevalMP')
    originals = {name: getattr(mmdet_coco_metric, name) for name in names}

    def keeping(cls: type) -> type:
        class Kept(cls):
            def accumulate(self, p=None) -> None:
                super().accumulate(p)
                if self.params.useCats:
                    kept[self.params.iouType] = self

        return Kept

    try:
        for name, cls in originals.items():
            setattr(mmdet_coco_metric, name, keeping(cls))
        yield
    finally:
        for name, cls in originals.items():
            setattr(mmdet_coco_metric, name, cls)


@METRICS.register_module()
class PerClassCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric``, plus numbers read from the precision array of its own COCOeval run.

    mmdet's ``{bbox,segm}_mAP``, ``_mAP_50``, ... are ``COCOeval.stats``: at
    ``proposal_nums[2]`` detections per image and class (COCOeval's ``maxDets`` applies per image
    and category). The default here, ``proposal_nums=(1, 10, 100)``, is pycocotools' own, the
    leaderboard's setting, so ``segm_mAP_50`` is the leaderboard number. Added:

    - with ``classwise``: ``{iou_type}_{class}_mAP`` and ``{iou_type}_{class}_mAP_50`` at
      ``proposal_nums[2]`` (mmdet's classwise ``{class}_precision`` is at ``proposal_nums[-1]``
      and, without the IoU type in its name, segm's replaces bbox's);
    - for each N of ``proposal_nums[3:]``: ``{iou_type}_mAP_maxdets{N}`` and
      ``{iou_type}_mAP_50_maxdets{N}``. ``proposal_nums=(1, 10, 100, 1000)`` evaluates once up to
      1000 detections; COCOeval matches an image's detections greedily in decreasing score, so
      the first 100 match as they would alone and mmdet's numbers stay those at 100;
    - when no image has any prediction, 0.0 for every AP above (mmdet logs an error and reports
      nothing, which would leave a best-checkpoint rule without its key).

    The last evaluation of each IoU type stays in ``coco_evals`` (the evaluation report reads its
    precision array and detections instead of evaluating again).
    """

    def __init__(self, *args, proposal_nums: tuple[int, ...] = (1, 10, 100), **kwargs) -> None:
        super().__init__(*args, proposal_nums=proposal_nums, **kwargs)
        dets = self.proposal_nums
        # COCOeval matches up to maxDets[-1] detections and summarises at maxDets[2]
        if len(dets) < 3 or list(dets) != sorted(dets):
            raise ValueError('proposal_nums: at least three increasing maxDets (the third is '
                             f'the one mmdet summarises), got {tuple(dets)}')
        self.coco_evals: dict[str, COCOeval] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        self.coco_evals = {}
        with _keeping_evaluations(self.coco_evals):
            out = super().compute_metrics(results)
        if self.format_only:
            return out
        for iou_type in (m for m in self.metrics if m in ('bbox', 'segm')):
            ev = self.coco_evals.get(iou_type)
            if ev is None:  # mmdet found no prediction at all: every AP is 0
                items = self.metric_items or MMDET_ITEMS
                out.update((f'{iou_type}_{item}', 0.0) for item in items)
                if self.classwise:  # mmdet's own per-class keys
                    out.update((f'{c["name"]}_precision', 0.0)
                               for c in self._coco_api.loadCats(self.cat_ids))
            out.update(self._added(iou_type, ev))
        return out

    def _added(self, iou_type: str, ev: COCOeval | None) -> dict[str, float]:
        """The added numbers of one IoU type (all 0.0 without an evaluation)."""
        names = [c['name'] for c in self._coco_api.loadCats(self.cat_ids)]
        out: dict[str, float] = OrderedDict()
        i50 = None
        if ev is not None:
            precision = ev.eval['precision']  # (iou, recall, class, area, maxdets)
            thr50 = np.flatnonzero(np.isclose(ev.params.iouThrs, 0.5))
            i50 = int(thr50[0]) if thr50.size else None
        for k, dets in enumerate(self.proposal_nums[3:], start=3):
            out[f'mAP_maxdets{dets}'] = (
                average_precision(precision, dets_index=k) if ev else 0.0)
            out[f'mAP_50_maxdets{dets}'] = (
                average_precision(precision, i50, dets_index=k) if ev and i50 is not None
                else 0.0)
        if self.classwise:
            # COCOeval sorts its catIds: a class's column is its place among them
            column = {c: i for i, c in enumerate(ev.params.catIds)} if ev else {}
            for name, cat in zip(names, self.cat_ids):
                ap = ap50 = 0.0
                if ev:
                    ap = average_precision(precision, class_index=column[cat], dets_index=2)
                    ap50 = (average_precision(precision, i50, column[cat], dets_index=2)
                            if i50 is not None else float('nan'))
                out[f'{name}_mAP'], out[f'{name}_mAP_50'] = ap, ap50
        if out:
            table = ', '.join(f'{k} {v:.3f}' for k, v in out.items())
            MMLogger.get_current_instance().info(
                f'{iou_type} (at {self.proposal_nums[2]} detections per image and class unless '
                f'named): {table}')
        return OrderedDict((f'{iou_type}_{k}', round(v, DECIMALS)) for k, v in out.items())
