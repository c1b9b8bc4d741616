"""Tiled inference, mask-aware TTA, the dense configs and the anchor statistics.

Tiling is checked against a fake, exactly predictable detector patched in for
``MaskRCNN.predict``: it reports every cell id visible in its input (channel 0 holds the
generated image's instance ids, channel 1 their classes) as one instance, scored by its visible
area. A cell cut by a tile border is then reported cut, as a real model would see it, and the
tiled result must equal the untiled one. TTA runs the tiny config's (randomly initialised) model
through the TTA config's pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.structures import InstanceData
from test_configs import changed_keys

import cellseg.datasets.transforms.load_cell_image_from_file  # noqa: F401  (registers LoadCellImageFromFile)
from cellseg.apis.config_helpers import use_tta
from cellseg.evaluation.anchor_stats import (
    MMDET_DEFAULT_ANCHORS,
    anchor_iou,
    load_boxes,
    suggest_anchors,
)
from cellseg.models.detectors.tiled_mask_rcnn import (
    TileConfig,
    TiledMaskRCNN,
    merge_tile_detections,
    tile_grid,
)
from cellseg.models.test_time_augs.mask_tta_model import MaskTTAModel, merge_views
from cellseg.structures.mask_crops import (
    Detections,
    MaskCrop,
    crops_from_masks,
    crops_to_tensor,
    intersection,
    rescale_detections,
)
from cellseg.testing.demo_data import render_image

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
CONFIGS = REPO / 'configs'
register_all_modules()


def fake_predict(self, batch_inputs, batch_data_samples, rescale=True):
    for x, sample in zip(batch_inputs, batch_data_samples):
        h, w = sample.img_shape[:2]
        ids = x[0, :h, :w].round().long()
        classes = x[1, :h, :w].round().long()
        present = torch.unique(ids)
        present = present[present > 0]
        masks = ids[None] == present[:, None, None]
        area = masks.sum(dim=(1, 2)).float()
        rows, cols = masks.any(dim=2), masks.any(dim=1)
        y0 = rows.float().argmax(dim=1)
        y1 = h - rows.flip(1).float().argmax(dim=1)
        x0 = cols.float().argmax(dim=1)
        x1 = w - cols.flip(1).float().argmax(dim=1)
        sample.pred_instances = InstanceData(
            bboxes=torch.stack([x0, y0, x1, y1], dim=1).float(), scores=area / (area + 100),
            labels=torch.stack([classes[m].max() - 1 for m in masks]) if len(masks) else
            torch.zeros(0, dtype=torch.long), masks=masks)
    return batch_data_samples


def rendered(height: int, width: int, n_cells: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """(RGBA image, fake detector input (1, 3, H, W) padded to 32)."""
    rgba, ids, class_of_id = render_image(np.random.default_rng(seed), height, width, n_cells)
    ph, pw = -(-height // 32) * 32, -(-width // 32) * 32
    x = torch.zeros((1, 3, ph, pw))
    x[0, 0, :height, :width] = torch.from_numpy(ids.astype(np.float32))
    x[0, 1, :height, :width] = torch.from_numpy(class_of_id[ids].astype(np.float32))
    return rgba, x


def sample_of(height: int, width: int, x: torch.Tensor) -> DetDataSample:
    return DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                       scale_factor=(1.0, 1.0),
                                       batch_input_shape=tuple(x.shape[2:])))


def tiny_model(max_per_img: int = 100, **changes) -> torch.nn.Module:
    cfg = Config.fromfile(TINY)
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # an untrained model still yields instances
    cfg.model.test_cfg.rcnn.max_per_img = max_per_img
    cfg.model.update(changes)
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def iou(a: MaskCrop, b: MaskCrop) -> float:
    inter = intersection(a, b)
    return inter / (a.pixels.sum() + b.pixels.sum() - inter)


def assert_same_cells(got: Detections, want: Detections, min_iou: float) -> None:
    """Each wanted instance matches exactly one instance of ``got`` (same class, mask IoU)."""
    assert len(got) == len(want)
    used = set()
    for i in range(len(want)):
        hits = [j for j in range(len(got)) if got.labels[j] == want.labels[i]
                and iou(got.crops[j], want.crops[i]) >= min_iou]
        assert len(hits) == 1, (i, hits)
        assert hits[0] not in used
        used.add(hits[0])


def test_tiled_prediction_equals_untiled(monkeypatch: pytest.MonkeyPatch) -> None:
    height, width, tile = 300, 420, 160
    _, x = rendered(height, width, 90, seed=3)
    monkeypatch.setattr(MaskRCNN, 'predict', fake_predict)
    # overlap above the longest generated cell (class4: up to ~57 px) plus the border margin
    model = tiny_model(1000, type='TiledMaskRCNN', tile_cfg=dict(size=tile, overlap=64,
                                                                 border_margin=2, batch_size=3))
    assert isinstance(model, TiledMaskRCNN)
    want = Detections.from_instances(
        fake_predict(None, x, [sample_of(height, width, x)])[0].pred_instances)
    (out,) = model.predict(x, [sample_of(height, width, x)])
    masks = out.pred_instances.masks
    assert isinstance(masks, list) and masks[0]['size'] == [height, width]
    got = Detections.from_instances(out.pred_instances)

    # the test means something: many cells cross a tile border
    tiles = tile_grid(height, width, tile, 64)
    assert len(tiles) == 12
    crossing = sum(any(c.y0 < y1 <= c.y1 - 1 or c.x0 < x1 <= c.x1 - 1 for _, _, y1, x1 in tiles)
                   for c in want.crops)
    assert crossing >= 20, crossing
    assert len(want) >= 80
    assert_same_cells(got, want, min_iou=0.9)
    np.testing.assert_allclose(np.sort(got.scores), np.sort(want.scores), rtol=1e-6)


def test_small_images_are_predicted_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    _, x = rendered(100, 120, 10, seed=1)
    monkeypatch.setattr(MaskRCNN, 'predict', fake_predict)
    model = tiny_model(type='TiledMaskRCNN', tile_cfg=dict(size=128, overlap=48))
    (out,) = model.predict(x, [sample_of(100, 120, x)])
    assert isinstance(out.pred_instances.masks, torch.Tensor)  # MaskRCNN's own output


def test_tiled_mask_rcnn_runs_the_real_model() -> None:
    model = tiny_model(30, type='TiledMaskRCNN', tile_cfg=dict(size=96, overlap=32,
                                                               batch_size=4))
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        (out,) = model.predict(x, [sample_of(150, 200, x)])
    pred = out.pred_instances
    assert 0 < len(pred) <= model.test_cfg.rcnn.max_per_img
    assert all(r['size'] == [150, 200] for r in pred.masks)
    assert (pred.bboxes[:, 2] <= 200 + 1e-3).all() and (pred.bboxes[:, 3] <= 150 + 1e-3).all()
    assert (pred.scores[:-1] >= pred.scores[1:]).all()


def dets(*items: tuple[tuple[int, int, int, int], float, int]) -> Detections:
    """Detections of filled rectangles ``(y0, x0, y1, x1), score, label``."""
    crops = [MaskCrop(np.ones((y1 - y0, x1 - x0), bool), y0, x0) for (y0, x0, y1, x1), _, _
             in items]
    boxes = [(x0, y0, x1, y1) for (y0, x0, y1, x1), _, _ in items]
    return Detections(np.array(boxes, np.float32).reshape(-1, 4),
                      np.array([s for _, s, _ in items], np.float32),
                      np.array([lab for _, _, lab in items], np.int64), crops)


def test_merge_keeps_a_cut_cell_when_no_tile_holds_it_whole() -> None:
    tiles = [(0, 0, 100, 100), (0, 60, 100, 160)]
    # cell A is cut by tile 0's right border, and the neighbour missed it: the piece stays
    # cell B lies in the overlap, found whole by both tiles: kept once, at the higher score
    left = dets(((10, 80, 30, 100), 0.9, 0), ((50, 65, 70, 85), 0.6, 1))
    right = dets(((50, 65, 70, 85), 0.7, 1))
    merged = merge_tile_detections(tiles, [left, right], 100, 160, border_margin=2,
                                   merge_thr=0.5)
    assert len(merged) == 2
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7])
    # the same cell of another class is another detection, as Mask R-CNN's per-class NMS has it
    right = dets(((50, 65, 70, 85), 0.7, 2))
    merged = merge_tile_detections(tiles, [left, right], 100, 160, 2, 0.5)
    assert len(merged) == 3


def test_rescale_maps_crops_to_the_original_image() -> None:
    d = rescale_detections(dets(((4, 8, 12, 16), 0.5, 0)), (2.0, 2.0), 50, 50)
    assert (d.crops[0].y0, d.crops[0].x0, d.crops[0].y1, d.crops[0].x1) == (2, 4, 6, 8)
    assert d.bboxes.tolist() == [[4, 2, 8, 6]]


def test_tile_config_is_checked() -> None:
    with pytest.raises(ValueError, match='overlap'):
        TileConfig(size=128, overlap=128)
    with pytest.raises(ValueError, match='border_margin'):
        TileConfig(size=128, overlap=4, border_margin=4)


class NoModel(torch.nn.Module):
    """Stands for the wrapped model where only the merging is tested."""

    def test_step(self, data: dict) -> list:
        raise AssertionError('not called')


def test_mask_tta_merges_rle_views_back_into_the_image() -> None:
    """A flip-equivariant detector seen unflipped and flipped merges to its own prediction."""
    _, x = rendered(120, 150, 25, seed=5)
    x = x[:, :, :120, :150]
    want = fake_predict(None, x, [sample_of(120, 150, x)])[0].pred_instances
    flipped = fake_predict(None, x.flip(-1), [sample_of(120, 150, x)])[0].pred_instances
    samples = []
    for pred, flip in ((want, False), (flipped, True)):
        d = Detections.from_instances(pred)
        s = sample_of(120, 150, x)
        s.set_metainfo(dict(flip=flip, flip_direction='horizontal' if flip else None))
        s.pred_instances = d.to_instances(120, 150, 'rle')  # as TiledMaskRCNN gives them
        samples.append(s)
    tta = MaskTTAModel(module=NoModel(), tta_cfg=dict(score='max'))
    (out,) = tta.merge_preds([samples])
    assert isinstance(out.pred_instances.masks, list) and out.flip is False
    got = Detections.from_instances(out.pred_instances)
    assert_same_cells(got, Detections.from_instances(want), min_iou=1.0)


def test_mask_tta_returns_masks_and_flipping_the_input_flips_them(tmp_path: Path) -> None:
    cfg = Config.fromfile(CONFIGS / 'cell_r50_dense_tta.py')
    rgba, _ = rendered(96, 128, 12, seed=7)
    paths = []
    for name, img in (('x', rgba), ('hx', rgba[:, ::-1])):
        paths.append(tmp_path / f'{name}.tif')
        tifffile.imwrite(paths[-1], np.ascontiguousarray(img), photometric='rgb')
    pipeline = Compose(cfg.tta_pipeline)
    # 30 detections: pasting masks is most of the time on a busy CPU
    tta = MODELS.build(dict(cfg.tta_model, module=tiny_model(max_per_img=30)))
    outs = []
    for i, path in enumerate(paths):
        data = pseudo_collate([pipeline(dict(img_path=str(path), img_id=i))])
        assert len(data['inputs']) == 4  # none, horizontal, vertical, both
        with torch.no_grad():
            (out,) = tta.test_step(data)
        outs.append(out.pred_instances)
    a, b = outs
    # masks come as the model's mask head gives them: COCO RLEs from the configs' ChunkedMaskHead
    assert isinstance(a.masks, list) and all(m['size'] == [96, 128] for m in a.masks)
    masks_a = crops_to_tensor(crops_from_masks(a.masks), 96, 128)
    masks_b = crops_to_tensor(crops_from_masks(b.masks), 96, 128)
    assert len(a) > 0 and masks_a.flatten(1).any(dim=1).sum() > 0

    def key(pred: InstanceData, masks: torch.Tensor, flip: bool) -> list:
        masks = masks.flip(-1) if flip else masks
        return sorted((int(lab), round(float(s), 5), m.numpy().tobytes())
                      for lab, s, m in zip(pred.labels, pred.scores, masks))
    assert key(b, masks_b, flip=True) == key(a, masks_a, flip=False)


def test_merge_views_votes_pixels_and_averages_scores() -> None:
    one = dets(((0, 0, 10, 10), 0.8, 0))
    two = dets(((0, 0, 10, 12), 0.6, 0), ((30, 30, 40, 40), 0.9, 1))
    merged = merge_views([one, two], match_iou=0.5, vote_thr=1.0, score='mean')
    assert merged.scores.tolist() == pytest.approx([0.7, 0.45])
    assert merged.crops[0].pixels.shape == (10, 10)  # pixels both views hold
    assert merge_views([one, two], score='max').scores.tolist() == pytest.approx([0.9, 0.8])


def test_use_tta_wraps_the_model_and_swaps_the_pipeline() -> None:
    cfg = Config.fromfile(CONFIGS / 'cell_r50_dense_tta.py')
    use_tta(cfg)
    assert cfg.model.type == 'MaskTTAModel' and cfg.model.module.type == 'TiledMaskRCNN'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    with pytest.raises(ValueError, match='cell_r50.py: --tta needs tta_model and tta_pipeline'):
        use_tta(Config.fromfile(CONFIGS / 'cell_r50.py'))


def test_dense_configs_change_only_what_they_say() -> None:
    assert changed_keys('cell_r50_dense.py', 'cell_r50.py') == {
        'model.rpn_head.anchor_generator.scales[0]', 'model.rpn_head.anchor_generator.scales[1]',
        'model.rpn_head.anchor_generator.scales[2]', 'model.rpn_head.anchor_generator.ratios[0]',
        'model.rpn_head.anchor_generator.ratios[2]',
        'model.train_cfg.rpn_proposal.nms_pre', 'model.train_cfg.rpn_proposal.max_per_img',
        'model.test_cfg.rpn.nms_pre', 'model.test_cfg.rpn.max_per_img',
        'model.test_cfg.rcnn.max_per_img', 'model.test_cfg.rcnn.score_thr'}
    tiled = changed_keys('cell_r50_dense_tiled.py', 'cell_r50_dense.py')
    assert {k.split('.')[0] for k in tiled} == {'model'}
    assert {k for k in tiled if k.startswith('model.')} == {'model.type'} | {
        f'model.tile_cfg.{k}' for k in ('size', 'overlap', 'border_margin', 'merge_thr',
                                        'batch_size')}
    tta = changed_keys('cell_r50_dense_tta.py', 'cell_r50_dense_tiled.py')
    assert {k.split('.')[0].split('[')[0] for k in tta} == {'tta_model', 'tta_pipeline'}


def test_anchor_suggestion_fits_small_boxes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    size = rng.uniform(8, 40, 500)
    ratio = np.exp(rng.normal(0, 0.4, 500))
    anns = [dict(id=i + 1, image_id=1, category_id=1, iscrowd=0,
                 bbox=[0, 0, float(s / np.sqrt(r)), float(s * np.sqrt(r))])
            for i, (s, r) in enumerate(zip(size, ratio))]
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(dict(images=[dict(id=1)], annotations=anns,
                                    categories=[dict(id=1, name='class1')])))
    wh = load_boxes(path).wh
    suggested = suggest_anchors(wh)
    assert len(suggested['scales']) * len(suggested['ratios']) <= 9
    assert min(suggested['scales']) * 4 <= 16  # the smallest anchor reaches small cells
    new, old = anchor_iou(wh, suggested), anchor_iou(wh, MMDET_DEFAULT_ANCHORS)
    assert (new >= 0.7).mean() > (old >= 0.7).mean() + 0.2
    assert (new >= 0.3).mean() > 0.95


def test_crops_read_masks_in_either_form() -> None:
    m = torch.zeros((2, 20, 30), dtype=torch.bool)
    m[0, 3:7, 10:25] = True
    crops = crops_from_masks(m)
    rles = Detections(np.zeros((2, 4), np.float32), np.zeros(2, np.float32),
                      np.zeros(2, np.int64), crops).to_instances(20, 30).masks
    again = crops_from_masks(rles)
    assert [(c.y0, c.x0, c.pixels.shape) for c in again] == [(3, 10, (4, 15)), (0, 0, (0, 0))]
