"""Where a config's data is: its datasets (through wrappers), their annotation files, and the
data root and annotation folder given on the command line."""
from __future__ import annotations

import os.path as osp
from typing import Any

from mmengine.config import Config, ConfigDict

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_EVALUATORS = ('val_evaluator', 'test_evaluator')


def leaf_datasets(loader: Any) -> list[ConfigDict]:
    """The leaf dataset configs of a dataloader (through RepeatDataset/ConcatDataset wrappers)."""
    out, todo = [], [loader.get('dataset')] if loader else []
    while todo:
        ds = todo.pop()
        if ds is None:
            continue
        if 'datasets' in ds:
            todo.extend(ds['datasets'])
        elif 'dataset' in ds:
            todo.append(ds['dataset'])
        else:
            out.append(ds)
    return out


def _evaluators(cfg: Config) -> list[ConfigDict]:
    out = []
    for key in _EVALUATORS:
        ev = cfg.get(key)
        out.extend(ev if isinstance(ev, list) else [ev] if ev else [])
    return out


def set_data_paths(cfg: Config, data_root: str | None = None,
                   ann_dir: str | None = None) -> None:
    """Point every dataloader and evaluator at another HW3 data root and/or annotation folder.

    With ``ann_dir``, annotation files keep their names (``fold0_train.json``, ...) and move
    there. With ``data_root`` alone, each annotation file keeps its place relative to the data
    root, as the config gives it (``annotations/fold0_train.json``, the demo's ``test_gt.json``).
    This lets one config serve data anywhere, e.g. a read-only data root with annotations
    written elsewhere.
    """
    if data_root is None and ann_dir is None:
        return
    old_root = cfg.get('data_root') or ''
    if data_root is not None:
        data_root = osp.join(data_root, '')
        cfg.data_root = data_root

    def moved(path: str, root: str) -> str:
        if ann_dir is not None:
            return osp.abspath(osp.join(ann_dir, osp.basename(path)))
        if osp.isabs(path) or not (old_root and path.startswith(old_root)):
            return path  # relative to the dataset's data_root, or elsewhere on purpose
        return osp.join(root, path[len(old_root):])

    for key in LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            if data_root is not None:
                ds.data_root = data_root
            if ds.get('ann_file'):
                ds.ann_file = moved(ds.ann_file, ds.data_root)
    for ev in _evaluators(cfg):
        if ev.get('ann_file'):
            ev.ann_file = moved(ev.ann_file, cfg.data_root)


def first_annotation_file(cfg: Config) -> str | None:
    """The first annotation file of the config's datasets that exists (where the data's
    classes are read), or None."""
    for key in LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            ann = ds.get('ann_file')
            if ann:
                path = ann if osp.isabs(ann) else osp.join(ds.get('data_root') or '', ann)
                if osp.isfile(path):
                    return path
    return None


def test_dataset_root(cfg: Config) -> str:
    """The data root of the test dataloader's dataset."""
    return leaf_datasets(cfg.test_dataloader)[0].data_root
