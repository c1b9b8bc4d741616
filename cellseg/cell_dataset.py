"""The HW3 cell dataset for MMDetection."""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from cellseg.hw3 import CLASS_NAMES


@DATASETS.register_module()
class CellDataset(CocoDataset):
    """``CocoDataset`` with the four HW3 cell classes and a palette to tell them apart.

    Annotation files come from ``data_prep/hw3_to_coco.py``; their ``file_name`` is relative to
    ``data_root``. Nothing else differs from ``CocoDataset``.
    """

    METAINFO = dict(
        classes=CLASS_NAMES,
        # distinct on H&E pink/purple and on fluorescence black backgrounds
        palette=[(255, 221, 0), (0, 200, 255), (255, 64, 160), (80, 255, 80)])
