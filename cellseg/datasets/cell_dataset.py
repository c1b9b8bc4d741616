"""The HW3 cell dataset for MMDetection."""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from cellseg.formats.hw3 import CLASS_NAMES, HW3FormatError, path_problem
from cellseg.visualization.visualize import CLASS_PALETTE


@DATASETS.register_module()
class CellDataset(CocoDataset):
    """``CocoDataset`` with the four HW3 cell classes and a palette to tell them apart.

    Annotation files come from ``data_prep/hw3_to_coco.py``; their ``file_name`` is relative to
    ``data_root``, and one that leads outside it (absolute, or through ``..``) is refused naming
    the annotation file and the entry. Nothing else differs from ``CocoDataset``.
    """

    # mmdet's usual class default (as CocoDataset's METAINFO names COCO's 80): HW3's four. Runs
    # never rely on it: tools/train.py gives the datasets the annotation files' classes and the
    # later tools the checkpoint's meta.dataset_meta (config_helpers.resolve_classes).
    METAINFO = dict(
        classes=CLASS_NAMES,
        palette=list(CLASS_PALETTE))

    def parse_data_info(self, raw_data_info: dict) -> dict:
        name = raw_data_info['raw_img_info']['file_name']
        problem = path_problem(name, self.data_prefix.get('img') or self.data_root or '.')
        if problem:
            raise HW3FormatError(f'{self.ann_file}: {problem}')
        return super().parse_data_info(raw_data_info)
