"""Nuclei metrics (``nuclei_metrics``) of a folder of predicted label TIFFs against ground truth.

Pairing rule. In an instance folder every ``*.tif`` / ``*.tiff`` is a label image whose key is
its stem without a trailing ``_labels``, except ``*_classes.tif(f)``, which are class maps and
never instance images. So ``img7.tif`` in the ground-truth folder pairs with ``img7.tif`` or
with ``img7_labels.tif`` (``cellseg/apis/predict.py``'s output) in the prediction folder. The
class map of key ``k`` in a class folder is ``k_classes.tif`` or ``k.tif`` (tif or tiff, exactly
one of them); a class folder may be the instance folder itself, as predict writes both in one.

Every label image in either instance folder must have its counterpart: a missing one raises
FileNotFoundError, two files with one key, a shape mismatch, a non-integer or negative image
raise ValueError; each message names the file. Class maps not needed by any pair are ignored.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from cellseg.evaluation.nuclei_metrics import NucleiMetrics

TIFF_SUFFIXES = ('.tif', '.tiff')


def _key(path: Path) -> str | None:
    """The pairing key of an instance label file, None for a class map."""
    stem = path.stem
    if stem.endswith('_classes'):
        return None
    return stem[:-len('_labels')] if stem.endswith('_labels') else stem


def label_files(folder: str | os.PathLike) -> dict[str, Path]:
    """{key: path} of the instance label TIFFs of ``folder`` (module docstring's rule)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder}: no such folder')
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
            continue
        key = _key(path)
        if key is None:
            continue
        if key in out:
            raise ValueError(f'{path} and {out[key]} both give the label image of {key!r}')
        out[key] = path
    return out


def class_file(folder: str | os.PathLike, key: str, instance_file: Path | None = None) -> Path:
    """The class map of ``key`` in ``folder``: ``key_classes.tif`` or ``key.tif`` (or .tiff),
    never ``instance_file`` itself (a class folder may be the instance folder)."""
    folder = Path(folder)
    skip = instance_file.resolve() if instance_file is not None else None
    found = [p for p in (folder / f'{key}{tail}{suffix}' for tail in ('_classes', '')
                         for suffix in TIFF_SUFFIXES) if p.is_file() and p.resolve() != skip]
    if not found:
        raise FileNotFoundError(f'{folder / (key + "_classes.tif")}: no class map for {key!r} '
                                f'(looked for {key}_classes.tif and {key}.tif, or .tiff)')
    if len(found) > 1:
        raise ValueError(f'{found[0]} and {found[1]} both give the class map of {key!r}')
    return found[0]


def read_label_tiff(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A 2-D non-negative integer image from ``path``, of ``shape`` when given."""
    try:
        image = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for unreadable files
        raise ValueError(f'{path}: cannot read it as a TIFF ({exc})') from exc
    if image.ndim != 2:
        raise ValueError(f'{path}: expected a 2-D label image, got shape {image.shape}')
    if image.dtype.kind not in 'biu':
        raise ValueError(f'{path}: a label image must hold integers, got dtype {image.dtype}')
    if image.dtype.kind == 'i' and image.size and image.min() < 0:
        raise ValueError(f'{path}: a label image must not hold negative values')
    if shape is not None and image.shape != shape:
        raise ValueError(f'{path}: shape {image.shape} differs from its pair\'s {shape}')
    return image


def _check_counterparts(gt: dict[str, Path], pred: dict[str, Path], gt_dir: Path,
                        pred_dir: Path) -> None:
    for src, dst, folder in ((gt, pred, pred_dir), (pred, gt, gt_dir)):
        missing = sorted(set(src) - set(dst))
        if missing:
            key = missing[0]
            more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
            raise FileNotFoundError(f'{src[key]} has no counterpart in {folder}: looked for '
                                    f'{key}.tif and {key}_labels.tif (or .tiff){more}')


def evaluate_label_folders(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                           gt_class_dir: str | os.PathLike | None = None,
                           pred_class_dir: str | os.PathLike | None = None,
                           classes: Sequence[int] | None = None, match_iou: float = 0.5,
                           radius: float = 12.0) -> dict:
    """Evaluate every label image of ``pred_dir`` against its pair in ``gt_dir``.

    With ``gt_class_dir``, class metrics are computed too; ``pred_class_dir`` then defaults to
    ``pred_dir`` (predict writes ``<stem>_classes.tif`` next to ``<stem>_labels.tif``).
    ``classes``, ``match_iou``, ``radius``: as in ``NucleiMetrics``.

    Returns ``{'summary': NucleiMetrics.summary(), 'images': rows}``, one row per image in key
    order: ``image`` (the key), ``gt`` and ``pred`` (paths) and ``image_metrics``' keys.
    """
    if gt_class_dir is None and pred_class_dir is not None:
        raise ValueError('pred_class_dir needs gt_class_dir: class metrics need both sides')
    if gt_class_dir is not None and pred_class_dir is None:
        pred_class_dir = pred_dir
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_files, pred_files = label_files(gt_dir), label_files(pred_dir)
    if not gt_files:
        raise ValueError(f'{gt_dir}: no label TIFF (*.tif, *.tiff) in it')
    _check_counterparts(gt_files, pred_files, gt_dir, pred_dir)
    metrics = NucleiMetrics(classes=classes, match_iou=match_iou, radius=radius)
    rows = []
    for key in sorted(gt_files):
        gt = read_label_tiff(gt_files[key])
        pred = read_label_tiff(pred_files[key], gt.shape)
        gt_cls = pred_cls = None
        if gt_class_dir is not None:
            gt_cls = read_label_tiff(class_file(gt_class_dir, key, gt_files[key]), gt.shape)
            pred_cls = read_label_tiff(class_file(pred_class_dir, key, pred_files[key]),
                                       gt.shape)
        row = metrics.add(gt, pred, gt_cls, pred_cls)
        rows.append({'image': key, 'gt': str(gt_files[key]), 'pred': str(pred_files[key]),
                     **row})
    return {'summary': metrics.summary(), 'images': rows}
