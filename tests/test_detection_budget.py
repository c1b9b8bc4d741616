"""Budgets by image area and the per-class cap (cellseg.models.detection_budget): what they keep,
that COCO's AP at 100 detections cannot tell the cap is there, and that prediction outputs do
not change with it; mixed-precision prediction."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from cellseg.models.detection_budget import area_budget, budgeted_cfg, keep_budget

REPO = Path(__file__).resolve().parents[1]


def test_area_budget_scales_with_pixels_above_its_floor() -> None:
    cfg = ConfigDict(max_per_img=500, max_per_img_per_mpx=8000, nms_pre=1000)
    assert area_budget(cfg, 'max_per_img', (256, 256)) == 525  # ceil(8000 * 0.065536)
    assert area_budget(cfg, 'max_per_img', (100, 100)) == 500  # the floor
    assert area_budget(cfg, 'max_per_img', (2500, 2000)) == 40000
    assert area_budget(cfg, 'nms_pre', (2500, 2000)) == 1000  # no _per_mpx: mmdet's meaning
    scaled = budgeted_cfg(cfg, ('nms_pre', 'max_per_img'), (1000, 1000))
    assert (scaled.nms_pre, scaled.max_per_img, cfg.max_per_img) == (1000, 8000, 500)
    plain = ConfigDict(max_per_img=500)
    assert budgeted_cfg(plain, ('max_per_img',), (5000, 5000)) is plain


def _detections(rng: np.random.Generator, n: int, k: int) -> InstanceData:
    scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)  # ties on purpose
    order = np.argsort(-scores, kind='stable')
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 30, (n, 2))
    return InstanceData(scores=torch.from_numpy(scores[order]),
                        labels=torch.from_numpy(rng.integers(0, k, n)[order]),
                        bboxes=torch.from_numpy(np.hstack([xy, xy + wh])[order]).float())


def test_keep_budget_keeps_each_class_s_best_and_every_high_score() -> None:
    rng = np.random.default_rng(0)
    dets = _detections(rng, 700, 4)
    cfg = ConfigDict(max_per_img=1000, max_per_class=100, uncapped_score=0.9)
    kept = keep_budget(dets, cfg, (256, 256))
    scores, labels = dets.scores.numpy(), dets.labels.numpy()
    expected = np.zeros(len(dets), bool)
    for c in range(4):
        idx = np.flatnonzero(labels == c)  # already in decreasing score, ties in input order
        expected[idx[:100]] = True
    expected |= scores >= 0.9
    assert len(kept) == expected.sum() < len(dets)
    np.testing.assert_array_equal(kept.scores.numpy(), scores[expected])
    np.testing.assert_array_equal(kept.labels.numpy(), labels[expected])
    assert len(keep_budget(dets, ConfigDict(max_per_img=50), (256, 256))) == 50
    assert keep_budget(dets, ConfigDict(max_per_img=1000), (256, 256)) is dets


def test_coco_ap_at_100_detections_is_the_same_with_the_per_class_cap() -> None:
    """COCOeval ranks each image's detections per category and counts the first maxDets:
    the cap removes only what it never counts."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(1)
    images, gts, full, capped = [], [], [], []
    cfg = ConfigDict(max_per_class=100, uncapped_score=0.95)
    for img_id in range(1, 4):
        images.append(dict(id=img_id, width=256, height=256))
        boxes, classes = [], []
        for _ in range(150):
            x, y, w, h = (*rng.uniform(0, 220, 2), *rng.uniform(6, 30, 2))
            c = int(rng.integers(1, 4))
            gts.append(dict(id=len(gts) + 1, image_id=img_id, category_id=c,
                            bbox=[x, y, w, h], area=w * h, iscrowd=0))
            # a detection of each cell, near it, sometimes of another class, and false ones
            boxes.append([x, y, x + w, y + h] + rng.normal(0, 1.5, 4))
            classes.append(c - 1 if rng.uniform() < 0.8 else int(rng.integers(0, 3)))
        noise = _detections(rng, 450, 3)
        scores = np.concatenate([np.round(rng.uniform(0.2, 1, 150), 2), noise.scores.numpy()])
        order = np.argsort(-scores, kind='stable')
        dets = InstanceData(
            scores=torch.from_numpy(scores[order].astype(np.float32)),
            labels=torch.from_numpy(np.concatenate([classes, noise.labels.numpy()])[order]),
            bboxes=torch.from_numpy(np.vstack([boxes, noise.bboxes.numpy()])[order]).float())
        for out, d in ((full, dets), (capped, keep_budget(dets, cfg, (256, 256)))):
            for s, c, b in zip(d.scores.tolist(), d.labels.tolist(), d.bboxes.tolist(),
                               strict=True):
                out.append(dict(image_id=img_id, category_id=c + 1, score=s,
                                bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]]))
    assert len(capped) < len(full)
    gt = COCO()
    gt.dataset = dict(images=images, annotations=gts,
                      categories=[dict(id=k, name=f'c{k}') for k in (1, 2, 3)])
    gt.createIndex()
    stats = []
    for dts in (full, capped):
        ev = COCOeval(gt, gt.loadRes(dts), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        stats.append(ev.stats.copy())
    assert stats[0][1] > 0.1  # AP50 at 100 detections: something to compare
    np.testing.assert_array_equal(stats[0][:3], stats[1][:3])  # AP, AP50, AP75 at 100


@pytest.fixture(scope='module')
def images(tiny_root: Path) -> list[Path]:
    return sorted((tiny_root / 'train').glob('*/image.tif'))[:4]


def _predicted(model: torch.nn.Module, paths: list[Path], thr: float) -> list[tuple]:
    from cellseg.apis.predict import predict_image

    out = []
    for p in paths:
        _, masks, labels, scores = predict_image(model, p, thr)
        out.append((labels, scores, [(c.y0, c.x0, c.pixels.tobytes()) for c in masks.crops]))
    return out


def test_the_class_cap_changes_no_prediction_output(tiny_checkpoint: Path,
                                                    images: list[Path]) -> None:
    """Predicting at a threshold, the cap never removes a detection the output keeps, however
    small it is set (load_model lowers uncapped_score to the threshold)."""
    from cellseg.apis.predict import load_model

    thr = 0.05
    plain = load_model(tiny_checkpoint, device='cpu', score_thr=thr)
    capped = load_model(tiny_checkpoint, device='cpu', score_thr=thr, cfg_options={
        'model.test_cfg.rcnn.max_per_class': 1, 'model.test_cfg.rcnn.uncapped_score': 0.9})
    assert capped.test_cfg.rcnn.uncapped_score == thr
    a, b = _predicted(plain, images, thr), _predicted(capped, images, thr)
    assert sum(len(x[0]) for x in a) > 4 * len(images)  # several per class and image
    for (la, sa, ca), (lb, sb, cb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(sa, sb)
        assert ca == cb


def test_mixed_precision_prediction_runs_the_float32_only_ops_in_float32(
        tiny_checkpoint: Path, images: list[Path]) -> None:
    """Under a bfloat16 autocast (what --amp gives on a CPU with native bfloat16; emulated
    elsewhere, so this runs on any CPU), mmcv's float32-only NMS and RoIAlign get float32 and the
    detections are float32 and close to float32 prediction's."""
    from cellseg.apis.predict import inference_precision, load_model

    assert inference_precision('cpu', False) is None
    assert inference_precision('cuda:0', True) is torch.float16
    thr = 0.05
    fp32 = load_model(tiny_checkpoint, device='cpu', score_thr=thr)
    bf16 = load_model(tiny_checkpoint, device='cpu', score_thr=thr)
    bf16.autocast_dtype = torch.bfloat16
    a, b = _predicted(fp32, images, thr), _predicted(bf16, images, thr)
    assert all(x[1].dtype == np.float32 for x in b)
    n_a, n_b = sum(len(x[0]) for x in a), sum(len(x[0]) for x in b)
    assert n_a > 0 and abs(n_a - n_b) <= max(2, 0.2 * n_a)


@pytest.mark.parametrize('native', [True, False])
def test_test_amp_turns_on_mmengine_s_autocast_only_where_it_pays(
        native: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """tools/test.py --amp: the test loop's fp16 flag (mmengine's autocast: bfloat16 on a CPU)
    where the CPU has native bfloat16; elsewhere float32, said once."""
    from mmengine.config import Config

    import cellseg.engine.optimizers.cpu_amp_optim_wrapper as wrapper
    from cellseg.apis.test_loop import use_mixed_precision

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(wrapper, 'cpu_has_bf16', lambda: native)
    cfg = Config(dict(test_cfg=dict(type='TestLoop')))
    assert use_mixed_precision(cfg) is native
    assert cfg.test_cfg.get('fp16', False) is native and cfg.test_cfg.type == 'TestLoop'
    assert ('no native bfloat16' in capsys.readouterr().err) is not native


def test_the_test_run_s_class_cap_follows_what_its_metrics_count() -> None:
    """tools/test.py sizes the per-class cap to the largest maxDets its COCO metrics count and
    keeps every detection its nuclei metric counts; a submission keeps the config's cap."""
    from mmengine.config import Config

    from cellseg.apis.test_loop import keep_what_the_metrics_count

    cfg = Config.fromfile(str(REPO / 'configs/cell_r50_scratch_tuned.py'))
    rcnn = cfg.model.test_cfg.rcnn
    assert (rcnn.max_per_class, rcnn.uncapped_score) == (100, 0.5)
    keep_what_the_metrics_count(cfg)  # AP at 100, nuclei metrics at 0.5: the config's own
    assert (rcnn.max_per_class, rcnn.uncapped_score) == (100, 0.5)
    cfg.test_evaluator[0].proposal_nums = (1, 10, 100, 1000)
    cfg.test_evaluator[1].score_thr = 0.3
    keep_what_the_metrics_count(cfg)
    assert (rcnn.max_per_class, rcnn.uncapped_score) == (1000, 0.3)
    submission = Config.fromfile(str(REPO / 'configs/cell_r50_scratch_tuned.py'))
    submission.test_evaluator = dict(type='CocoMetric', format_only=True, metric='segm')
    keep_what_the_metrics_count(submission)
    assert submission.model.test_cfg.rcnn.max_per_class == 100
