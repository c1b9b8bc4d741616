"""The ``eval`` item: COCO segm evaluation of 100 dense images (~300 detections each) at maxDets
1000, ``CellCocoMetric(backend='pycocotools')`` against ``backend='faster_coco_eval'``; and the
nuclei metrics (PQ, AJI, Dice, mPQ, detection F1: ``cellseg.evaluation.nuclei_metrics``) of the
same detections, label images built from them, against the COCO evaluation's time."""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.references import coco_evaluate
from benchmarks.speed_items.common import hw3_like, report

# the nuclei metrics may cost this share of the COCO segm evaluation at most
NUCLEI_SHARE_GOAL = 0.10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ground truth, when not the generated images."""
    parser.add_argument('--eval-gt',
                        help='COCO ground truth of the eval item (e.g. '
                        '../shared/data/consep/test_gt.json); detections are made from it as '
                        'from the default, 100 generated hw3-like images')


def dense_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """~300 detections per image: every cell found again, slightly shifted, grown or shrunk
    (scores high), and as many false detections, cells moved to where none is (scores low)."""
    import cv2
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in gt['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    kernel = np.ones((3, 3), np.uint8)
    preds = []
    for img in gt['images']:
        anns = by_image.get(img['id'], [])
        if not anns:
            continue
        masks = mask_utils.decode([a['segmentation'] for a in anns])  # H x W x n
        out, labels, scores = [], [], []
        for j, a in enumerate(anns):
            for fake in (False, True):
                m = masks[..., j]
                if fake:
                    m = np.roll(m, (int(rng.integers(20, 60)), int(rng.integers(20, 60))), (0, 1))
                else:
                    m = np.roll(m, tuple(int(v) for v in rng.integers(-2, 3, size=2)), (0, 1))
                    op = rng.integers(3)
                    if op == 1:
                        m = cv2.dilate(m, kernel)
                    elif op == 2:
                        m = cv2.erode(m, kernel)
                out.append(m)
                labels.append(a['category_id'] if rng.random() < 0.9 or fake
                              else int(rng.integers(1, 5)))
                scores.append(float(rng.uniform(0.05, 0.6) if fake else rng.uniform(0.3, 1.0)))
        rles = mask_utils.encode(np.asfortranarray(np.stack(out, axis=2)))
        for rle, k, s in zip(rles, labels, scores):
            preds.append(dict(image_id=img['id'], category_id=k, score=round(s, 4),
                              segmentation=dict(size=rle['size'],
                                                counts=rle['counts'].decode('ascii'))))
    return preds


def eval_case(work: Path, gt_file: str | None = None) -> tuple[Path, Path]:
    """Ground truth (``gt_file``, else the first 100 hw3-like images) and the detections of it,
    cached in the work dir."""
    from cellseg.formats.coco_conversion import build_train_coco
    from cellseg.utils.fileio import atomic_write_json

    if gt_file:
        gt_path = Path(gt_file).resolve()
        digest = hashlib.sha1(gt_path.read_bytes()).hexdigest()[:12]
        pred_path = work / f'eval_pred_{gt_path.stem}_{digest}.json'
        if not pred_path.is_file():
            atomic_write_json(pred_path, dense_predictions(json.loads(gt_path.read_text())))
        return gt_path, pred_path
    gt_path, pred_path = work / 'eval_gt100.json', work / 'eval_pred100.json'
    if not (gt_path.is_file() and pred_path.is_file()):
        gt = build_train_coco(hw3_like(work))
        keep = {im['id'] for im in gt['images'][:100]}
        gt = dict(gt, images=gt['images'][:100],
                  annotations=[a for a in gt['annotations'] if a['image_id'] in keep])
        atomic_write_json(gt_path, gt)
        atomic_write_json(pred_path, dense_predictions(gt))
    return gt_path, pred_path


def nuclei_metrics_cost(gt: dict, preds: list[dict]) -> dict[str, Any]:
    """The nuclei metrics of every image of ``gt``, timed by part: the ground truth's label and
    class images from its RLEs, the detections' (scores >= 0.5, higher scores painted over lower
    ones, as predict writes them), and ``NucleiMetrics`` (``add`` per image with class maps,
    then ``summary``). Returns the seconds of each part and the summary."""
    from cellseg.evaluation.nuclei_metrics import NucleiMetrics
    from cellseg.evaluation.nuclei_metrics import detections_to_label_image as to_labels

    gt_of: dict[int, list[dict]] = {}
    pred_of: dict[int, list[dict]] = {}
    for a in gt['annotations']:
        gt_of.setdefault(a['image_id'], []).append(a)
    for p in preds:
        pred_of.setdefault(p['image_id'], []).append(p)
    metrics = NucleiMetrics(classes=[1, 2, 3, 4])
    t_gt = t_pred = t_metrics = 0.0
    for img in gt['images']:
        shape = (img['height'], img['width'])
        anns, dets = gt_of.get(img['id'], []), pred_of.get(img['id'], [])
        start = time.perf_counter()
        gt_inst, gt_cls = to_labels([a['segmentation'] for a in anns], [1.0] * len(anns),
                                    [a['category_id'] for a in anns], score_thr=0.0, shape=shape)
        mid = time.perf_counter()
        pred_inst, pred_cls = to_labels([d['segmentation'] for d in dets],
                                        [d['score'] for d in dets],
                                        [d['category_id'] for d in dets], shape=shape)
        end = time.perf_counter()
        metrics.add(gt_inst, pred_inst, gt_cls, pred_cls)
        t_gt, t_pred, t_metrics = (t_gt + mid - start, t_pred + end - mid,
                                   t_metrics + time.perf_counter() - end)
    start = time.perf_counter()
    summary = metrics.summary()
    t_metrics += time.perf_counter() - start
    return dict(gt_labels=t_gt, pred_labels=t_pred, metrics=t_metrics, summary=summary)


def run(args: argparse.Namespace, work: Path) -> None:
    """Both COCO backends, then the nuclei metrics, on the same detections."""
    gt_path, pred_path = eval_case(work, args.eval_gt)
    preds = json.loads(pred_path.read_text())
    n_img = len({p['image_id'] for p in preds})
    ref, t_ref = coco_evaluate(gt_path, preds, 'pycocotools')
    fast, t_fast = coco_evaluate(gt_path, preds, 'faster_coco_eval')
    keys = ('segm_mAP', 'segm_mAP_50', 'segm_mAP_maxdets1000', 'segm_mAP_50_maxdets1000')
    same = all(round(ref[k], 3) == round(fast[k], 3) for k in keys)
    report('eval', f'COCO segm evaluation, {n_img} images, {len(preds) / n_img:.0f} detections '
           'each, maxDets 1000 (loadRes + evaluate + accumulate)',
           f'{t_fast:.1f} s faster_coco_eval', f'{t_ref:.1f} s pycocotools')
    report('eval', 'speed-up', f'{t_ref / t_fast:.1f}x', '1x', '>= 3x', t_ref / t_fast >= 3)
    report('eval', 'AP, AP50 (at 100 and 1000 detections) identical to 3 decimals',
           ', '.join(f'{k} {fast[k]:.4f}/{ref[k]:.4f}' for k in keys), 'pycocotools', 'equal',
           same)

    nuc = nuclei_metrics_cost(json.loads(gt_path.read_text()), preds)
    total = nuc['gt_labels'] + nuc['pred_labels'] + nuc['metrics']
    s = nuc['summary']
    report('eval', f'nuclei metrics of the same {n_img} images (PQ, AJI, Dice, mPQ, F1, 4 '
           'classes; '
           'label images by cellseg.evaluation.nuclei_metrics.detections_to_label_image, '
           'scores >= 0.5)',
           f"{total:.2f} s: ground-truth label images {nuc['gt_labels']:.2f} s, detections' "
           f"{nuc['pred_labels']:.2f} s, NucleiMetrics {nuc['metrics']:.2f} s (pq "
           f"{s['pq']:.3f}, aji {s['aji']:.3f}, mpq {s['mpq']:.3f})")
    for seconds, backend in ((t_fast, 'faster_coco_eval, what validation runs'),
                             (t_ref, 'pycocotools, what tools/test.py runs')):
        share = total / seconds
        report('eval', f'nuclei metrics / COCO segm evaluation ({backend})',
               f'{share:.3f} ({total:.2f} s / {seconds:.1f} s)', '1.000',
               f'<= {NUCLEI_SHARE_GOAL:.2f}', share <= NUCLEI_SHARE_GOAL)
