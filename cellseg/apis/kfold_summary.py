"""Validation results of work dirs, and the k-fold table."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from cellseg.utils.scalars import LEADERBOARD_KEY, read_scalars


def validation_rows(work_dir: str | Path, key: str = LEADERBOARD_KEY) -> list[dict]:
    """The rows holding validation metrics (those with ``key``), each with its ``epoch``.

    mmengine logs an epoch-based validation with ``step`` = the epoch and no ``epoch`` key.
    """
    return [dict(r, epoch=r.get('epoch', r.get('step'))) for r in read_scalars(work_dir)
            if key in r]


def best_validation(work_dir: str | Path, key: str = LEADERBOARD_KEY) -> dict:
    """The validation row with the highest ``key``; errors name the work dir if there is none."""
    rows = validation_rows(work_dir, key)
    if not rows:
        raise FileNotFoundError(f'{work_dir}: no validation metrics ({key}) logged yet')
    return max(rows, key=lambda r: r[key])


def class_ap50_key(name: str) -> str:
    """The key of a class's mask AP50 as the metric logs it (``classwise``)."""
    return f'coco/segm_{name}_mAP_50'


_HEAD, _TAIL = class_ap50_key('|').split('|')


def logged_classes(rows: list[dict]) -> tuple[str, ...]:
    """The classes the runs logged an AP50 for, in the metric's order: the classes of the data
    they were validated on, whatever they are named (``classes.txt``'s names, ``class1..K``)."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(_HEAD) and key.endswith(_TAIL) and len(key) > len(_HEAD + _TAIL):
                names.setdefault(key[len(_HEAD):-len(_TAIL)])
    return tuple(names)


def fold_table(best_rows: list[dict], class_names: tuple[str, ...] | None = None) -> str:
    """Markdown table of segm AP, AP50 and per-class AP50 per fold, with mean and std; the
    classes are those the runs logged (``logged_classes``) unless ``class_names`` are given."""
    if class_names is None:
        class_names = logged_classes(best_rows)
    cols = ['coco/segm_mAP', 'coco/segm_mAP_50'] + [class_ap50_key(c) for c in class_names]
    head = ['fold', 'epoch', 'AP', 'AP50'] + [f'{c} AP50' for c in class_names]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for f, row in enumerate(best_rows):
        cells = [str(f), str(row.get('epoch', '?'))]
        cells += [f'{row[c]:.3f}' if c in row else 'n/a' for c in cols]
        lines.append('| ' + ' | '.join(cells) + ' |')
    # the sample standard deviation over folds (0 for a single fold)
    for label, stat in (('mean', statistics.fmean),
                        ('std', lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)):
        cells = [label, '']
        for c in cols:
            vals = [r[c] for r in best_rows if c in r and not math.isnan(r[c])]
            cells.append(f'{stat(vals):.3f}' if vals else 'n/a')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
