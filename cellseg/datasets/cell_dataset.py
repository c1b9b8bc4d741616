"""The cell dataset for MMDetection, and its class colours."""
from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from cellseg.formats.coco_conversion import annotation_classes
from cellseg.formats.hw3 import HW3FormatError, path_problem

Color = tuple[int, int, int]

# The class colours: distinct on H&E pink/purple and on fluorescence black backgrounds. A class
# beyond them gets a hue of its own (``palette_for``).
CLASS_PALETTE: tuple[Color, ...] = ((255, 221, 0), (0, 200, 255), (255, 64, 160), (80, 255, 80))


def palette_for(meta: Mapping | None, n_classes: int) -> list[Color]:
    """A model's or dataset's ``palette`` when it names a colour per class, else
    ``CLASS_PALETTE`` followed by spread hues up to ``n_classes`` colours (mmdet may store the
    string ``'random'``, which would not match between pictures)."""
    palette = meta.get('palette') if meta else None
    if isinstance(palette, (list, tuple)) and len(palette) >= n_classes:
        return [tuple(int(v) for v in c) for c in palette[:n_classes]]
    colours = list(CLASS_PALETTE)
    for k in range(len(colours), n_classes):
        hsv = np.uint8([[[(k * 47) % 180, 200, 255]]])
        colours.append(tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    return colours[:n_classes]


@DATASETS.register_module()
class CellDataset(CocoDataset):
    """``CocoDataset`` whose classes, unless ``metainfo`` names them, are its annotation file's
    categories (ids 1..K), with a colour per class in ``metainfo['palette']`` (which mmdet's
    visualizer reads from ``dataset_meta``).

    The tools give every dataset the classes they settled on once (the annotation files' when
    training, the checkpoint's ``meta.dataset_meta`` afterwards: ``cellseg.apis.classes``); a
    dataset built without them reads its own file. Annotation files come from
    ``data_prep/hw3_to_coco.py`` or are COCO files of the user's; their ``file_name`` is relative
    to ``data_root``, and one that leads outside it (absolute, or through ``..``) is refused
    naming the annotation file and the entry.
    """

    # mmdet's CocoDataset names COCO's 80 classes here; cell data has no such default
    METAINFO = dict(classes=(), palette=list(CLASS_PALETTE))

    def load_data_list(self) -> list[dict]:
        if not self._metainfo.get('classes'):
            self._metainfo['classes'] = annotation_classes(self.ann_file)
        self._metainfo['palette'] = palette_for(self._metainfo, len(self._metainfo['classes']))
        return super().load_data_list()

    def parse_data_info(self, raw_data_info: dict) -> dict:
        name = raw_data_info['raw_img_info']['file_name']
        problem = path_problem(name, self.data_prefix.get('img') or self.data_root or '.')
        if problem:
            raise HW3FormatError(f'{self.ann_file}: {problem}')
        return super().parse_data_info(raw_data_info)
