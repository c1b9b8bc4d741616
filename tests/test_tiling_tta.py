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
from mmdet.structures.bbox import bbox_flip
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.structures import InstanceData
from test_configs import changed_keys

import cellseg.datasets.transforms.load_cell_image_from_file  # noqa: F401  (registers LoadCellImageFromFile)
from cellseg.apis.anchor_stats import (
    MMDET_DEFAULT_ANCHORS,
    anchor_iou,
    load_boxes,
    suggest_anchors,
)
from cellseg.apis.test_loop import use_tta
from cellseg.datasets.transforms.rot90 import Rot90
from cellseg.models.detectors.tiled_mask_rcnn import (
    TileConfig,
    TiledMaskRCNN,
    merge_tile_detections,
    tile_grid,
)
from cellseg.models.test_time_augs.mask_tta_model import MaskTTAModel, merge_views, to_original
from cellseg.structures.crop_masks import CropMasks, MaskCrop, rotated_shape, trim
from cellseg.structures.detections import Detections, rotate_boxes
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
    inter = a.overlap(b)
    return inter / (a.pixels.sum() + b.pixels.sum() - inter)


def assert_same_cells(got: Detections, want: Detections, min_iou: float) -> None:
    """Each wanted instance matches exactly one instance of ``got`` (same class, mask IoU)."""
    assert len(got) == len(want)
    used = set()
    for i in range(len(want)):
        hits = [j for j in range(len(got)) if got.labels[j] == want.labels[i]
                and iou(got.masks.crops[j], want.masks.crops[i]) >= min_iou]
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
                   for c in want.masks.crops)
    assert crossing >= 20, crossing
    assert len(want) >= 80
    assert_same_cells(got, want, min_iou=0.9)
    np.testing.assert_allclose(np.sort(got.scores), np.sort(want.scores), rtol=1e-6)


def test_a_tiled_image_keeps_more_cells_than_any_cap_and_says_where_a_cap_was_reached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """90 cells, tiles capped at 12 detections: every cell the tiles found is kept (none cut to
    the cap), and each tile that returned 12 is logged; a tile_cfg.max_per_img cut is logged
    with its count."""
    import cellseg.models.detectors.tiled_mask_rcnn as tiled

    height, width, tile, cap = 300, 420, 160, 12

    def capped_predict(self, batch_inputs, batch_data_samples, rescale=True):
        for sample in fake_predict(self, batch_inputs, batch_data_samples, rescale):
            best = sample.pred_instances.scores.argsort(descending=True)[:cap]
            sample.pred_instances = sample.pred_instances[best]
        return batch_data_samples

    _, x = rendered(height, width, 90, seed=3)
    monkeypatch.setattr(MaskRCNN, 'predict', capped_predict)
    logged = []
    monkeypatch.setattr(tiled, 'print_log', lambda msg, **kw: logged.append(msg))
    model = tiny_model(cap, type='TiledMaskRCNN', tile_cfg=dict(size=tile, overlap=64))
    (out,) = model.predict(x, [sample_of(height, width, x)])
    per_tile = [Detections.from_instances(
        capped_predict(None, x[:, :, y0:y1, x0:x1], [sample_of(y1 - y0, x1 - x0, x)])[0]
        .pred_instances) for y0, x0, y1, x1 in tile_grid(height, width, tile, 64)]
    full_tiles = sum(len(d) == cap for d in per_tile)
    assert full_tiles >= 3
    assert len(out.pred_instances) > 3 * cap  # far more than the cap: nothing cut to it
    assert len(logged) == full_tiles
    assert all('returned 12 detections, the most test_cfg.rcnn.max_per_img allows' in m
               for m in logged)

    logged.clear()
    model.tile_cfg = TileConfig(size=tile, overlap=64, max_per_img=20)
    (out,) = model.predict(x, [sample_of(height, width, x)])
    assert len(out.pred_instances) == 20
    (cut,) = [m for m in logged if 'tile_cfg.max_per_img' in m]
    assert 'kept the 20 best of' in cut


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
    # each tile is capped, the merged image is not
    n_tiles = len(tile_grid(150, 200, 96, 32))
    assert 0 < len(pred) <= n_tiles * model.test_cfg.rcnn.max_per_img
    assert all(r['size'] == [150, 200] for r in pred.masks)
    assert (pred.bboxes[:, 2] <= 200 + 1e-3).all() and (pred.bboxes[:, 3] <= 150 + 1e-3).all()
    assert (pred.scores[:-1] >= pred.scores[1:]).all()


def dets(*items: tuple[tuple[int, int, int, int], float, int], shape: tuple[int, int] = (100, 160)
         ) -> Detections:
    """Detections of filled rectangles ``(y0, x0, y1, x1), score, label`` in an image of
    ``shape``."""
    crops = [MaskCrop(np.ones((y1 - y0, x1 - x0), bool), y0, x0) for (y0, x0, y1, x1), _, _
             in items]
    boxes = [(x0, y0, x1, y1) for (y0, x0, y1, x1), _, _ in items]
    return Detections(np.array(boxes, np.float32).reshape(-1, 4),
                      np.array([s for _, s, _ in items], np.float32),
                      np.array([lab for _, _, lab in items], np.int64),
                      CropMasks.from_crops(crops, *shape))


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
    d = dets(((4, 8, 12, 16), 0.5, 0), shape=(100, 100)).rescaled((2.0, 2.0), 50, 50)
    c = d.masks.crops[0]
    assert (c.y0, c.x0, c.y1, c.x1) == (2, 4, 6, 8) and d.shape == (50, 50)
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
        s.pred_instances = d.to_instances('rle')  # as TiledMaskRCNN gives them
        samples.append(s)
    tta = MaskTTAModel(module=NoModel(), tta_cfg=dict(score='max'))
    (out,) = tta.merge_preds([samples])
    assert isinstance(out.pred_instances.masks, list) and out.flip is False
    got = Detections.from_instances(out.pred_instances)
    assert_same_cells(got, Detections.from_instances(want), min_iou=1.0)


def test_mask_tta_returns_masks_and_flipping_the_input_flips_them(tmp_path: Path) -> None:
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch_dense_tta.py')
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
    masks_a = CropMasks.from_rles(a.masks, 96, 128).to_bool_tensor()
    masks_b = CropMasks.from_rles(b.masks, 96, 128).to_bool_tensor()
    assert len(a) > 0 and masks_a.flatten(1).any(dim=1).sum() > 0

    def key(pred: InstanceData, masks: torch.Tensor, flip: bool) -> list:
        masks = masks.flip(-1) if flip else masks
        return sorted((int(lab), round(float(s), 5), m.numpy().tobytes())
                      for lab, s, m in zip(pred.labels, pred.scores, masks))
    assert key(b, masks_b, flip=True) == key(a, masks_a, flip=False)


# the eight symmetries of the square as the 8-view TTA makes them: a turn by k quarter turns
# (np.rot90), then a flip in one of RandomFlip's directions
VIEWS = [(k, d) for k in (0, 1) for d in (None, 'horizontal', 'vertical', 'diagonal')]


def numpy_view(img: np.ndarray, k: int, direction: str | None) -> np.ndarray:
    """``img`` (H, W, ...) as view ``(k, direction)`` sees it, by numpy alone."""
    img = np.rot90(img, k)
    if direction in ('horizontal', 'diagonal'):
        img = img[:, ::-1]
    if direction in ('vertical', 'diagonal'):
        img = img[::-1]
    return img


def crop_key(c: MaskCrop) -> tuple:
    return c.y0, c.x0, c.pixels.shape, c.pixels.tobytes()


def box_of(c: MaskCrop) -> list[list[float]]:
    return [[c.x0, c.y0, c.x1, c.y1]]


def test_every_view_of_a_crop_and_its_inverse_is_the_identity() -> None:
    height, width = 13, 20  # not square: a quarter turn swaps the sides
    image = np.zeros((height, width), bool)
    image[2:9, 3:15] = np.random.default_rng(0).random((7, 12)) < 0.6  # no symmetry
    crop = trim(image)
    box = np.array(box_of(crop), np.float32)
    views = set()
    for k, direction in VIEWS:
        view = numpy_view(image, k, direction)
        vh, vw = view.shape
        assert (vh, vw) == rotated_shape(height, width, k)
        got = crop.turned(height, width, k)
        vbox = rotate_boxes(box, height, width, k)
        if direction:
            got = got.flipped(vh, vw, direction)
            vbox = bbox_flip(torch.from_numpy(vbox), (vh, vw), direction).numpy()
        # the helpers move the crop and its box as the image moves
        assert crop_key(got) == crop_key(trim(view)), (k, direction)
        assert vbox.tolist() == box_of(got), (k, direction)
        # and back: unflip in the view, then turn back
        back, back_box = got, vbox
        if direction:
            back = back.flipped(vh, vw, direction)
            back_box = bbox_flip(torch.from_numpy(back_box), (vh, vw), direction).numpy()
        back = back.turned(vh, vw, -k)
        back_box = rotate_boxes(back_box, vh, vw, -k)
        assert crop_key(back) == crop_key(crop), (k, direction)
        assert back_box.tolist() == box.tolist(), (k, direction)
        views.add((view.shape, view.tobytes()))
    assert len(views) == 8  # eight different views
    for k in (2, 3, -1):  # the other turns, as np.rot90 counts them
        turned = crop.turned(height, width, k)
        assert crop_key(turned) == crop_key(trim(np.rot90(image, k)))
        assert rotate_boxes(box, height, width, k).tolist() == box_of(turned)
        back = turned.turned(*rotated_shape(height, width, k), -k)
        assert crop_key(back) == crop_key(crop)


def test_each_view_of_the_8_view_pipeline_moves_a_marked_region_with_the_image(
        tmp_path: Path) -> None:
    """The config's transforms move a marked region; ``to_original`` (how ``MaskTTAModel`` maps
    a view's predictions back) brings its crop and box in each view back where they were."""
    height, width = 40, 64
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[5:12, 30:50] = 255
    rgb[5:25, 30:36] = 255  # an L: no view maps it onto itself
    rgb[30, 60] = 255
    marked = trim(rgb[..., 0] > 0)
    path = tmp_path / 'marked.tif'
    tifffile.imwrite(path, rgb, photometric='rgb')
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch_dense_tta8.py')
    data = Compose(cfg.tta_pipeline)(dict(img_path=str(path), img_id=0))
    assert len(data['inputs']) == 8
    views, turns = set(), []
    for img, sample in zip(data['inputs'], data['data_samples']):
        region = trim(img.numpy().any(axis=0))  # the region as the model sees it
        assert tuple(sample.img_shape) == tuple(sample.ori_shape) == img.shape[1:]
        dets = Detections(np.array(box_of(region), np.float32), np.ones(1, np.float32),
                          np.zeros(1, np.int64),
                          CropMasks.from_crops([region], *img.shape[1:]))
        back, shape = to_original(dets, sample)
        assert shape == (height, width)
        assert crop_key(back.masks.crops[0]) == crop_key(marked), sample.metainfo
        assert back.bboxes.tolist() == box_of(marked), sample.metainfo
        views.add(crop_key(region))
        turns.append(sample.rot90)
    assert len(views) == 8 and sorted(turns) == [0] * 4 + [1] * 4


def test_rot90_turns_the_image_and_its_shapes_and_refuses_what_it_cannot_turn() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = Rot90(k=1).transform(dict(img=img, img_shape=(2, 3), ori_shape=(2, 3),
                                    scale_factor=(2.0, 0.5),
                                    homography_matrix=np.eye(3, dtype=np.float32)))
    assert np.array_equal(out['img'], np.rot90(img)) and out['img'].flags.c_contiguous
    assert out['img_shape'] == out['ori_shape'] == (3, 2) and out['rot90'] == 1
    assert out['scale_factor'] == (0.5, 2.0)
    # the centre of pixel (y 0, x 2) goes to pixel (y 0, x 0), as np.rot90 moves it
    np.testing.assert_allclose(out['homography_matrix'] @ [2.5, 0.5, 1], [0.5, 0.5, 1])
    back = Rot90(k=3).transform(out)
    assert np.array_equal(back['img'], img) and back['rot90'] == 0
    assert back['ori_shape'] == (2, 3) and back['scale_factor'] == (2.0, 0.5)
    np.testing.assert_allclose(back['homography_matrix'], np.eye(3), atol=1e-6)
    with pytest.raises(ValueError, match='k must be'):
        Rot90(k=4)
    with pytest.raises(ValueError, match='before RandomFlip'):
        Rot90().transform(dict(img=img, flip=False))
    with pytest.raises(ValueError, match='test images only'):
        Rot90().transform(dict(img=img, gt_masks=np.zeros((1, 2, 3), bool)))


def test_8_view_tta_turning_or_transposing_the_input_turns_the_merged_output(
        tmp_path: Path) -> None:
    """The eight views are a group: a turned (or transposed) image has the same views, so the
    merged prediction of a model with random weights, not equivariant itself, turns with it."""
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch_dense_tta8.py')
    height, width = 96, 128
    rgba, _ = rendered(height, width, 12, seed=7)
    inputs = {'x': rgba, 'turned': np.rot90(rgba), 'transposed': rgba.transpose(1, 0, 2)}
    pipeline = Compose(cfg.tta_pipeline)
    tta = MODELS.build(dict(cfg.tta_model, module=tiny_model(max_per_img=30)))
    outs = {}
    for i, (name, img) in enumerate(inputs.items()):
        path = tmp_path / f'{name}.tif'
        tifffile.imwrite(path, np.ascontiguousarray(img), photometric='rgb')
        data = pseudo_collate([pipeline(dict(img_path=str(path), img_id=i))])
        assert sorted(tuple(x[0].shape[1:]) for x in data['inputs']) == sorted(
            [(height, width)] * 4 + [(width, height)] * 4)
        with torch.no_grad():
            (out,) = tta.test_step(data)
        assert tuple(out.ori_shape) == img.shape[:2] and out.rot90 == 0
        outs[name] = out.pred_instances

    def rows(pred: InstanceData, move) -> list:
        """(label, mask bytes, score, box) per instance, the mask moved by ``move``."""
        masks = move(CropMasks.from_rles(pred.masks).to_bool_tensor())
        return sorted((int(lab), m.numpy().tobytes(), float(s), b.tolist())
                      for lab, s, m, b in zip(pred.labels, pred.scores, masks, pred.bboxes))

    a = outs['x']
    assert len(a) > 0 and a.masks[0]['size'] == [height, width]
    # boxes move as points do: turning maps (x, y) to (y, width - x); transposing swaps them
    x1, y1, x2, y2 = a.bboxes.unbind(1)
    cases = {'turned': (lambda m: m.rot90(1, (1, 2)), (y1, width - x2, y2, width - x1)),
             'transposed': (lambda m: m.transpose(1, 2), (y1, x1, y2, x2))}
    for name, (move, box) in cases.items():
        moved = InstanceData(labels=a.labels, scores=a.scores, masks=a.masks,
                             bboxes=torch.stack(box, dim=1))
        want, got = rows(moved, move), rows(outs[name], lambda m: m)
        assert [r[:2] for r in got] == [r[:2] for r in want], name
        np.testing.assert_allclose([r[2] for r in got], [r[2] for r in want], rtol=1e-5)
        np.testing.assert_allclose([r[3] for r in got], [r[3] for r in want], atol=1e-3)


def test_merge_views_votes_pixels_and_averages_scores() -> None:
    one = dets(((0, 0, 10, 10), 0.8, 0))
    two = dets(((0, 0, 10, 12), 0.6, 0), ((30, 30, 40, 40), 0.9, 1))
    merged = merge_views([one, two], match_iou=0.5, vote_thr=1.0, score='mean')
    assert merged.scores.tolist() == pytest.approx([0.7, 0.45])
    assert merged.masks.crops[0].pixels.shape == (10, 10)  # pixels both views hold
    assert merge_views([one, two], score='max').scores.tolist() == pytest.approx([0.9, 0.8])


def test_use_tta_wraps_the_model_and_swaps_the_pipeline() -> None:
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch_dense_tta.py')
    use_tta(cfg)
    assert cfg.model.type == 'MaskTTAModel' and cfg.model.module.type == 'TiledMaskRCNN'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    with pytest.raises(ValueError,
                       match='cell_r50_scratch.py: --tta needs tta_model and tta_pipeline'):
        use_tta(Config.fromfile(CONFIGS / 'cell_r50_scratch.py'))


def test_8_view_config_adds_only_the_turn_and_tta_reads_its_detections_from_its_parent(
        tmp_path: Path) -> None:
    changed = changed_keys('cell_r50_scratch_dense_tta8.py', 'cell_r50_scratch_dense_tta.py')
    assert {k.split('[')[0] for k in changed} == {'tta_pipeline'}
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch_dense_tta8.py')
    resize, turns, flips, pack = cfg.tta_pipeline[1].transforms
    assert [(t.type, t.k) for t in turns] == [('Rot90', 0), ('Rot90', 1)]
    assert [t.type for t in flips] == ['RandomFlip'] * 4 and 'rot90' in pack[0].meta_keys
    use_tta(cfg)
    assert cfg.model.type == 'MaskTTAModel' and cfg.model.module.type == 'TiledMaskRCNN'
    # the TTA keeps its parent's number of detections per image, whatever that is
    parent = tmp_path / 'parent.py'
    parent.write_text(f"_base_ = {str(CONFIGS / 'cell_r50_scratch_dense_tiled.py')!r}\n"
                      'model = dict(test_cfg=dict(rcnn=dict(max_per_img=77)))\n')
    text = (CONFIGS / 'cell_r50_scratch_dense_tta.py').read_text()
    assert "_base_ = './cell_r50_scratch_dense_tiled.py'" in text
    child = tmp_path / 'tta.py'
    child.write_text(text.replace("'./cell_r50_scratch_dense_tiled.py'", repr(str(parent))))
    assert Config.fromfile(child).tta_model.tta_cfg.max_per_img == 77


def test_dense_configs_change_only_what_they_say() -> None:
    assert changed_keys('cell_r50_scratch_dense.py', 'cell_r50_scratch.py') == {
        'model.rpn_head.anchor_generator.scales[0]', 'model.rpn_head.anchor_generator.scales[1]',
        'model.rpn_head.anchor_generator.scales[2]', 'model.rpn_head.anchor_generator.ratios[0]',
        'model.rpn_head.anchor_generator.ratios[2]',
        'model.train_cfg.rpn_proposal.nms_pre', 'model.train_cfg.rpn_proposal.max_per_img',
        'model.test_cfg.rpn.nms_pre_per_mpx', 'model.test_cfg.rpn.max_per_img',
        'model.test_cfg.rpn.max_per_img_per_mpx', 'model.test_cfg.rcnn.max_per_img',
        'model.test_cfg.rcnn.max_per_img_per_mpx', 'model.test_cfg.rcnn.max_per_class',
        'model.test_cfg.rcnn.uncapped_score', 'model.test_cfg.rcnn.score_thr'}
    tiled = changed_keys('cell_r50_scratch_dense_tiled.py', 'cell_r50_scratch_dense.py')
    assert {k.split('.')[0] for k in tiled} == {'model'}
    assert {k for k in tiled if k.startswith('model.')} == {'model.type'} | {
        f'model.tile_cfg.{k}' for k in ('size', 'overlap', 'border_margin', 'merge_thr',
                                        'batch_size')}
    tta = changed_keys('cell_r50_scratch_dense_tta.py', 'cell_r50_scratch_dense_tiled.py')
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


def test_anchor_iou_is_the_best_of_mmdet_s_whole_anchor_grid() -> None:
    """The nearest grid point of each level gives what the best of every anchor mmdet's
    AnchorGenerator places on a feature map gives (bbox_overlaps against all of them)."""
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    from mmdet.structures.bbox import bbox_overlaps

    rng = np.random.default_rng(1)
    wh = rng.uniform(3, 60, (200, 2))
    centres = rng.uniform(70, 186, (200, 2))  # inside the grid, away from its border
    cfg = dict(scales=[2.0, 2.83], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
    priors = AnchorGenerator(**cfg).grid_priors([(256 // s, 256 // s) for s in cfg['strides']],
                                                dtype=torch.float64, device='cpu')
    boxes = torch.from_numpy(np.concatenate([centres - wh / 2, centres + wh / 2], axis=1))
    whole = bbox_overlaps(boxes, torch.cat(priors)).max(dim=1).values.numpy()
    np.testing.assert_allclose(anchor_iou(wh, cfg, centres), whole, atol=1e-12)
    assert (whole > 0.3).mean() > 0.5  # the comparison is about overlapping anchors


def test_crops_read_masks_in_either_form() -> None:
    m = torch.zeros((2, 20, 30), dtype=torch.bool)
    m[0, 3:7, 10:25] = True
    masks = CropMasks.from_masks(m, 20, 30)
    rles = Detections(np.zeros((2, 4), np.float32), np.zeros(2, np.float32),
                      np.zeros(2, np.int64), masks).to_instances().masks
    again = CropMasks.from_masks(rles, 20, 30)
    assert [(c.y0, c.x0, c.pixels.shape) for c in again.crops] == [(3, 10, (4, 15)),
                                                                   (0, 0, (0, 0))]
