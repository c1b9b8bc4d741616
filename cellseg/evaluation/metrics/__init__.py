from cellseg.evaluation.metrics.nuclei_metric import NucleiMetric
from cellseg.evaluation.metrics.per_class_coco_metric import PerClassCocoMetric

__all__ = ['NucleiMetric', 'PerClassCocoMetric']
