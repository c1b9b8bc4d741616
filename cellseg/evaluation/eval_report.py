"""An evaluation report people read: per-class AP tables, PR curves, a confusion matrix of matched
instances and the worst images side by side with their ground truth.

``write_report(coco_eval, nuclei, out_dir, class_names, images_root)`` writes, from a test run's
own evaluation (``PerClassCocoMetric.coco_evals['segm']``, ``NucleiMetric.summary``), and
``write_eval_report(gt_json, results, out_dir, class_names, images_root)`` from a results file,
evaluating it once::

    per_class.md, per_class.csv   GT instances, predictions, mask AP and AP50 per class and mean
                                  (pycocotools COCOeval at maxDets 100, as CodaBench counts);
                                  the nuclei metrics: PQ, DQ, SQ, AJI, Dice, mPQ, detection F1,
                                  per-class PQ and F1 (in the CSV as the PQ and F1 columns)
    pr_curves.png                 precision over recall per class at IoU 0.5 (COCOeval's own
                                  interpolated precision, eval['precision'])
    confusion.png, confusion.csv  matched instances: rows = GT class + 'false positive',
                                  columns = predicted class + 'missed'
    per_image.csv                 per image: GT, predictions, correct, F1
    worst_images.png              the images of lowest F1, GT and prediction overlays (only
                                  with images_root)

Matching (confusion, F1): predictions scoring at least ``score_thr`` are taken in decreasing
score order, each matched to the unmatched GT instance of highest mask IoU, at least ``iou_thr``,
whatever the classes (a class mix-up then shows as a match off the diagonal instead of one miss
plus one false positive). A match of the right class is correct; per-image F1 = 2 correct /
(GT + predictions), 1 for an image with neither.

Nuclei metrics (``cellseg.evaluation.nuclei_metrics``, HoVer-Net's definitions, as
``NucleiMetric`` reports them): the predictions scoring at least ``score_thr`` become one label
image per image, overlaps resolved by score (the higher score keeps the pixel), as
``tools/predict.py`` writes label images, and are scored against the ground truth's label
images. Their pairing (IoU > 0.5; centroids within 12 px for F1) is theirs, not ``iou_thr``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from mmengine.structures import InstanceData
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellseg.datasets.cell_dataset import palette_for
from cellseg.evaluation.coco_nuclei_metrics import coco_nuclei_metrics
from cellseg.evaluation.metrics.per_class_coco_metric import average_precision
from cellseg.formats.hw3 import TEST_DIR
from cellseg.formats.images import read_image
from cellseg.utils.fileio import atomic_write_bytes
from cellseg.utils.spreadsheet import spreadsheet_safe
from cellseg.visualization import CellLocalVisualizer
from cellseg.visualization.visualize import (
    Color,
    plot_confusion,
    plot_gallery,
    plot_pr_curves,
    save_figure,
)

MAX_DETS = 100  # the leaderboard's detections per image
FALSE_POSITIVE = 'false positive'
MISSED = 'missed'
# (column, NucleiMetrics.summary() key) of the class-agnostic nuclei table
NUCLEI_COLUMNS = (('PQ', 'pq'), ('DQ', 'dq'), ('SQ', 'sq'), ('AJI', 'aji'), ('Dice', 'dice'),
                  ('mPQ', 'mpq'), ('F1 detection', 'f1_detection'))


def _quiet_coco(gt_json: str | os.PathLike) -> COCO:
    path = Path(gt_json)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: ground-truth file not found')
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{path}: not a COCO ground-truth file ({type(e).__name__}: {e})') from e


def _load_results(results: str | os.PathLike | Sequence[dict]) -> tuple[list[dict], str]:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if not path.is_file():
            raise FileNotFoundError(f'{path}: results file not found')
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f'{path}: not JSON ({e})') from e
        source = str(path)
    else:
        data, source = results, '<results>'
    if not isinstance(data, list) or any(not isinstance(r, dict) or 'segmentation' not in r
                                         for r in data):
        raise ValueError(f'{source}: expected a list of COCO segm results (image_id, '
                         'category_id, segmentation, score)')
    return [dict(r) for r in data], source  # loadRes adds keys: leave the caller's dicts alone


def _category_ids(gt: COCO, class_names: Sequence[str], gt_json: str | os.PathLike) -> list[int]:
    by_name = {c['name']: c['id'] for c in gt.loadCats(gt.getCatIds())}
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise ValueError(f'{gt_json}: no category named {", ".join(missing)} (it has '
                         f'{", ".join(by_name)})')
    return [by_name[n] for n in class_names]


def _detections(gt: COCO, results: list[dict], source: str) -> COCO:
    unknown = {r['image_id'] for r in results} - set(gt.getImgIds())
    if unknown:
        raise ValueError(f'{source}: image ids {sorted(unknown)[:5]} are not in the ground truth')
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes(results)
    dt = COCO()  # loadRes cannot take an empty list; an empty result set is a valid (bad) result
    dt.dataset = dict(images=gt.dataset['images'], categories=gt.dataset['categories'],
                      annotations=[])
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def run_cocoeval(gt: COCO, dt: COCO, cat_ids: Sequence[int]) -> COCOeval:
    """COCOeval of masks, evaluated and accumulated (pycocotools' defaults: maxDets 1/10/100)."""
    ev = COCOeval(gt, dt, 'segm')
    ev.params.catIds = list(cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def per_class_table(ev: COCOeval, gt: COCO, dt: COCO, cat_ids: Sequence[int],
                    class_names: Sequence[str]) -> list[dict]:
    """Rows (class, gt_instances, predictions, AP, AP50) per class and a 'mean' row: the mean
    over classes with ground truth, which is COCO's mAP."""
    precision = ev.eval['precision']  # (iou, recall, class, area, maxdets)
    # COCOeval sorts catIds, so a class's index is its place among the sorted ids
    index = {c: i for i, c in enumerate(ev.params.catIds)}
    m = ev.params.maxDets.index(MAX_DETS)
    i50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    rows = []
    for name, c in zip(class_names, cat_ids):
        rows.append(dict(
            **{'class': name},
            gt_instances=len(gt.getAnnIds(catIds=[c], iscrowd=False)),
            predictions=len(dt.getAnnIds(catIds=[c])),
            AP=average_precision(precision, class_index=index[c], dets_index=m),
            AP50=average_precision(precision, iou_index=i50, class_index=index[c], dets_index=m)))
    rows.append(dict(**{'class': 'mean'}, gt_instances=sum(r['gt_instances'] for r in rows),
                     predictions=sum(r['predictions'] for r in rows),
                     AP=float(np.nanmean([r['AP'] for r in rows])),
                     AP50=float(np.nanmean([r['AP50'] for r in rows]))))
    return rows


def _fmt(v: float) -> str:
    return 'n/a' if math.isnan(v) else f'{v:.4f}'


def table_markdown(rows: Sequence[dict], n_images: int) -> str:
    lines = [f'Mask AP on {n_images} images, COCOeval at maxDets {MAX_DETS} (as CodaBench counts). '
             'AP: mean over IoU 0.50:0.95; AP50: IoU 0.5; n/a: no ground truth of the class.',
             '', '| class | GT instances | predictions | AP | AP50 |', '|---|---:|---:|---:|---:|']
    for r in rows:
        name = f"**{r['class']}**" if r['class'] == 'mean' else r['class']
        lines.append(f"| {name} | {r['gt_instances']} | {r['predictions']} | {_fmt(r['AP'])} | "
                     f"{_fmt(r['AP50'])} |")
    return '\n'.join(lines) + '\n'


def nuclei_summary(gt: COCO, dt: COCO, cat_ids: Sequence[int], score_thr: float
                   ) -> dict[str, float]:
    """``NucleiMetrics.summary()`` of the detections scoring >= ``score_thr`` against the ground
    truth, as label images (rules in the module doc); classes 1..K follow ``cat_ids``."""
    col = {c: k + 1 for k, c in enumerate(cat_ids)}
    detections = {}
    for img_id in gt.getImgIds():
        anns = [a for a in dt.loadAnns(dt.getAnnIds(imgIds=[img_id]))
                if a['category_id'] in col and a['score'] >= score_thr]
        detections[img_id] = ([gt.annToRLE(a) for a in anns],
                              np.array([a['score'] for a in anns], np.float64),
                              np.array([col[a['category_id']] for a in anns], np.int64))
    return coco_nuclei_metrics(gt, detections, cat_ids, score_thr=score_thr).summary()


def add_nuclei_columns(rows: list[dict], summary: dict[str, float]) -> None:
    """Give ``per_class_table``'s rows a PQ and an F1 column (HoVer-Net's type F1); the mean row
    holds mPQ and the mean F1 over the classes that have one."""
    for k, r in enumerate(rows[:-1], start=1):
        r['PQ'], r['F1'] = summary[f'pq_class{k}'], summary[f'f1_class{k}']
    rows[-1]['PQ'] = summary['mpq']
    rows[-1]['F1'] = float(np.nanmean([r['F1'] for r in rows[:-1]]))


def nuclei_markdown(summary: dict[str, float], rows: Sequence[dict], score_thr: float) -> str:
    """The nuclei section of ``per_class.md``: the class-agnostic numbers, then PQ and F1 per
    class (``rows`` after ``add_nuclei_columns``)."""
    lines = [f"Nuclei metrics on {summary['n_images']} images (HoVer-Net's definitions): "
             f'predictions scoring at least {score_thr:g} are painted into one label image per '
             'image with overlaps resolved by score (the higher score keeps the pixel) and '
             "compared with the ground truth's label images. PQ (= DQ x SQ, matches at IoU > "
             "0.5), AJI and Dice are means over images; mPQ is CoNIC's (per-class counts pooled "
             'over images); F1 pairs centroids within 12 px; n/a: a class neither side has.', '',
             '| ' + ' | '.join(c for c, _ in NUCLEI_COLUMNS) + ' |',
             '|' + '---:|' * len(NUCLEI_COLUMNS),
             '| ' + ' | '.join(_fmt(summary[k]) for _, k in NUCLEI_COLUMNS) + ' |', '',
             '| class | PQ | F1 |', '|---|---:|---:|']
    for r in rows:
        name = f"**{r['class']}**" if r['class'] == 'mean' else r['class']
        lines.append(f"| {name} | {_fmt(r['PQ'])} | {_fmt(r['F1'])} |")
    return '\n'.join(lines) + '\n'


def _csv(rows: Sequence[dict], columns: Sequence[str]) -> bytes:
    """The CSV of ``rows``; class names and file names are made spreadsheet-safe (a name
    starting with ``=`` is not run as a formula), numbers are written as numbers."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator='\n')
    writer.writerow({c: spreadsheet_safe(c) for c in columns})  # the header: class names
    for r in rows:
        # the rule sees the values, not their formatted text: -0.5 stays a number
        writer.writerow({k: (_fmt(v) if isinstance(v, float) else spreadsheet_safe(v))
                         for k, v in r.items()})
    return buf.getvalue().encode()


def match_image(gt_anns: Sequence[dict], dt_anns: Sequence[dict], gt: COCO,
                iou_thr: float = 0.5) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy class-agnostic matching of one image (rules in the module doc).

    Returns (matched (gt, dt) index pairs, unmatched gt indices, unmatched dt indices); ``dt_anns``
    must be in decreasing score order.
    """
    if not gt_anns or not dt_anns:
        return [], list(range(len(gt_anns))), list(range(len(dt_anns)))
    g_rles = [gt.annToRLE(a) for a in gt_anns]
    d_rles = [gt.annToRLE(a) for a in dt_anns]
    iou = np.asarray(mask_utils.iou(d_rles, g_rles, [0] * len(g_rles))).reshape(
        len(d_rles), len(g_rles))
    free = np.ones(len(g_rles), bool)
    pairs, lone_dt = [], []
    for d in range(len(d_rles)):
        cand = np.where(free, iou[d], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= iou_thr:
            free[g] = False
            pairs.append((g, d))
        else:
            lone_dt.append(d)
    return pairs, list(np.flatnonzero(free)), lone_dt


def confusion_and_f1(gt: COCO, dt: COCO, cat_ids: Sequence[int], score_thr: float,
                     iou_thr: float) -> tuple[np.ndarray, list[dict]]:
    """The (K+1)x(K+1) confusion matrix (rows GT class + false positive, columns predicted class
    + missed) and per-image rows (image_id, file_name, gt, predictions, correct, f1)."""
    k = len(cat_ids)
    col = {c: i for i, c in enumerate(cat_ids)}
    matrix = np.zeros((k + 1, k + 1), np.int64)
    per_image = []
    for img in gt.loadImgs(sorted(gt.getImgIds())):
        g_anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[img['id']], iscrowd=False))
                  if a['category_id'] in col]
        d_anns = [a for a in dt.loadAnns(dt.getAnnIds(imgIds=[img['id']]))
                  if a['category_id'] in col and a['score'] >= score_thr]
        d_anns.sort(key=lambda a: -a['score'])
        pairs, lone_gt, lone_dt = match_image(g_anns, d_anns, gt, iou_thr)
        correct = 0
        for g, d in pairs:
            gi, di = col[g_anns[g]['category_id']], col[d_anns[d]['category_id']]
            matrix[gi, di] += 1
            correct += gi == di
        for g in lone_gt:
            matrix[col[g_anns[g]['category_id']], k] += 1
        for d in lone_dt:
            matrix[k, col[d_anns[d]['category_id']]] += 1
        n = len(g_anns) + len(d_anns)
        per_image.append(dict(image_id=img['id'], file_name=img.get('file_name', ''),
                              gt=len(g_anns), predictions=len(d_anns), correct=int(correct),
                              f1=2 * correct / n if n else 1.0))
    return matrix, per_image


def resolve_image(images_root: str | os.PathLike, file_name: str) -> Path:
    """An image of a COCO file under ``images_root``: its ``file_name`` is relative to the data
    root (``test_release/x.tif``) or, like the test id map, a bare name inside ``test_release/``."""
    root = Path(images_root)
    for path in (root / file_name, root / TEST_DIR / file_name):
        if path.is_file():
            return path
    raise FileNotFoundError(f'{root / file_name}: image not found (nor in {root / TEST_DIR})')


def _instances(anns: Sequence[dict], gt: COCO, col: dict[int, int], scored: bool
               ) -> InstanceData:
    """Annotations as the instances ``CellLocalVisualizer`` draws; it paints them as
    ``tools/predict.py`` does (higher score wins; GT, unscored, keeps the later annotation)."""
    out = InstanceData(labels=torch.tensor([col[a['category_id']] for a in anns],
                                           dtype=torch.long),
                       masks=[gt.annToRLE(a) for a in anns])
    if scored:
        out.scores = torch.tensor([a['score'] for a in anns], dtype=torch.float64)
    return out


def worst_images_figure(per_image: Sequence[dict], gt: COCO, dt: COCO, cat_ids: Sequence[int],
                        class_names: Sequence[str], palette: Sequence[Color],
                        images_root: str | os.PathLike, score_thr: float, n: int,
                        iou_thr: float = 0.5):
    """A figure of the ``n`` images of lowest F1 (most GT first on ties, F1 of matches at mask
    IoU >= ``iou_thr``): the image with GT contours beside the image with predicted contours."""
    col = {c: i for i, c in enumerate(cat_ids)}
    visualizer = CellLocalVisualizer.get_instance('cellseg_report')
    worst = sorted(per_image, key=lambda r: (r['f1'], -r['gt']))[:n]
    rows = []
    for r in worst:
        info = gt.loadImgs([r['image_id']])[0]
        image = read_image(resolve_image(images_root, info['file_name']))
        g = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[r['image_id']], iscrowd=False))
             if a['category_id'] in col]
        d = [a for a in dt.loadAnns(dt.getAnnIds(imgIds=[r['image_id']]))
             if a['category_id'] in col and a['score'] >= score_thr]
        panels = [(f"ground truth: {r['gt']}", visualizer.draw_instances(
                      image, _instances(g, gt, col, False), class_names, palette)),
                  (f"prediction: {r['predictions']}, {r['correct']} correct",
                   visualizer.draw_instances(image, _instances(d, gt, col, True), class_names,
                                             palette))]
        rows.append((f"{Path(info['file_name']).name}\nF1 {r['f1']:.2f}", panels))
    return plot_gallery(rows, legend=list(zip(class_names, palette)),
                        title=f'Worst {len(rows)} images by F1 (score >= {score_thr:g}, '
                              f'mask IoU >= {iou_thr:g})')


def write_eval_report(gt_json: str | os.PathLike, results: str | os.PathLike | Sequence[dict],
                      out_dir: str | os.PathLike, class_names: Sequence[str],
                      images_root: str | os.PathLike | None = None, *,
                      score_thr: float = 0.5, iou_thr: float = 0.5, worst: int = 4,
                      palette: Sequence[Color] | None = None) -> dict[str, Path]:
    """Evaluate a results file once (COCOeval, nuclei metrics) and ``write_report`` it.

    ``results``: mmdet's ``<prefix>.segm.json`` (CocoMetric with ``outfile_prefix``) or its list;
    category ids are the ground truth's, found by ``class_names``.
    """
    gt = _quiet_coco(gt_json)
    if not gt.getImgIds():
        raise ValueError(f'{gt_json}: holds no images')
    cat_ids = _category_ids(gt, class_names, gt_json)
    dt = _detections(gt, *_load_results(results))
    return write_report(run_cocoeval(gt, dt, cat_ids), nuclei_summary(gt, dt, cat_ids, score_thr),
                        out_dir, class_names, images_root, score_thr=score_thr,
                        iou_thr=iou_thr, worst=worst, palette=palette)


def write_report(coco_eval: COCOeval, nuclei: Mapping[str, float] | None,
                 out_dir: str | os.PathLike, class_names: Sequence[str],
                 images_root: str | os.PathLike | None = None, *,
                 score_thr: float = 0.5, iou_thr: float = 0.5, worst: int = 4,
                 palette: Sequence[Color] | None = None) -> dict[str, Path]:
    """Write the report (files in the module doc) into ``out_dir``; returns name -> path.

    ``coco_eval``: an accumulated segm COCOeval whose maxDets include 100; its ground truth and
    detections are the report's. ``nuclei``: ``NucleiMetrics.summary()`` of the detections
    scoring at least ``score_thr`` (classes 1..K in ``class_names`` order), computed here when
    None. ``images_root``: where the ground truth's ``file_name``s lie (the data root); without
    it there is no gallery.
    """
    out = Path(out_dir)
    gt, dt = coco_eval.cocoGt, coco_eval.cocoDt
    if coco_eval.params.iouType != 'segm' or MAX_DETS not in coco_eval.params.maxDets:
        raise ValueError(f'the report needs a segm evaluation at maxDets {MAX_DETS}, got '
                         f'{coco_eval.params.iouType} at {list(coco_eval.params.maxDets)}')
    cat_ids = _category_ids(gt, class_names, 'the ground truth')
    if nuclei is None:
        nuclei = nuclei_summary(gt, dt, cat_ids, score_thr)
    palette = list(palette) if palette else palette_for({}, len(class_names))
    ev = coco_eval
    written: dict[str, Path] = {}

    rows = per_class_table(ev, gt, dt, cat_ids, class_names)
    add_nuclei_columns(rows, nuclei)
    n_images = len(gt.getImgIds())
    markdown = table_markdown(rows, n_images) + '\n' + nuclei_markdown(nuclei, rows, score_thr)
    written['per_class.md'] = atomic_write_bytes(out / 'per_class.md', markdown.encode())
    written['per_class.csv'] = atomic_write_bytes(out / 'per_class.csv', _csv(
        rows, ['class', 'gt_instances', 'predictions', 'AP', 'AP50', 'PQ', 'F1']))

    i50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    m = ev.params.maxDets.index(MAX_DETS)
    index = {c: i for i, c in enumerate(ev.params.catIds)}
    precision = np.stack([ev.eval['precision'][i50, :, index[c], 0, m] for c in cat_ids])
    written['pr_curves.png'] = save_figure(plot_pr_curves(
        ev.params.recThrs, precision, class_names, palette, [r['AP50'] for r in rows[:-1]],
        title=f'Mask precision-recall at IoU 0.5 ({n_images} images, maxDets {MAX_DETS})'),
        out / 'pr_curves.png')

    matrix, per_image = confusion_and_f1(gt, dt, cat_ids, score_thr, iou_thr)
    row_labels = [*class_names, FALSE_POSITIVE]
    col_labels = [*class_names, MISSED]
    written['confusion.png'] = save_figure(plot_confusion(
        matrix, row_labels, col_labels,
        title=f'Matched instances (score >= {score_thr:g}, mask IoU >= {iou_thr:g})'),
        out / 'confusion.png')
    conf_rows = [{'gt \\ predicted': r, **{c: int(v) for c, v in zip(col_labels, line)}}
                 for r, line in zip(row_labels, matrix)]
    written['confusion.csv'] = atomic_write_bytes(
        out / 'confusion.csv', _csv(conf_rows, ['gt \\ predicted', *col_labels]))
    written['per_image.csv'] = atomic_write_bytes(out / 'per_image.csv', _csv(
        per_image, ['image_id', 'file_name', 'gt', 'predictions', 'correct', 'f1']))

    if images_root is not None and worst > 0:
        written['worst_images.png'] = save_figure(worst_images_figure(
            per_image, gt, dt, cat_ids, class_names, palette, images_root, score_thr, worst,
            iou_thr),
            out / 'worst_images.png')
    return written
