"""The classes of a run, settled once: the annotation files' when training, the checkpoint's
``meta.dataset_meta`` afterwards; every dataset and head of the config is sized to them."""
from __future__ import annotations

import os
from typing import Any

from mmengine.config import Config

from cellseg.apis.data_paths import LOADERS, first_annotation_file, leaf_datasets
from cellseg.datasets.cell_dataset import palette_for
from cellseg.formats.coco_conversion import annotation_classes

__all__ = ['annotation_classes', 'checkpoint_classes', 'configured_classes', 'resolve_classes',
           'resolved_classes', 'set_classes']


def checkpoint_classes(checkpoint: str | os.PathLike) -> tuple[str, ...] | None:
    """The classes a checkpoint was trained on (mmengine saves the training dataset's metainfo
    in its ``meta``), or None for a checkpoint without them. The checkpoint is read once: the
    next load of the same file (the Runner's, ``init_detector``'s) takes the dict read here."""
    from cellseg.engine.checkpoint_loader import read_checkpoint

    meta = read_checkpoint(checkpoint).get('meta')
    classes = ((meta or {}).get('dataset_meta') or {}).get('classes')
    return tuple(classes) if classes else None


def configured_classes(cfg: Config) -> tuple[str, ...] | None:
    """The classes a config names itself (``metainfo=dict(classes=...)`` of its datasets)."""
    for key in LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            classes = (ds.get('metainfo') or {}).get('classes')
            if classes:
                return tuple(classes)
    return None


def _set_num_classes(node: Any, n: int) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'num_classes':
                node[key] = n
            else:
                _set_num_classes(value, n)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_num_classes(value, n)


def set_classes(cfg: Config, classes: tuple[str, ...]) -> None:
    """Give every dataset ``classes`` (and a palette of as many colours) and size every head
    (each ``num_classes`` of the model) to them."""
    palette = palette_for({}, len(classes))
    for key in LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            ds.metainfo = dict(ds.get('metainfo') or {}, classes=tuple(classes), palette=palette)
    _set_num_classes(cfg.model, len(classes))


def resolve_classes(cfg: Config, checkpoint: str | os.PathLike | None = None) -> str:
    """Size the datasets and heads to the classes of the data, or of the checkpoint when one is
    given and remembers them; return the line to log.

    The data's classes are the categories of its annotation files (``hw3_to_coco.py`` writes
    ``class1..classK`` or the names of ``classes.txt``). A config that names its classes keeps
    them, and data or a checkpoint with other classes is an error, never a silent mismatch.
    """
    source, classes = None, None
    if checkpoint is not None:
        classes = checkpoint_classes(checkpoint)
        source = f'checkpoint {checkpoint}'
    if classes is None:
        source = first_annotation_file(cfg)
        if source is None:
            raise FileNotFoundError(f'{cfg.filename}: none of its annotation files exists, so '
                                    'the classes are unknown (run data_prep/hw3_to_coco.py and '
                                    'pass --data-root/--ann-dir)')
        classes = annotation_classes(source)
    named = configured_classes(cfg)
    if named is not None and tuple(named) != tuple(classes):
        raise ValueError(f'{cfg.filename} names the classes {list(named)}, but {source} has '
                         f'{list(classes)}')
    set_classes(cfg, classes)
    return f'classes from {source}: {len(classes)} ({", ".join(classes)}); heads sized to them'


def resolved_classes(cfg: Config) -> tuple[str, ...]:
    """The classes the config's model is sized to: those ``resolve_classes`` set (from the
    checkpoint or the data), else, for a config not resolved yet, those of its annotation files
    (resolved here)."""
    if configured_classes(cfg) is None:
        resolve_classes(cfg)
    return configured_classes(cfg)
