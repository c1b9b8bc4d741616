"""The list evaluator against the references: ``PerClassCocoMetric`` (mmdet's ``CocoMetric``) gives
pycocotools' own COCOeval summary at 100 detections per image and, from the same run, the one at
1000 and per-class AP50 equal to COCOeval restricted to the class; ``NucleiMetric`` gives
``NucleiMetrics`` run on label images built here independently (full-size masks painted in score
order). Also ``metric_items``, ``format_only``, no predictions at all, and the evaluation report
from the metrics' own evaluation equal to the report of the results file.

The case is generated: dense images of cells (``render_image``), predictions that move, shrink,
relabel or miss cells and add false detections at lower scores, one image holding one class
only with more than 100 detections of it, so maxDets 100 and 1000 differ."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellseg.evaluation import eval_report
from cellseg.evaluation.metrics import NucleiMetric, PerClassCocoMetric
from cellseg.evaluation.nuclei_metrics import NucleiMetrics
from cellseg.formats import hw3
from cellseg.structures.rle import encode_instances
from cellseg.testing.synthetic_cells import render_image

CLASSES = ('class1', 'class2', 'class3', 'class4')
NUCLEI_ITEMS = ('pq', 'dq', 'sq', 'aji', 'dice', 'mpq', 'f1_detection')


def make_case(tmp_path: Path, n_images: int = 4, height: int = 150, width: int = 180,
              n_cells: int = 70, seed: int = 0) -> tuple[Path, list[dict]]:
    """(COCO ground-truth file, per image {img_id, shape, masks (N, H, W) bool, scores,
    labels (0-based)}). Image 1 holds class 1 only and ~2 detections per cell (>100)."""
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for image_id in range(1, n_images + 1):
        _, ids, class_of_id = render_image(np.random.default_rng([seed, image_id]), height,
                                           width, n_cells, classes=(1,) if image_id == 1 else None)
        images.append(dict(id=image_id, file_name=f'img{image_id}.tif', height=height,
                           width=width))
        masks, scores, labels = [], [], []
        for inst in encode_instances(ids):
            k = int(class_of_id[inst['id']])
            anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=k, iscrowd=0,
                             segmentation=inst['segmentation'], area=inst['area'],
                             bbox=inst['bbox']))
            mask = ids == inst['id']
            if rng.random() < 0.08:  # missed
                continue
            moved = np.roll(mask, tuple(rng.integers(-1, 2, size=2)), (0, 1))
            if rng.random() < 0.2:  # a thinner mask: a lower IoU
                moved &= np.roll(moved, 1, 0) & np.roll(moved, 1, 1)
            masks.append(moved)
            scores.append(rng.uniform(0.3, 1.0))
            labels.append(k - 1 if rng.random() < 0.85 else int(rng.integers(0, 4)))
            if image_id == 1 or rng.random() < 0.5:  # a false detection nearby
                masks.append(np.roll(mask, tuple(rng.integers(8, 25, size=2)), (0, 1)))
                scores.append(rng.uniform(0.02, 0.7))
                labels.append(k - 1 if image_id == 1 else int(rng.integers(0, 4)))
        preds.append(dict(img_id=image_id, shape=(height, width),
                          masks=np.array(masks, bool).reshape(-1, height, width),
                          scores=np.array(scores, np.float32),
                          labels=np.array(labels, np.int64)))
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=hw3.categories(CLASSES))))
    return path, preds


def rles_of(masks: np.ndarray) -> list[dict]:
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def data_samples(preds: list[dict], as_rles: bool = False) -> list[dict]:
    """What the test loop hands ``process``: masks as mmdet's bool tensor, or as the COCO RLE
    list ChunkedMaskHead and TiledMaskRCNN return."""
    out = []
    for p in preds:
        rles = rles_of(p['masks'])
        boxes = np.array([mask_utils.toBbox(r) for r in rles], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = rles if as_rles else torch.from_numpy(p['masks'])
        out.append(dict(img_id=p['img_id'], ori_shape=p['shape'], pred_instances=dict(
            bboxes=torch.from_numpy(boxes), scores=torch.from_numpy(p['scores']),
            labels=torch.from_numpy(p['labels']), masks=masks)))
    return out


def run_metric(metric, preds: list[dict], as_rles: bool = False) -> dict:
    metric.dataset_meta = dict(classes=CLASSES)
    samples = data_samples(preds, as_rles)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def coco_metric(gt_path: Path, preds: list[dict], **kwargs) -> dict:
    return run_metric(PerClassCocoMetric(ann_file=str(gt_path), **kwargs), preds)


def nuclei_metric(gt_path: Path, preds: list[dict], as_rles: bool = False, **kwargs) -> dict:
    return run_metric(NucleiMetric(ann_file=str(gt_path), **kwargs), preds, as_rles)


def results_of(preds: list[dict]) -> list[dict]:
    """The predictions as a COCO results list (category ids 1..4)."""
    results = []
    for p in preds:
        for rle, score, label in zip(rles_of(p['masks']), p['scores'], p['labels']):
            results.append(dict(image_id=p['img_id'], category_id=int(label) + 1,
                                score=float(score),
                                segmentation=dict(size=rle['size'],
                                                  counts=rle['counts'].decode())))
    return results


def pycocotools_eval(gt_path: Path, preds: list[dict], max_dets: list[int] | None = None,
                     cat_ids: list[int] | None = None) -> COCOeval:
    """pycocotools' COCOeval, summarised, with default parameters (maxDets 1, 10, 100) unless
    given."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(results_of(preds)), 'segm')
        if max_dets:
            ev.params.maxDets = max_dets
        if cat_ids:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def pycocotools_stats(gt_path: Path, preds: list[dict], cat_ids: list[int] | None = None
                      ) -> np.ndarray:
    return pycocotools_eval(gt_path, preds, cat_ids=cat_ids).stats


@pytest.fixture(scope='module')
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    return make_case(tmp_path_factory.mktemp('cell_coco_metric'))


def test_segm_ap_equals_pycocotools_summary(case) -> None:
    gt_path, preds = case
    per_class = [(p['labels'] == 0).sum() for p in preds]
    assert per_class[0] > 100, 'one image needs >100 detections of a class for maxDets'
    stats = pycocotools_stats(gt_path, preds)
    got = coco_metric(gt_path, preds, metric=['segm'], proposal_nums=(1, 10, 100, 1000))
    # the case tells maxDets 100 and 1000 apart, so maxDets 100 is what is compared
    assert got['coco/segm_mAP_50'] != got['coco/segm_mAP_50_maxdets1000']
    # mmdet rounds its numbers to 3 decimals
    assert got['coco/segm_mAP'] == round(stats[0], 3)
    assert got['coco/segm_mAP_50'] == round(stats[1], 3)
    assert got['coco/segm_mAP_75'] == round(stats[2], 3)
    # the numbers at 1000, from the same run, are those of a COCOeval at maxDets 1000: its
    # summary's AP50 (stats[1], at maxDets[2]; stats[0] is always at 100) and the mean of its
    # valid precisions over every IoU threshold, the way summarize() takes AP
    ev = pycocotools_eval(gt_path, preds, [1, 10, 1000])
    assert got['coco/segm_mAP_50_maxdets1000'] == round(ev.stats[1], 3)
    precision = ev.eval['precision'][..., 0, 2]
    assert got['coco/segm_mAP_maxdets1000'] == round(precision[precision > -1].mean(), 3)
    # evaluating up to 1000 leaves mmdet's numbers at 100 as they are without it
    at100 = coco_metric(gt_path, preds, metric=['segm'])
    assert at100 == {k: v for k, v in got.items() if 'maxdets' not in k}


def test_per_class_ap_equals_cocoeval_of_the_class(case) -> None:
    gt_path, preds = case
    got = coco_metric(gt_path, preds, metric=['bbox', 'segm'], classwise=True)
    for k, name in enumerate(CLASSES, start=1):
        stats = pycocotools_stats(gt_path, preds, cat_ids=[k])
        assert got[f'coco/segm_{name}_mAP'] == round(stats[0], 3), name
        assert got[f'coco/segm_{name}_mAP_50'] == round(stats[1], 3), name
    assert f'coco/bbox_{CLASSES[0]}_mAP_50' in got


def reference_label_image(masks: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                          thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Label and class images the plain way: full-size masks above ``thr`` painted in
    increasing score order (the scores of the case are distinct)."""
    inst = np.zeros(masks.shape[1:], np.int32)
    cls = np.zeros(masks.shape[1:], np.int32)
    for rank, i in enumerate(np.argsort(scores)):
        if scores[i] >= thr:
            inst[masks[i]] = rank + 1
            cls[masks[i]] = classes[i]
    return inst, cls


def reference_nuclei(gt_path: Path, preds: list[dict], thr: float) -> dict:
    gt = json.loads(gt_path.read_text())
    metrics = NucleiMetrics(classes=[1, 2, 3, 4])
    for p in preds:
        anns = [a for a in gt['annotations'] if a['image_id'] == p['img_id']]
        gt_masks = np.array([mask_utils.decode(a['segmentation']).astype(bool) for a in anns])
        gt_inst, gt_cls = reference_label_image(
            gt_masks.reshape(-1, *p['shape']), np.arange(len(anns), dtype=float),
            np.array([a['category_id'] for a in anns]), -1)
        pred_inst, pred_cls = reference_label_image(p['masks'], p['scores'], p['labels'] + 1,
                                                    thr)
        metrics.add(gt_inst, pred_inst, gt_cls, pred_cls)
    return metrics.summary()


@pytest.mark.parametrize('as_rles', [False, True], ids=['tensor-masks', 'rle-masks'])
def test_nuclei_metrics_equal_nuclei_metrics_on_label_images(case, as_rles: bool) -> None:
    gt_path, preds = case
    for thr in (0.5, 0.3):
        ref = reference_nuclei(gt_path, preds, thr)
        got = nuclei_metric(gt_path, preds, as_rles, classwise=True, score_thr=thr)
        for key in NUCLEI_ITEMS:
            assert got[f'nuclei/{key}'] == pytest.approx(ref[key], abs=5.1e-5), (thr, key)
        for k, name in enumerate(CLASSES, start=1):
            for got_key, ref_key in ((f'pq_{name}', f'pq_class{k}'),
                                     (f'f1_{name}', f'f1_class{k}')):
                assert got[f'nuclei/{got_key}'] == pytest.approx(ref[ref_key], abs=5.1e-5,
                                                                 nan_ok=True), (thr, got_key)
        assert 0.2 < got['nuclei/pq'] < 0.95 and 0 < got['nuclei/mpq'] < 1  # a non-trivial case
    assert ref['pq'] != reference_nuclei(gt_path, preds, 0.5)['pq']  # the threshold matters


def test_nuclei_keys_without_classwise(case) -> None:
    gt_path, preds = case
    got = nuclei_metric(gt_path, preds)
    assert list(got) == [f'nuclei/{k}' for k in NUCLEI_ITEMS]  # per-class keys only classwise


def test_second_evaluation_reuses_the_ground_truth(case) -> None:
    """The ground-truth label images are built once per ground truth, as validation runs the
    same metric every epoch; the numbers stay those of a fresh metric."""
    gt_path, preds = case
    metric = NucleiMetric(ann_file=str(gt_path), classwise=True)
    metric.dataset_meta = dict(classes=CLASSES)
    outs, cached = [], []
    for _ in range(2):
        metric.process({}, data_samples(preds))
        outs.append(metric.evaluate(len(preds)))
        cached.append(dict(metric._gt_cache))
    # one batch of images holds every image's ground truth, built by the first evaluation only
    (key, gt), = cached[0].items()
    assert len(key[0]) == len(preds) and gt[0].n_images == len(preds)
    assert cached[1][key] is gt
    assert outs[0] == outs[1]


def test_metric_items_are_honoured(case) -> None:
    """Issue 14: the metric reported everything whatever metric_items named."""
    gt_path, preds = case
    got = coco_metric(gt_path, preds, metric=['bbox', 'segm'], metric_items=['mAP_50', 'mAP_s'])
    assert list(got) == ['coco/bbox_mAP_50', 'coco/bbox_mAP_s', 'coco/segm_mAP_50',
                         'coco/segm_mAP_s']
    full = coco_metric(gt_path, preds, metric=['segm'])
    assert got['coco/segm_mAP_50'] == full['coco/segm_mAP_50']
    nuclei = nuclei_metric(gt_path, preds, metric_items=['pq', 'aji'])
    assert list(nuclei) == ['nuclei/pq', 'nuclei/aji']
    assert nuclei['nuclei/pq'] == nuclei_metric(gt_path, preds)['nuclei/pq']
    with pytest.raises(ValueError, match=r"metric_items \['AR'\] not supported"):
        NucleiMetric(ann_file=str(gt_path), metric_items=['pq', 'AR'])
    with pytest.raises(ValueError, match='three increasing maxDets'):
        PerClassCocoMetric(metric=['segm'], proposal_nums=(100, 1000))


def test_format_only_writes_results_without_metrics(case, tmp_path: Path) -> None:
    gt_path, preds = case
    prefix = tmp_path / 'out' / 'results'
    prefix.parent.mkdir()
    got = coco_metric(gt_path, preds, metric=['segm'], format_only=True,
                      outfile_prefix=str(prefix))
    assert got == {}
    written = json.loads(Path(f'{prefix}.segm.json').read_text())
    assert len(written) == sum(len(p['scores']) for p in preds)


def test_images_without_predictions_count_as_empty(case) -> None:
    gt_path, preds = case
    nothing = [dict(copy.deepcopy(p), masks=p['masks'][:0], scores=p['scores'][:0],
                    labels=p['labels'][:0]) for p in preds]
    got = coco_metric(gt_path, nothing, metric=['bbox', 'segm'], classwise=True,
                      proposal_nums=(1, 10, 100, 1000))
    # mmdet reports nothing then; every AP a run with predictions reports is 0
    assert set(got) == set(coco_metric(gt_path, preds, metric=['bbox', 'segm'], classwise=True,
                                       proposal_nums=(1, 10, 100, 1000)))
    assert set(got.values()) == {0.0}
    nuclei = nuclei_metric(gt_path, nothing)
    assert nuclei['nuclei/pq'] == nuclei['nuclei/aji'] == nuclei['nuclei/f1_detection'] == 0.0


# ---- the evaluation report ----------------------------------------------------------------------

def report_inputs(case, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(gt json, results json as mmdet writes it, images root holding the case's images)."""
    import tifffile

    gt_path, preds = case
    root = tmp_path / 'images'
    root.mkdir()
    results = []
    for p in preds:
        tifffile.imwrite(root / f"img{p['img_id']}.tif", np.full((*p['shape'], 3), 90, np.uint8))
        for rle, score, label in zip(rles_of(p['masks']), p['scores'], p['labels']):
            results.append(dict(image_id=p['img_id'], category_id=int(label) + 1,
                                score=float(score), segmentation=dict(
                                    size=rle['size'], counts=rle['counts'].decode())))
    results_path = tmp_path / 'results.segm.json'
    results_path.write_text(json.dumps(results))
    return gt_path, results_path, root


def test_report_holds_the_nuclei_metrics(case, tmp_path: Path) -> None:
    import csv

    gt_path, results_path, _ = report_inputs(case, tmp_path)
    thr = 0.3
    eval_report.write_eval_report(gt_path, results_path, tmp_path / 'r', CLASSES,
                                  score_thr=thr)
    ref = reference_nuclei(gt_path, case[1], thr)
    md = (tmp_path / 'r' / 'per_class.md').read_text()
    assert 'scoring at least 0.3' in md and 'overlaps resolved by score' in md
    header = '| PQ | DQ | SQ | AJI | Dice | mPQ | F1 detection |'
    values = md.split(header)[1].splitlines()[2]
    assert values == '| ' + ' | '.join(f'{ref[k]:.4f}' for k in NUCLEI_ITEMS) + ' |'
    with open(tmp_path / 'r' / 'per_class.csv', newline='') as f:
        table = list(csv.DictReader(f))
    for k, r in enumerate(table[:4], start=1):
        assert r['PQ'] == f"{ref[f'pq_class{k}']:.4f}" and r['F1'] == f"{ref[f'f1_class{k}']:.4f}"
    assert table[4]['class'] == 'mean' and table[4]['PQ'] == f"{ref['mpq']:.4f}"
    # the metric reports the same numbers at the same threshold
    got = nuclei_metric(gt_path, case[1], score_thr=thr)
    assert [f'{got[f"nuclei/{k}"]:.4f}' for k in NUCLEI_ITEMS] == values.strip('| ').split(' | ')


def test_report_of_the_metrics_own_evaluation_equals_the_report_of_the_file(
        case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What tools/test.py --report does: the report takes the COCOeval and the nuclei summary
    the test loop's metrics computed, evaluating nothing again, and writes what evaluating the
    results file would."""
    gt_path, results_path, root = report_inputs(case, tmp_path)
    _, preds = case
    coco = PerClassCocoMetric(ann_file=str(gt_path), metric=['bbox', 'segm'],
                              proposal_nums=(1, 10, 100, 1000))
    nuclei = NucleiMetric(ann_file=str(gt_path), classwise=True, score_thr=0.3)
    for metric in (coco, nuclei):
        run_metric(metric, preds)
    calls = []
    monkeypatch.setattr(COCOeval, 'evaluate', lambda self: calls.append(self))
    monkeypatch.setattr(NucleiMetrics, 'summary', lambda self: calls.append(self))
    eval_report.write_report(coco.coco_evals['segm'], nuclei.summary, tmp_path / 'run',
                             CLASSES, images_root=root, score_thr=0.3, worst=1)
    assert calls == []
    monkeypatch.undo()
    eval_report.write_eval_report(gt_path, results_path, tmp_path / 'file', CLASSES,
                                  images_root=root, score_thr=0.3, worst=1)
    for name in ('per_class.md', 'per_class.csv', 'confusion.csv', 'per_image.csv'):
        assert (tmp_path / 'run' / name).read_text() == (tmp_path / 'file' / name).read_text()


def test_report_gallery_title_names_the_iou_threshold(case, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: the gallery said 'mask IoU >= 0.5' whatever iou_thr the matching used."""
    gt_path, results_path, root = report_inputs(case, tmp_path)
    titles = []
    real = eval_report.plot_gallery

    def spy(rows, legend=(), panel_in=3.5, title=''):
        titles.append(title)
        return real(rows[:1], legend, 1.0, title)

    monkeypatch.setattr(eval_report, 'plot_gallery', spy)
    eval_report.write_eval_report(gt_path, results_path, tmp_path / 'r', CLASSES,
                                  images_root=root, iou_thr=0.3, worst=2)
    assert len(titles) == 1 and 'mask IoU >= 0.3' in titles[0], titles
