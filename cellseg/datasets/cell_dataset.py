"""The HW3 cell dataset for MMDetection."""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from cellseg.formats.hw3 import CLASS_NAMES
from cellseg.visualization.visualize import CLASS_PALETTE


@DATASETS.register_module()
class CellDataset(CocoDataset):
    """``CocoDataset`` with the four HW3 cell classes and a palette to tell them apart.

    Annotation files come from ``data_prep/hw3_to_coco.py``; their ``file_name`` is relative to
    ``data_root``. Nothing else differs from ``CocoDataset``.
    """

    METAINFO = dict(
        classes=CLASS_NAMES,
        palette=list(CLASS_PALETTE))
