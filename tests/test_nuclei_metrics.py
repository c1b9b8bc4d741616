"""Nuclei metrics (cellseg.evaluation.nuclei_metrics) and the label-folder command.

Expected values are worked out by hand from pixel counts in each test; a loop-over-pairs
transcription of HoVer-Net's get_fast_pq / get_fast_aji pins the vectorised code."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile

from cellseg.apis.label_folders import evaluate_label_folders
from cellseg.evaluation.nuclei_metrics import (
    NucleiMetrics,
    image_metrics,
)

REPO = Path(__file__).resolve().parents[1]


def box(img: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], value: int) -> None:
    """Paint rows [r0, r1) x cols [c0, c1) with value (area (r1 - r0) * (c1 - c0))."""
    img[rows[0]:rows[1], cols[0]:cols[1]] = value


def check(row: dict, **expected: float) -> None:
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key


def two_cells() -> np.ndarray:
    gt = np.zeros((10, 10), np.int32)
    box(gt, (1, 5), (1, 5), 1)  # A: 16 px
    box(gt, (5, 9), (5, 9), 2)  # B: 16 px
    return gt


# ---- per-image metrics on hand-made cases --------------------------------------------------

def test_perfect_match_scores_one_whatever_the_ids():
    gt = two_cells()
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))  # other, non-contiguous ids
    check(image_metrics(gt, pred), pq=1, dq=1, sq=1, aji=1, dice=1, tp=2, fp=0, fn=0)


def test_one_missed_cell():
    gt = two_cells()
    pred = np.zeros_like(gt)
    box(pred, (1, 5), (1, 6), 1)  # A' = 4x5 = 20 px over A (16): inter 16, union 20
    tp, fp, fn = 1, 0, 1
    dq = 2 * tp / (2 * tp + fp + fn)  # 2/3
    sq = 16 / 20
    aji = 16 / (20 + 16)  # B unpaired: its 16 px join the union
    dice = 2 * 16 / (32 + 20)
    check(image_metrics(gt, pred), tp=tp, fp=fp, fn=fn, dq=dq, sq=sq, pq=dq * sq, aji=aji,
          dice=dice)


def test_split_cell_into_two_halves():
    gt = np.zeros((6, 10), np.int32)
    box(gt, (0, 4), (0, 8), 1)  # 32 px
    pred = np.zeros_like(gt)
    box(pred, (0, 4), (0, 4), 1)  # left half, 16 px: IoU 16/32 = 0.5, not > 0.5
    box(pred, (0, 4), (4, 8), 2)  # right half, 16 px: IoU 0.5
    tp, fp, fn = 0, 2, 1
    # AJI: the gt takes the first of the two equal IoUs (pred 1): inter 16, union 32, and the
    # unused right half (16 px) joins the union.
    check(image_metrics(gt, pred), tp=tp, fp=fp, fn=fn, dq=0, sq=0, pq=0, aji=16 / (32 + 16),
          dice=2 * 32 / (32 + 32))


def test_merged_pair():
    gt = np.zeros((6, 10), np.int32)
    box(gt, (0, 4), (0, 5), 1)  # 20 px
    box(gt, (0, 4), (5, 8), 2)  # 12 px
    pred = np.zeros_like(gt)
    box(pred, (0, 4), (0, 8), 1)  # 32 px: IoU 20/32 = 0.625 with gt 1, 12/32 with gt 2
    tp, fp, fn = 1, 0, 1
    dq = 2 * tp / (2 * tp + fp + fn)
    # AJI: both gts take the merged pred, so its 32 px count twice in the union
    aji = (20 + 12) / (32 + 32)
    check(image_metrics(gt, pred), tp=tp, fp=fp, fn=fn, dq=dq, sq=20 / 32, pq=dq * 20 / 32,
          aji=aji, dice=1.0)


def test_empty_prediction_scores_zero():
    gt = two_cells()
    # tp 0, fn 2: dq = 0 / (0 + 0 + 1) = 0; no match so sq = 0 (HoVer-Net's sum / (tp + 1e-6));
    # aji = 0 / (16 + 16); dice = 0 / (32 + 0)
    check(image_metrics(gt, np.zeros_like(gt)), tp=0, fp=0, fn=2, pq=0, dq=0, sq=0, aji=0,
          dice=0)


def test_empty_ground_truth():
    pred = two_cells()
    # a prediction on an empty image: tp 0, fp 2 -> dq 0 / (0 + 1 + 0) = 0, sq 0, aji 0 / 32,
    # dice 0 / 32: all defined by HoVer-Net's formulas, all 0
    row = image_metrics(np.zeros_like(pred), pred)
    check(row, tp=0, fp=2, fn=0, pq=0, dq=0, sq=0, aji=0, dice=0)
    # both empty: every formula is 0/0 (HoVer-Net raises); the documented choice is 1.0
    empty = np.zeros((5, 5), np.uint16)
    check(image_metrics(empty, empty), pq=1, dq=1, sq=1, aji=1, dice=1, n_gt=0, n_pred=0)


def test_bad_label_images_are_refused():
    gt = two_cells()
    with pytest.raises(ValueError, match='integers'):
        image_metrics(gt, gt.astype(np.float32))
    with pytest.raises(ValueError, match='negative'):
        image_metrics(gt, -gt)
    with pytest.raises(ValueError, match='shape'):
        image_metrics(gt, gt[:5])
    with pytest.raises(ValueError, match='Munkres'):
        image_metrics(gt, gt, match_iou=0.3)


# ---- pinned to a loop-over-pairs transcription of HoVer-Net --------------------------------

def reference_pq_aji(true: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
    """get_fast_pq (match_iou 0.5) and get_fast_aji of hover_net metrics/stats_utils.py, one
    pair of masks at a time (SQ without the 1e-6, as the module computes it)."""
    t_ids = [i for i in np.unique(true) if i]
    p_ids = [i for i in np.unique(pred) if i]
    inter = np.zeros((len(t_ids), len(p_ids)))
    union = np.zeros_like(inter)
    for a, t in enumerate(t_ids):
        for b, p in enumerate(p_ids):
            tm, pm = true == t, pred == p
            inter[a, b] = (tm & pm).sum()
            union[a, b] = (tm | pm).sum()
    iou = inter / union
    paired = iou > 0.5
    tp = paired.sum()
    fp, fn = len(p_ids) - tp, len(t_ids) - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = iou[paired].sum() / tp
    # AJI
    key = inter / (union + 1.0e-6)
    best = np.argmax(key, axis=1)
    has = key.max(axis=1) > 0
    total_i = sum(inter[a, best[a]] for a in range(len(t_ids)) if has[a])
    total_u = sum(union[a, best[a]] for a in range(len(t_ids)) if has[a])
    used = {best[a] for a in range(len(t_ids)) if has[a]}
    total_u += sum((true == t_ids[a]).sum() for a in range(len(t_ids)) if not has[a])
    total_u += sum((pred == p_ids[b]).sum() for b in range(len(p_ids)) if b not in used)
    return dq * sq, dq, sq, total_i / total_u


def random_labels(rng: np.random.Generator, centres: np.ndarray, radii: np.ndarray,
                  ids: np.ndarray, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape, np.int32)
    for (cy, cx), r, i in zip(centres, radii, ids):  # later disks overwrite: irregular shapes
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return img


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_vectorised_pq_and_aji_match_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    n = 14
    centres = rng.uniform(4, 60, (n, 2))
    radii = rng.uniform(3, 7, n)
    gt = random_labels(rng, centres, radii, np.arange(1, n + 1))
    keep = rng.random(n) > 0.2  # some missed cells
    jitter = rng.normal(0, 1.5, (n, 2))
    extra = rng.uniform(4, 60, (3, 2))  # false positives
    pred = random_labels(rng, np.concatenate([(centres + jitter)[keep], extra]),
                         np.concatenate([radii[keep] * rng.uniform(0.7, 1.3, keep.sum()),
                                         [4, 5, 3]]),
                         rng.permutation(1000)[:keep.sum() + 3] + 5)  # ids in any order
    row = image_metrics(gt, pred)
    pq, dq, sq, aji = reference_pq_aji(gt, pred)
    assert row['tp'] > 0 and row['fp'] > 0 and row['fn'] > 0  # a case with all three
    assert 0 < aji < 1
    check(row, pq=pq, dq=dq, sq=sq, aji=aji)


def test_sparse_paths_match_the_pairwise_definition():
    # ~150 scattered instances of a few pixels each on 20x20, ids around 1e12: too many
    # (gt, pred) combinations for the dense joint histogram and ids too sparse for a lookup
    # table, so the sorted (np.unique) paths run
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 150, (20, 20))
    pred = np.where(rng.random((20, 20)) < 0.8, gt, rng.integers(0, 150, (20, 20)))
    gt, pred = gt * 10**10 + (gt > 0) * 7, pred * 10**10 + (pred > 0) * 3
    row = image_metrics(gt, pred)
    pq, dq, sq, aji = reference_pq_aji(gt, pred)
    assert row['n_gt'] > 100 and row['tp'] > 10 and row['fp'] > 10
    check(row, pq=pq, dq=dq, sq=sq, aji=aji)


# ---- data set: per-class PQ and detection F1 ------------------------------------------------

def paint(labels: np.ndarray, classes: np.ndarray, rows: tuple[int, int],
          cols: tuple[int, int], inst: int, cls: int) -> None:
    box(labels, rows, cols, inst)
    box(classes, rows, cols, cls)


def test_per_class_pq_pooled_and_per_image():
    # image 1: gt A (class 1), B (class 2), C (class 1); pred A' (1, IoU 0.8), B' exact but
    # called class 1, C' exact (class 1)
    gt1, gtc1 = np.zeros((12, 12), np.int32), np.zeros((12, 12), np.uint8)
    pr1, prc1 = np.zeros_like(gt1), np.zeros_like(gtc1)
    paint(gt1, gtc1, (0, 4), (0, 4), 1, 1)    # A 16 px
    paint(gt1, gtc1, (6, 10), (0, 4), 2, 2)   # B
    paint(gt1, gtc1, (0, 4), (6, 10), 3, 1)   # C
    paint(pr1, prc1, (0, 4), (0, 5), 1, 1)    # A' 20 px: IoU 16/20
    paint(pr1, prc1, (6, 10), (0, 4), 2, 1)   # B' as class 1
    paint(pr1, prc1, (0, 4), (6, 10), 3, 1)   # C'
    # image 2: gt D (class 2), pred D' exact (class 2) and E (class 1) where no cell is
    gt2, gtc2 = np.zeros((12, 12), np.int32), np.zeros((12, 12), np.uint8)
    pr2, prc2 = np.zeros_like(gt2), np.zeros_like(gtc2)
    paint(gt2, gtc2, (2, 6), (2, 6), 1, 2)
    paint(pr2, prc2, (2, 6), (2, 6), 1, 2)
    paint(pr2, prc2, (8, 11), (8, 11), 2, 1)
    m = NucleiMetrics()
    m.add(gt1, pr1, gtc1, prc1)
    m.add(gt2, pr2, gtc2, prc2)
    s = m.summary()
    # pooled (CoNIC mPQ+). class 1: gt {A, C}, pred {A', B', C', E}: tp 2, fp 2, fn 0
    dq1, sq1 = 2 * 2 / (2 * 2 + 2 + 0), (0.8 + 1.0) / 2
    # class 2: gt {B, D}, pred {D'}: tp 1, fp 0, fn 1 (B was called class 1)
    dq2, sq2 = 2 * 1 / (2 * 1 + 0 + 1), 1.0
    assert s['pq_class1'] == pytest.approx(dq1 * sq1)
    assert s['pq_class2'] == pytest.approx(dq2 * sq2)
    assert s['mpq'] == pytest.approx((dq1 * sq1 + dq2 * sq2) / 2)
    # PanNuke per image: image 1 has gt classes {1, 2}: class 1 tp 2, fp 1 (B'), fn 0,
    # class 2 tp 0 -> PQ 0; image 2 has gt class {2} only (E's class 1 is skipped): PQ 1
    img1 = (2 * 2 / (2 * 2 + 1) * sq1 + 0.0) / 2
    assert s['mpq_per_image'] == pytest.approx((img1 + 1.0) / 2)
    # class-agnostic PQ is per image then averaged: image 1 all matched (tp 3), image 2 tp 1 fp 1
    pq_img1 = 1.0 * (0.8 + 1 + 1) / 3
    pq_img2 = (2 * 1 / (2 * 1 + 1)) * 1.0
    assert s['pq'] == pytest.approx((pq_img1 + pq_img2) / 2)
    # a {label: class} mapping gives the same numbers as pixel class maps
    m2 = NucleiMetrics()
    m2.add(gt1, pr1, {1: 1, 2: 2, 3: 1}, {1: 1, 2: 1, 3: 1})
    m2.add(gt2, pr2, {1: 2}, {1: 2, 2: 1})
    assert m2.summary() == pytest.approx(s, nan_ok=True)


def test_class_absent_everywhere_is_nan_and_left_out_of_mpq():
    gt = two_cells()
    m = NucleiMetrics(classes=[1, 2, 3])
    m.add(gt, gt, (gt > 0).astype(np.uint8), (gt > 0).astype(np.uint8))  # all class 1
    s = m.summary()
    assert s['pq_class1'] == 1.0
    assert math.isnan(s['pq_class2']) and math.isnan(s['pq_class3'])
    assert s['mpq'] == 1.0
    with pytest.raises(ValueError, match='every image'):
        m.add(gt, gt)
    with pytest.raises(ValueError, match='pred_classes: shape'):  # a transposed class map
        m.add(gt[:, :8], gt[:, :8], np.ones((10, 8), np.uint8), np.ones((8, 10), np.uint8))


def square(img: np.ndarray, x: int, y: int, value: int) -> None:
    """5x5 square centred at column x, row y: its centroid is exactly (x, y)."""
    img[y - 2:y + 3, x - 2:x + 3] = value


def test_detection_and_classification_f1():
    gt, gtc = np.zeros((64, 64), np.int32), np.zeros((64, 64), np.uint8)
    pr, prc = np.zeros_like(gt), np.zeros_like(gtc)
    for i, (x, y, c) in enumerate([(10, 10, 1), (40, 10, 2), (10, 40, 1), (50, 35, 2),
                                   (25, 50, 2)], start=1):
        square(gt, x, y, i)
        square(gtc, x, y, c)
    for i, (x, y, c) in enumerate([(12, 10, 1),    # gt 1 at 2 px: paired, right class
                                   (40, 15, 1),    # gt 2 at 5 px: paired, wrong class
                                   (50, 50, 2),    # gt 4 at 15 px > 12: Munkres pairs it,
                                                   # the radius drops it (gt 3 is missed)
                                   (25, 52, 2)],   # gt 5 at 2 px: paired, right class
                                  start=1):
        square(pr, x, y, i)
        square(prc, x, y, c)
    m = NucleiMetrics()
    m.add(gt, pr, gtc, prc)
    s = m.summary()
    tp_d, fp_d, fn_d = 3, 1, 2
    assert s['f1_detection'] == pytest.approx(2 * tp_d / (2 * tp_d + fp_d + fn_d))
    assert s['type_accuracy'] == pytest.approx(2 / 3)
    # class 1: pairs with 1 on a side: (1, 1) tp, (2 -> 1) fp; unpaired gt 3 is fn_d
    assert s['f1_class1'] == pytest.approx(2 * 1 / (2 * 1 + 2 * 1 + 2 * 0 + 0 + 1))
    # class 2: (2 -> 1) fn, (2, 2) tp; unpaired pred 3 fp_d, unpaired gt 4 fn_d
    assert s['f1_class2'] == pytest.approx(2 * 1 / (2 * 1 + 2 * 0 + 2 * 1 + 1 + 1))
    plain = NucleiMetrics()  # without classes: the detection F1 alone
    plain.add(gt, pr)
    assert plain.summary()['f1_detection'] == s['f1_detection']
    assert 'mpq' not in plain.summary()
    wide = NucleiMetrics(radius=16)  # gt 4 - pred 3 now pair
    wide.add(gt, pr)
    assert wide.summary()['f1_detection'] == pytest.approx(2 * 4 / (2 * 4 + 0 + 1))


def test_a_batch_of_images_scores_as_its_images_one_by_one():
    """NucleiMetrics.add_overlap on many images at once (what the COCO path runs) gives the rows
    and summary of add() image by image; images of several shapes, one without ground truth,
    one without prediction."""
    from cellseg.evaluation.nuclei_metrics import overlap_of, sparse_labels_of

    rng = np.random.default_rng(4)
    gts, preds = [], []
    for k, shape in enumerate([(64, 64), (40, 64), (64, 30), (64, 64), (33, 50)]):
        n = 12
        centres = rng.uniform(4, 60, (n, 2)) * np.array(shape) / 64
        radii = rng.uniform(2, 6, n)
        gt = random_labels(rng, centres, radii, np.arange(1, n + 1), shape)
        pred = random_labels(rng, centres + rng.normal(0, 1.5, (n, 2)), radii,
                             rng.permutation(500)[:n] + 1, shape)
        gts.append(gt * (k != 1))  # image 1: no ground truth
        preds.append(pred * (k != 3))  # image 3: no prediction
    one_by_one, batch = NucleiMetrics(), NucleiMetrics()
    for gt, pred in zip(gts, preds):
        one_by_one.add(gt, pred, {int(i): int(i) % 3 + 1 for i in np.unique(gt)},
                       {int(i): int(i) % 3 + 1 for i in np.unique(pred)})
    gt_sl, pred_sl = sparse_labels_of(gts, 'gt'), sparse_labels_of(preds, 'pred')
    rows = batch.add_overlap(overlap_of(gt_sl, pred_sl), gt_sl.source % 3 + 1,
                             pred_sl.source % 3 + 1)
    assert len(rows) == 5
    for want, got in zip(one_by_one.rows, rows):
        check(got, **want)
    want, got = one_by_one.summary(), batch.summary()
    assert want.keys() == got.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12, nan_ok=True), key
    assert rows[1]['n_gt'] == 0 and rows[3]['n_pred'] == 0 and rows[0]['tp'] > 5


# ---- label images from detections ----------------------------------------------------------

def test_crop_masks_from_rles_equal_the_masks():
    """The run-based decoder of ``CropMasks.from_rles`` against pycocotools' masks: runs that
    go on past a column's end, full columns, empty masks, str/bytes/list counts."""
    from cellseg.structures.crop_masks import CropMasks
    from cellseg.structures.label_images import paint_labels

    rng = np.random.default_rng(11)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 24, size=2))
        masks = [rng.random((h, w)) < 0.3, np.zeros((h, w), bool), np.ones((h, w), bool)]
        wrap = np.zeros((h, w), bool)  # the bottom of one column and the top of the next
        wrap[int(rng.integers(0, h)):, 0] = True
        if w > 1:
            wrap[:int(rng.integers(1, h + 1)), 1:] = True
        masks.append(wrap)
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        rles[0]['counts'] = rles[0]['counts'].decode('ascii')
        rles[2] = {'size': [h, w], 'counts': [0, h * w]}  # uncompressed, all foreground
        for m, crop in zip(masks, CropMasks.from_rles(rles).crops):
            full = np.zeros((h, w), bool)
            full[crop.y0:crop.y1, crop.x0:crop.x1] = crop.pixels
            assert np.array_equal(full, m)
            px = crop.pixels  # the tight rectangle: its edge rows and columns hold pixels
            assert px.size == 0 or (px[0].any() and px[-1].any() and px[:, 0].any()
                                    and px[:, -1].any())
        scores = rng.random(len(masks))
        from_rles = paint_labels(CropMasks.from_rles(rles), scores)
        from_arrays = paint_labels(CropMasks.from_masks(masks, h, w), scores)
        assert all(np.array_equal(a, b) for a, b in zip(from_rles, from_arrays))
    with pytest.raises(ValueError, match='mask 1 has shape'):
        CropMasks.from_masks([np.zeros((3, 4), bool), np.zeros((4, 3), bool)], 3, 4)


# ---- the folder command ---------------------------------------------------------------------

def write_case(tmp_path: Path) -> tuple[Path, Path, Path, list[tuple[np.ndarray, ...]]]:
    rng = np.random.default_rng(3)
    gt_dir, pred_dir, cls_dir = tmp_path / 'gt', tmp_path / 'pred', tmp_path / 'gt_cls'
    for d in (gt_dir, pred_dir, cls_dir):
        d.mkdir()
    arrays = []
    for name in ('img_a', 'img_b', 'img_c'):
        centres, radii = rng.uniform(4, 60, (10, 2)), rng.uniform(3, 6, 10)
        gt = random_labels(rng, centres, radii, np.arange(1, 11)).astype(np.uint16)
        pred = random_labels(rng, centres + rng.normal(0, 1.5, (10, 2)), radii,
                             np.arange(1, 11)).astype(np.uint16)
        gtc = np.where(gt > 0, gt % 2 + 1, 0).astype(np.uint8)
        prc = np.where(pred > 0, (pred + (pred == 3)) % 2 + 1, 0).astype(np.uint8)
        tifffile.imwrite(gt_dir / f'{name}.tif', gt)
        tifffile.imwrite(cls_dir / f'{name}.tif', gtc)
        tifffile.imwrite(pred_dir / f'{name}_labels.tif', pred)  # predict's layout
        tifffile.imwrite(pred_dir / f'{name}_classes.tif', prc)
        arrays.append((gt, pred, gtc, prc))
    return gt_dir, pred_dir, cls_dir, arrays


def test_folder_command_gives_the_metric_numbers(tmp_path, capsys):
    gt_dir, pred_dir, cls_dir, arrays = write_case(tmp_path)
    result = evaluate_label_folders(gt_dir, pred_dir, gt_class_dir=cls_dir)
    direct = NucleiMetrics()
    rows = [direct.add(*a) for a in arrays]
    assert result['summary'] == pytest.approx(direct.summary(), nan_ok=True)
    assert 0 < result['summary']['pq'] < 1 and 'mpq' in result['summary']
    assert [r['image'] for r in result['images']] == ['img_a', 'img_b', 'img_c']
    for got, want in zip(result['images'], rows):
        assert {k: got[k] for k in want} == pytest.approx(want)
    # without class folders: class-agnostic keys only, same values
    plain = evaluate_label_folders(gt_dir, pred_dir)
    assert plain['summary']['pq'] == pytest.approx(result['summary']['pq'])
    assert 'mpq' not in plain['summary']
    # the command line writes the same summary as JSON
    spec = importlib.util.spec_from_file_location('eval_labels', REPO / 'tools/eval_labels.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'metrics.json'
    assert tool.main([str(gt_dir), str(pred_dir), '--gt-classes', str(cls_dir),
                      '--classes', '1', '2', '9', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"pq {result['summary']['pq']:.4f}" in ' '.join(printed.split())
    saved = json.loads(out.read_text())
    assert saved['summary']['pq'] == pytest.approx(result['summary']['pq'])
    assert saved['summary']['pq_class9'] is None  # NaN (no class 9 anywhere) is JSON null
    assert len(saved['images']) == 3
    assert [p.name for p in tmp_path.iterdir() if p.suffix == '.tmp'] == []


def test_class_maps_next_to_the_label_images(tmp_path):
    # a gt folder in predict's layout too: img_a.tif + img_a_classes.tif, class folder = itself
    gt_dir, pred_dir, cls_dir, arrays = write_case(tmp_path)
    for name in ('img_a', 'img_b', 'img_c'):
        (cls_dir / f'{name}.tif').rename(gt_dir / f'{name}_classes.tif')
    result = evaluate_label_folders(gt_dir, pred_dir, gt_class_dir=gt_dir)
    direct = NucleiMetrics()
    for a in arrays:
        direct.add(*a)
    assert result['summary'] == pytest.approx(direct.summary(), nan_ok=True)
    (gt_dir / 'img_b_classes.tif').unlink()  # img_b.tif itself must not pass for a class map
    with pytest.raises(FileNotFoundError, match='no class map for .img_b.'):
        evaluate_label_folders(gt_dir, pred_dir, gt_class_dir=gt_dir)
    with pytest.raises(ValueError, match='needs gt_class_dir'):
        evaluate_label_folders(gt_dir, pred_dir, pred_class_dir=pred_dir)
    with pytest.raises(ValueError, match='no label TIFF'):
        evaluate_label_folders(tmp_path / 'gt_cls', pred_dir)


def test_folder_command_errors_name_the_file(tmp_path):
    gt_dir, pred_dir, cls_dir, arrays = write_case(tmp_path)
    (pred_dir / 'img_b_labels.tif').unlink()
    with pytest.raises(FileNotFoundError, match='img_b.tif has no counterpart'):
        evaluate_label_folders(gt_dir, pred_dir)
    tifffile.imwrite(pred_dir / 'img_b_labels.tif', arrays[1][1])
    tifffile.imwrite(pred_dir / 'img_d_labels.tif', arrays[1][1])  # no gt for it
    with pytest.raises(FileNotFoundError, match='img_d_labels.tif has no counterpart'):
        evaluate_label_folders(gt_dir, pred_dir)
    (pred_dir / 'img_d_labels.tif').unlink()
    tifffile.imwrite(pred_dir / 'img_c_labels.tif', arrays[2][1][:40])
    with pytest.raises(ValueError, match='img_c_labels.tif: shape'):
        evaluate_label_folders(gt_dir, pred_dir)
    tifffile.imwrite(pred_dir / 'img_c_labels.tif', arrays[2][1].astype(np.float32))
    with pytest.raises(ValueError, match='img_c_labels.tif: a label image must hold integers'):
        evaluate_label_folders(gt_dir, pred_dir)
    tifffile.imwrite(pred_dir / 'img_c_labels.tif', -arrays[2][1].astype(np.int16))
    with pytest.raises(ValueError, match='img_c_labels.tif: a label image must not'):
        evaluate_label_folders(gt_dir, pred_dir)
    tifffile.imwrite(pred_dir / 'img_c_labels.tif', arrays[2][1])
    tifffile.imwrite(pred_dir / 'img_c.tif', arrays[2][1])  # two files for one key
    with pytest.raises(ValueError, match='both give the label image'):
        evaluate_label_folders(gt_dir, pred_dir)
    (pred_dir / 'img_c.tif').unlink()
    (cls_dir / 'img_a.tif').unlink()
    with pytest.raises(FileNotFoundError, match='no class map for'):
        evaluate_label_folders(gt_dir, pred_dir, gt_class_dir=cls_dir)
