"""The nuclei metrics (PQ, DQ, SQ, AJI, Dice, mPQ, detection F1) of the predicted masks, as a metric
of its own beside mmdet's ``CocoMetric`` in a list evaluator."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import METRICS
from mmdet.structures.mask import encode_mask_results
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger

from cellseg.evaluation.coco_nuclei_metrics import coco_nuclei_metrics

# the class-agnostic numbers, as NucleiMetrics.summary() names them
NUCLEI_ITEMS = ('pq', 'dq', 'sq', 'aji', 'dice', 'mpq', 'f1_detection')
# predictions scoring at least this become the label images: the score tools/predict.py keeps
# by default, so the numbers are those of the label images a user gets
SCORE_THR = 0.5


@METRICS.register_module()
class NucleiMetric(BaseMetric):
    """The metrics nuclei papers report, of masks painted into label images.

    Per image, the predicted masks scoring at least ``score_thr`` become one label image,
    overlaps resolved by score (the higher score keeps the pixel), as ``tools/predict.py`` writes
    them; the annotations of ``ann_file`` become the ground truth's. Over those pairs
    ``cellseg.evaluation.nuclei_metrics.NucleiMetrics`` (HoVer-Net's definitions, pairs at IoU
    > ``match_iou``, centroids within ``radius`` px for F1) gives ``pq``, ``dq``, ``sq``,
    ``aji``, ``dice`` (means over images), ``mpq`` (CoNIC's mPQ+) and ``f1_detection``; with
    ``classwise`` also ``pq_{class}`` and ``f1_{class}`` (HoVer-Net's type F1), NaN for a class
    absent from both sides. ``metric_items`` picks among the class-agnostic ones (default: all).
    Keys are prefixed ``nuclei/``. Unlike AP, these numbers depend on the score threshold.

    Only the masks scoring at least ``score_thr`` are kept between batches. The ground truth's
    label images are built at the first evaluation and reused by the later ones (validation
    evaluates every epoch). The last evaluation's full ``NucleiMetrics.summary()`` (classes
    numbered 1..K in ``dataset_meta['classes']`` order) stays in ``summary``, where the
    evaluation report reads it.
    """

    default_prefix: str | None = 'nuclei'

    def __init__(self, ann_file: str, score_thr: float = SCORE_THR, classwise: bool = False,
                 metric_items: Sequence[str] | None = None, match_iou: float = 0.5,
                 radius: float = 12.0, backend_args: dict | None = None,
                 collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        unknown = [m for m in metric_items or () if m not in NUCLEI_ITEMS]
        if unknown:
            raise ValueError(f'NucleiMetric: metric_items {unknown} not supported; it reports '
                             f'{", ".join(NUCLEI_ITEMS)}')
        self.items = list(metric_items or NUCLEI_ITEMS)
        self.score_thr = float(score_thr)
        self.classwise = classwise
        self.match_iou, self.radius = match_iou, radius
        with get_local_path(ann_file, backend_args=backend_args) as local_path:
            self._coco_api = COCO(local_path)
        self._gt_cache: dict = {}
        self.summary: dict[str, float] | None = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_instances']
            scores = pred.get('mask_scores', pred['scores']).cpu().numpy().astype(np.float64)
            keep = np.flatnonzero(scores >= self.score_thr)
            masks = pred['masks']
            if isinstance(masks, torch.Tensor):  # mmdet's mask head: (N, H, W) bool
                masks = encode_mask_results(masks[torch.from_numpy(keep)].cpu().numpy())
            else:  # ChunkedMaskHead and TiledMaskRCNN: COCO RLEs
                masks = [masks[i] for i in keep]
            labels = pred['labels'].cpu().numpy().astype(np.int64)[keep] + 1
            self.results.append((sample['img_id'], list(masks), scores[keep], labels))

    def compute_metrics(self, results: list) -> dict[str, float]:
        cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta['classes'])
        detections = {img_id: (masks, scores, labels)
                      for img_id, masks, scores, labels in results}
        summary = coco_nuclei_metrics(self._coco_api, detections, cat_ids,
                                      self._coco_api.get_img_ids(), self.score_thr,
                                      self.match_iou, self.radius, self._gt_cache).summary()
        self.summary = summary
        out = OrderedDict((k, summary[k]) for k in self.items)
        if self.classwise:
            names = self.dataset_meta['classes']
            out.update((f'pq_{name}', summary[f'pq_class{k}'])
                       for k, name in enumerate(names, start=1))
            out.update((f'f1_{name}', summary[f'f1_class{k}'])
                       for k, name in enumerate(names, start=1))
        table = ', '.join(f'{k} {v:.3f}' for k, v in out.items())
        MMLogger.get_current_instance().info(
            f'nuclei metrics of {summary["n_images"]} label images (masks scoring >= '
            f'{self.score_thr:g}, overlaps resolved by score): {table}')
        return OrderedDict((k, round(float(v), 4)) for k, v in out.items())
