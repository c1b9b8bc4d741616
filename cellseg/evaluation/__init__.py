"""Evaluation: the metric and its reports (importing this registers the metric)."""
from cellseg.evaluation.metrics import CellCocoMetric

__all__ = ['CellCocoMetric']
