"""Evaluation: mmdet's COCO metric with per-class AP, the nuclei metrics, the evaluation report
(importing this registers the metrics)."""
from cellseg.evaluation.metrics import NucleiMetric, PerClassCocoMetric

__all__ = ['NucleiMetric', 'PerClassCocoMetric']
