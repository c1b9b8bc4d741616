from cellseg.evaluation.metrics.cell_coco_metric import CellCocoMetric

__all__ = ['CellCocoMetric']
