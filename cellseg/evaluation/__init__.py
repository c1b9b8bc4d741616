"""Evaluation: the metric, reports, k-fold summaries (importing this registers the metric and
the one-pass JSON writer its results files go through)."""
from cellseg.evaluation import fast_json_handler  # noqa: F401  (registers itself for .json)
from cellseg.evaluation.metrics import CellCocoMetric

__all__ = ['CellCocoMetric']
