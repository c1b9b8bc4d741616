"""The ``eval`` item: COCO segm evaluation of 100 dense images (~300 detections each) by
``PerClassCocoMetric`` (mmdet's ``CocoMetric``) at maxDets 100, as validation runs it, and at 100
and 1000, as the test run does; and the nuclei metrics (PQ, AJI, Dice, mPQ, detection F1:
``NucleiMetric``'s ``cellseg.evaluation.coco_nuclei_metrics``) of the same detections against
the COCO evaluation's time, first evaluation and a later one."""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.speed_items.common import hw3_like, report

# the nuclei metrics may cost this share of the COCO segm evaluation at most
NUCLEI_SHARE_GOAL = 0.10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ground truth, when not the generated images."""
    parser.add_argument('--eval-gt',
                        help='COCO ground truth of the eval item (e.g. '
                        '../shared/data/consep/test_gt.json); detections are made from it as '
                        'from the default, 100 generated hw3-like images')
    parser.add_argument('--eval-pred',
                        help="a COCO results file of --eval-gt's images to evaluate instead of "
                        "the detections made from it (e.g. the results.segm.json of "
                        "tools/test.py --report: a trained model's real output)")


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


def eval_case(work: Path, gt_file: str | None = None, pred_file: str | None = None
              ) -> tuple[Path, Path]:
    """Ground truth (``gt_file``, else the first 100 hw3-like images) and detections of it
    (``pred_file``, else made from the ground truth and cached in the work dir)."""
    from cellseg.formats.coco_conversion import build_train_coco
    from cellseg.utils.fileio import atomic_write_json

    if pred_file:
        if not gt_file:
            raise SystemExit('--eval-pred needs --eval-gt, the ground truth of its images')
        return Path(gt_file).resolve(), Path(pred_file).resolve()
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


def nuclei_metrics_cost(gt: dict, preds: list[dict], repeats: int = 2) -> dict[str, Any]:
    """``coco_nuclei_metrics`` (what ``NucleiMetric`` runs) on the detections of results
    file ``preds`` against ground truth ``gt`` (a COCO dict), timed ``repeats`` times with one
    ground-truth cache: the first call decodes and paints the ground truth, later ones (the
    epochs of a validation) reuse it. The time includes grouping the results by image. Returns
    ``seconds`` (one per call) and the summary."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from cellseg.evaluation.coco_nuclei_metrics import coco_nuclei_metrics

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    cat_ids = sorted(coco.getCatIds())
    col = {c: k + 1 for k, c in enumerate(cat_ids)}
    cache: dict = {}
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        by_image: dict[int, list[dict]] = {}
        for p in preds:
            by_image.setdefault(p['image_id'], []).append(p)
        detections = {i: ([d['segmentation'] for d in ds], np.array([d['score'] for d in ds]),
                          np.array([col[d['category_id']] for d in ds], np.int64))
                      for i, ds in by_image.items()}
        summary = coco_nuclei_metrics(coco, detections, cat_ids, gt_cache=cache).summary()
        seconds.append(time.perf_counter() - start)
    return dict(seconds=seconds, summary=summary)


def coco_evaluate(gt_path: str | Path, predictions: list[dict],
                  proposal_nums: tuple[int, ...], repeats: int = 1
                  ) -> tuple[dict[str, float], list[float]]:
    """``PerClassCocoMetric(metric=['segm'], proposal_nums=...)`` of results-file ``predictions``
    against ``gt_path``. Returns the metric's results and the seconds of each of ``repeats``
    evaluations by one metric (its ``compute_metrics``: the results JSON written and loaded,
    COCOeval's evaluate, accumulate and summary); not loading the ground truth file."""
    import contextlib
    import io

    import pycocotools.mask as mask_utils

    from cellseg.evaluation.metrics import PerClassCocoMetric

    with contextlib.redirect_stdout(io.StringIO()):
        metric = PerClassCocoMetric(ann_file=str(gt_path), metric=['segm'],
                                    proposal_nums=proposal_nums)
    cats = metric._coco_api.cats
    classes = tuple(cats[k]['name'] for k in sorted(cats))  # the file's own, in id order
    metric.dataset_meta = dict(classes=classes)
    label = {k: i for i, k in enumerate(sorted(cats))}
    by_image: dict[int, list[dict]] = {i: [] for i in metric._coco_api.get_img_ids()}
    for p in predictions:
        by_image[p['image_id']].append(p)
    results = []
    for img_id, ps in by_image.items():
        boxes = np.array([mask_utils.toBbox(p['segmentation']) for p in ps],
                         np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        results.append((dict(img_id=img_id), dict(
            img_id=img_id, bboxes=boxes, scores=np.array([p['score'] for p in ps]),
            labels=np.array([label[p['category_id']] for p in ps], np.int64),
            masks=[dict(p['segmentation']) for p in ps])))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its summary
            out = metric.compute_metrics(results)
        seconds.append(time.perf_counter() - start)
    return out, seconds


def run(args: argparse.Namespace, work: Path) -> None:
    """The COCO metric as validation and as the test run evaluate, then the nuclei metrics, on
    the same detections; each evaluated twice by one metric, as a validation run's epochs do."""
    gt_path, pred_path = eval_case(work, args.eval_gt, args.eval_pred)
    preds = json.loads(pred_path.read_text())
    n_img = len({p['image_id'] for p in preds})
    val, t_val = coco_evaluate(gt_path, preds, (1, 10, 100), repeats=2)
    test, t_test = coco_evaluate(gt_path, preds, (1, 10, 100, 1000), repeats=2)
    report('eval', f'COCO segm evaluation, {n_img} images, {len(preds) / n_img:.0f} detections '
           'each (PerClassCocoMetric.compute_metrics; first / second evaluation)',
           f'{t_val[0]:.2f} / {t_val[1]:.2f} s at maxDets 100 (validation)',
           f'{t_test[0]:.2f} / {t_test[1]:.2f} s at 100 and 1000 (test)')
    keys = ('segm_mAP', 'segm_mAP_50')
    report('eval', 'AP, AP50 at 100 detections the same when 1000 are evaluated too',
           ', '.join(f'{k} {val[k]:.3f}/{test[k]:.3f}' for k in keys), '', 'equal',
           all(val[k] == test[k] for k in keys))

    nuc = nuclei_metrics_cost(json.loads(gt_path.read_text()), preds)
    first, again = nuc['seconds']
    s = nuc['summary']
    report('eval', f'nuclei metrics of the same {n_img} images (PQ, AJI, Dice, mPQ, F1, 4 '
           'classes; cellseg.evaluation.coco_nuclei_metrics, scores >= 0.5; first call / '
           'second, the ground truth cached)',
           f"{first:.3f} / {again:.3f} s (pq {s['pq']:.3f}, aji {s['aji']:.3f}, "
           f"mpq {s['mpq']:.3f})")
    for nuclei, seconds, what in (
            (first, t_test[0], 'the test run: maxDets 100 and 1000'),
            (first, t_val[0], 'first validation: maxDets 100'),
            (again, t_val[1], 'a later epoch of validation')):
        share = nuclei / seconds
        report('eval', f'nuclei metrics / COCO segm evaluation ({what})',
               f'{share:.3f} ({nuclei:.3f} s / {seconds:.2f} s)', '1.000',
               f'<= {NUCLEI_SHARE_GOAL:.2f}', share <= NUCLEI_SHARE_GOAL)
