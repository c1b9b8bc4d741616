"""The outputs people look at: tools/predict.py (label TIFFs, class maps, overlays, CSV), the
evaluation report, the dataset browser and the training curves.

A randomly initialised tiny model (tests/configs/cell_r50_tiny.py) predicts with score
threshold 0, which gives up to 100 overlapping detections per image: the overlap rules of the
label image are exercised hard. The evaluation report runs on the tiny test ground truth with
predictions made from that ground truth and changed in known ways, so its numbers are known.
"""
from __future__ import annotations

import copy
import csv
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import tifffile
import tool_runner
import torch

from cellseg.apis.predict import CSV_COLUMNS, collect_images, output_stems
from cellseg.formats.hw3 import HW3FormatError, list_train_samples, read_image
from cellseg.testing.synthetic_cells import SYNTHETIC_CLASSES

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'


def run_tool(tool: str, *args: object, ok: bool = True) -> subprocess.CompletedProcess:
    return tool_runner.run_tool(f'tools/{tool}', *args, ok=ok, timeout=300)


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f'{path} is not a readable PNG'
    return image


def read_csv(path: Path) -> list[dict]:
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def input_images(tiny_root: Path) -> list[Path]:
    """Inputs as a user gives them: a folder and a glob whose files all share the stem 'image'."""
    return collect_images([tiny_root / 'test_release',
                           str(tiny_root / 'train' / '*' / 'image.tif')])


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    from cellseg.datasets.cell_dataset import CellDataset

    register_all_modules()
    cfg = Config.fromfile(TINY)
    import_modules_from_strings(cfg.custom_imports.imports)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('random_model') / 'random.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': SYNTHETIC_CLASSES,
                                          'palette': CellDataset.METAINFO['palette']}}}, path)
    return path


@pytest.fixture(scope='module')
def predicted(tiny_root: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('predicted')
    proc = run_tool('predict.py', TINY, checkpoint, tiny_root / 'test_release',
                    tiny_root / 'train' / '*' / 'image.tif', '--out-dir', out, '--score-thr', '0',
                    '--device', 'cpu')
    assert 'instances scoring >= 0.0' in proc.stdout
    return out


# ---- tools/predict.py ---------------------------------------------------------------------------

def test_label_image_is_the_masks_with_higher_scores_on_top(tiny_root: Path, checkpoint: Path,
                                                            tmp_path: Path) -> None:
    """Against masks decoded independently: ids 1..N are the detections that keep a pixel, by
    decreasing score, and id k's pixels are its mask minus every higher-score mask."""
    from cellseg.apis.predict import load_model, predict_files, predict_image

    model = load_model(checkpoint, TINY, 'cpu', score_thr=0.0)
    paths = input_images(tiny_root)[:3]
    predict_files(model, paths, tmp_path, score_thr=0.0, progress=False)
    rows = read_csv(tmp_path / 'instances.csv')
    overlapped = 0
    for path, stem in zip(paths, output_stems(paths)):
        image, masks, labels, scores = predict_image(model, path, 0.0)
        assert len(scores) > 0, 'score threshold 0 should leave detections'
        h, w = image.shape[:2]
        taken = np.zeros((h, w), bool)
        visible = []  # (mask pixels left, class, score), by decreasing score
        for j in np.argsort(-scores, kind='stable'):
            mask = masks.masks[j].astype(bool)
            left = mask & ~taken
            overlapped += int(mask.sum() - left.sum())
            taken |= mask
            if left.any():
                visible.append((left, int(labels[j]) + 1, float(scores[j])))
        ids = tifffile.imread(tmp_path / f'{stem}_labels.tif')
        assert ids.dtype == np.uint16 and ids.shape == (h, w)
        assert ids.max() == len(visible) == np.count_nonzero(np.unique(ids))
        for k, (left, _, _) in enumerate(visible, start=1):
            np.testing.assert_array_equal(ids == k, left, err_msg=f'{stem} id {k}')
        image_rows = [r for r in rows if r['image'] == stem]
        assert [int(r['instance_id']) for r in image_rows] == list(range(1, len(visible) + 1))
        assert [int(r['class_id']) for r in image_rows] == [v[1] for v in visible]
        np.testing.assert_allclose([float(r['score']) for r in image_rows],
                                   [v[2] for v in visible], atol=1e-5)
    assert overlapped > 0, 'the test should see overlapping masks'


def test_paint_labels_ids_dtype_and_ties() -> None:
    from cellseg.apis.predict import instance_rows
    from cellseg.structures.crop_masks import EMPTY_CROP, CropMasks, MaskCrop
    from cellseg.structures.label_images import class_map, paint_labels

    square = MaskCrop(np.ones((4, 4), bool), 2, 2)
    inner = MaskCrop(np.ones((2, 2), bool), 3, 3)
    crops = CropMasks.from_crops([square, inner, EMPTY_CROP,
                                  MaskCrop(np.ones((1, 3), bool), 0, 0)], 8, 8)
    ids, index = paint_labels(crops, np.array([0.9, 0.5, 0.99, 0.5]))
    # the empty mask and the inner square (under a higher score) have no pixel left; of the
    # equal scores the earlier detection ranks first
    assert index.tolist() == [0, 3] and ids.dtype == np.uint16
    assert (ids == 1).sum() == 16 and (ids == 2).sum() == 3 and ids.max() == 2
    ids, index = paint_labels(crops, np.array([0.1, 0.5, 0.99, 0.5]))
    assert index.tolist() == [1, 3, 0] and (ids == 3).sum() == 12  # the ring left of the square
    classes = class_map(ids, np.array([2, 4, 1]))
    assert classes.dtype == np.uint8 and set(np.unique(classes)) == {0, 1, 2, 4}
    rows = instance_rows('x', ids, np.array([2, 4, 1]), np.array([0.5, 0.5, 0.1]),
                         SYNTHETIC_CLASSES)
    assert [(r['area'], r['bbox_x'], r['bbox_y'], r['bbox_w'], r['bbox_h']) for r in rows] == [
        (4, 3, 3, 2, 2), (3, 0, 0, 3, 1), (12, 2, 2, 4, 4)]
    assert (rows[2]['centroid_x'], rows[2]['centroid_y']) == (3.5, 3.5)

    # past 65535 instances the label image needs 32 bits
    n = 70_000
    pixels = np.ones((1, 1), bool)
    many = [MaskCrop(pixels, i // 300, i % 300) for i in range(n)]
    ids, index = paint_labels(CropMasks.from_crops(many, 300, 300), np.linspace(1, 0, n))
    assert ids.dtype == np.uint32 and ids.max() == n and index.tolist() == list(range(n))


def test_tiled_model_masks_as_rles_are_read_too(tiny_root: Path, checkpoint: Path) -> None:
    """TiledMaskRCNN returns the masks of a tiled image as COCO RLEs instead of a tensor;
    predict_image turns both into the same crops, which paint a label image."""
    import pycocotools.mask as mask_utils

    import cellseg.models  # noqa: F401  registers TiledMaskRCNN
    from cellseg.apis.predict import load_model, predict_image
    from cellseg.structures.label_images import paint_labels

    tile = dict(size=64, overlap=24, border_margin=2, merge_thr=0.5, batch_size=4)
    model = load_model(checkpoint, TINY, 'cpu', score_thr=0.0,
                       cfg_options={'model.type': 'TiledMaskRCNN', 'model.tile_cfg': tile,
                                    'model.test_cfg.rcnn.max_per_img': 20})
    path = max(input_images(tiny_root), key=lambda p: read_image(p).size)
    image, masks, labels, scores = predict_image(model, path, 0.0)
    assert max(image.shape[:2]) > tile['size'] and len(masks) > 0
    from mmdet.apis import inference_detector

    rles = inference_detector(model, image[..., ::-1].copy()).pred_instances.masks
    assert isinstance(rles, list) and isinstance(rles[0], dict)  # the RLE path is exercised
    for crop, rle in zip(masks.crops, rles):
        full = mask_utils.decode(rle).astype(bool)
        assert crop.pixels.sum() == full.sum()
        if crop.pixels.size:
            assert full[crop.y0:crop.y1, crop.x0:crop.x1][crop.pixels].all()
    ids, index = paint_labels(masks, scores)
    assert ids.max() == len(index) > 0


def test_csv_and_class_map_agree_with_the_label_image(tiny_root: Path, predicted: Path) -> None:
    paths = input_images(tiny_root)
    stems = output_stems(paths)
    assert len(set(stems)) == len(paths)  # train/<name>/image.tif all share the stem 'image'
    rows = read_csv(predicted / 'instances.csv')
    assert {r['image'] for r in rows} <= set(stems) and rows
    for stem in stems:
        ids = tifffile.imread(predicted / f'{stem}_labels.tif')
        classes = tifffile.imread(predicted / f'{stem}_classes.tif')
        assert classes.dtype == np.uint8 and classes.shape == ids.shape
        np.testing.assert_array_equal(classes == 0, ids == 0)
        image_rows = [r for r in rows if r['image'] == stem]
        assert len(image_rows) == ids.max() == np.count_nonzero(np.unique(ids))
        for r in image_rows:
            i = int(r['instance_id'])
            ys, xs = np.nonzero(ids == i)
            assert int(r['area']) == ys.size > 0
            assert (int(r['bbox_x']), int(r['bbox_y']), int(r['bbox_w']), int(r['bbox_h'])) == (
                xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert float(r['centroid_x']) == pytest.approx(xs.mean(), abs=0.006)
            assert float(r['centroid_y']) == pytest.approx(ys.mean(), abs=0.006)
            assert np.all(classes[ids == i] == int(r['class_id']))
            assert r['class_name'] == SYNTHETIC_CLASSES[int(r['class_id']) - 1]
            assert 0.0 <= float(r['score']) <= 1.0


def test_overlays_are_pngs_of_the_image_size(tiny_root: Path, predicted: Path) -> None:
    paths = input_images(tiny_root)
    for path, stem in zip(paths, output_stems(paths)):
        image = read_image(path)
        overlay = read_png(predicted / f'{stem}_overlay.png')
        assert overlay.shape == image.shape
        assert (overlay != image[..., ::-1]).any(), f'{stem}: nothing drawn'
    assert not list(predicted.glob('.*.tmp'))  # atomic writes leave no temporary files


def test_bad_inputs_name_the_file(tiny_root: Path, checkpoint: Path, tmp_path: Path) -> None:
    empty = tmp_path / 'images' / 'empty.tif'
    empty.parent.mkdir()
    empty.write_bytes(b'')
    proc = run_tool('predict.py', TINY, checkpoint, empty.parent, '--out-dir', tmp_path / 'out',
                    ok=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f'error: {empty}: file is empty'), proc.stderr
    assert not (tmp_path / 'out').exists()

    (tmp_path / 'no_images').mkdir()
    (tmp_path / 'no_images' / 'notes.txt').write_text('x')
    with pytest.raises(HW3FormatError, match=f'^{tmp_path / "no_images"}: folder holds no images'):
        collect_images([tmp_path / 'no_images'])
    with pytest.raises(HW3FormatError, match='pattern matches no images'):
        collect_images([str(tmp_path / '*.png')])
    with pytest.raises(HW3FormatError, match=f'^{tmp_path / "missing.tif"}: no such file'):
        collect_images([tmp_path / 'missing.tif'])

    # a header that reads but pixels that do not: caught when the image is predicted
    cut = tmp_path / 'cut.tif'
    src = next((tiny_root / 'test_release').glob('*.tif'))
    with tifffile.TiffFile(src) as tif:
        start = tif.pages[0].dataoffsets[0]
    data = src.read_bytes()
    cut.write_bytes(data[:start + (len(data) - start) // 2])
    assert collect_images([cut]) == [cut]
    from cellseg.apis.predict import predict_image

    with pytest.raises(HW3FormatError, match=f'^{cut}: cannot read as TIFF'):
        predict_image(None, cut)  # fails on reading, before the model is used


# ---- evaluation report --------------------------------------------------------------------------

def test_eval_report_on_known_predictions(tiny_root: Path, tmp_path: Path) -> None:
    """Predictions = the ground truth, with one instance missed, one given the wrong class and
    one duplicated at a lower score (a false positive), plus one below the score threshold."""
    from cellseg.evaluation.eval_report import write_eval_report

    gt = json.loads((tiny_root / 'test_gt.json').read_text())
    anns = sorted(gt['annotations'], key=lambda a: a['id'])
    assert len(anns) >= 4
    missed, relabelled, duplicated = anns[0], anns[1], anns[2]
    wrong = relabelled['category_id'] % 4 + 1
    results = []
    for i, a in enumerate(anns[1:]):
        results.append(dict(image_id=a['image_id'], segmentation=a['segmentation'],
                            score=0.95 - 0.01 * i, bbox=a['bbox'],
                            category_id=wrong if a is relabelled else a['category_id']))
    results.append(dict(copy.deepcopy(results[1]), score=0.6))  # duplicate of `duplicated`
    results.append(dict(copy.deepcopy(results[-1]), score=0.2))  # below score_thr 0.5
    results_path = tmp_path / 'results.segm.json'
    results_path.write_text(json.dumps(results))

    out = tmp_path / 'report'
    written = write_eval_report(tiny_root / 'test_gt.json', results_path, out, SYNTHETIC_CLASSES,
                                images_root=tiny_root)
    assert set(written) == {'per_class.md', 'per_class.csv', 'pr_curves.png', 'confusion.png',
                            'confusion.csv', 'per_image.csv', 'worst_images.png'}

    with open(out / 'per_class.csv', newline='') as f:
        table = list(csv.DictReader(f))
    assert [r['class'] for r in table] == [*SYNTHETIC_CLASSES, 'mean']
    n_gt = [sum(a['category_id'] == k for a in anns) for k in range(1, 5)]
    assert [int(r['gt_instances']) for r in table[:4]] == n_gt
    assert sum(int(r['predictions']) for r in table[:4]) == len(results)
    for r in table:
        for key in ('AP', 'AP50'):
            assert r[key] == 'n/a' or 0.0 <= float(r[key]) <= 1.0
    # a class none of whose instances was touched is found perfectly
    touched = {missed['category_id'], relabelled['category_id'], wrong,
               duplicated['category_id']}
    for k in set(range(1, 5)) - touched:
        if n_gt[k - 1]:
            assert float(table[k - 1]['AP50']) == 1.0
    md = (out / 'per_class.md').read_text()
    assert '| class | GT instances | predictions | AP | AP50 |' in md and '**mean**' in md

    with open(out / 'confusion.csv', newline='') as f:
        conf = np.array([[int(v) for v in list(r.values())[1:]] for r in csv.DictReader(f)])
    expected = np.zeros((5, 5), np.int64)
    for a in anns:
        k = a['category_id'] - 1
        if a is missed:
            expected[k, 4] += 1
        elif a is relabelled:
            expected[k, wrong - 1] += 1
        else:
            expected[k, k] += 1
    expected[4, duplicated['category_id'] - 1] += 1
    np.testing.assert_array_equal(conf, expected)

    with open(out / 'per_image.csv', newline='') as f:
        per_image = {int(r['image_id']): r for r in csv.DictReader(f)}
    assert set(per_image) == {im['id'] for im in gt['images']}
    changed = {missed['image_id'], relabelled['image_id'], duplicated['image_id']}
    for image_id, r in per_image.items():
        assert float(r['f1']) == (1.0 if image_id not in changed else pytest.approx(
            2 * int(r['correct']) / (int(r['gt']) + int(r['predictions'])), abs=1e-4))
        if image_id in changed:
            assert float(r['f1']) < 1.0

    for name in ('pr_curves.png', 'confusion.png', 'worst_images.png'):
        h, w = read_png(out / name).shape[:2]
        assert 200 < h < 3000 and 200 < w < 3000, (name, h, w)


def test_eval_report_without_predictions(tiny_root: Path, tmp_path: Path) -> None:
    from cellseg.evaluation.eval_report import write_eval_report

    written = write_eval_report(tiny_root / 'test_gt.json', [], tmp_path, SYNTHETIC_CLASSES)
    assert 'worst_images.png' not in written  # no images_root, no gallery
    with open(tmp_path / 'per_class.csv', newline='') as f:
        table = list(csv.DictReader(f))
    assert all(float(r['AP50']) == 0.0 for r in table if int(r['gt_instances']))
    with open(tmp_path / 'confusion.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    n_gt = len(json.loads((tiny_root / 'test_gt.json').read_text())['annotations'])
    assert sum(int(r['missed']) for r in rows) == n_gt


# ---- dataset browser, training curves -----------------------------------------------------------

def test_browse_dataset_draws_every_train_image(tiny_root: Path, tmp_path: Path) -> None:
    run_tool('browse_dataset.py', tiny_root, '--out-dir', tmp_path)
    samples = list_train_samples(tiny_root)
    assert sorted(p.name for p in tmp_path.glob('*.png')) == sorted(
        f'{s.name}_gt.png' for s in samples)
    for s in samples:
        image = read_image(s.image_path)
        drawn = read_png(tmp_path / f'{s.name}_gt.png')
        assert drawn.shape == image.shape
        if s.class_paths:
            assert (drawn != image[..., ::-1]).any(), f'{s.name}: nothing drawn'


RESUMED_LOSS = 0.5  # added to the resumed run's losses, so the rows that win are known


def fake_scalars(work_dir: Path) -> None:
    """Two runs of a work dir as mmengine logs them (the first killed after iteration 10, the
    second resumed from epoch 2's checkpoint, so epoch 3's iterations 9 and 10 appear twice, the
    resumed run's with ``RESUMED_LOSS`` more loss), 4 iterations per epoch, validation every
    epoch."""
    def train_row(it: int, extra: float) -> dict:
        epoch = (it - 1) // 4 + 1
        return dict(lr=1e-3 / it, loss=2.0 / it + extra, loss_cls=1.0 / it, loss_mask=0.8 / it,
                    epoch=epoch, iter=it, step=it)

    def val_row(epoch: int) -> dict:
        return {'coco/segm_mAP_50': 0.1 * epoch, 'coco/segm_mAP': 0.05 * epoch, 'step': epoch}

    runs = {'20250101_000000': [*range(1, 11)], '20250101_010000': [*range(9, 17)]}
    for stamp, iters in runs.items():
        lines = []
        extra = RESUMED_LOSS if stamp == max(runs) else 0.0
        for it in iters:
            lines.append(train_row(it, extra))
            if it % 4 == 0:
                lines.append(val_row(it // 4))
        vis = work_dir / stamp / 'vis_data'
        vis.mkdir(parents=True)
        (vis / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in lines))


def test_plot_curves_tool_and_hook(tmp_path: Path) -> None:
    from cellseg.engine.hooks.plot_curves_hook import PlotCurvesHook
    from cellseg.utils.scalars import read_scalars
    from cellseg.visualization.visualize import iters_per_epoch, plot_training_curves

    fake_scalars(tmp_path)
    rows = read_scalars(tmp_path)
    assert [r['step'] for r in rows if 'loss' in r].count(9) == 2  # the duplicates are there
    assert iters_per_epoch([r for r in rows if 'loss' in r]) == 4
    # the curves show each step once, the resumed run's rows where both runs logged it
    (ax_loss, _, ax_val, *_) = plot_training_curves(rows).axes
    (loss_line,) = [line for line in ax_loss.get_lines() if line.get_label() == 'loss']
    assert list(loss_line.get_xdata()) == [it / 4 for it in range(1, 17)]
    expected = [2.0 / it + (RESUMED_LOSS if it >= 9 else 0.0) for it in range(1, 17)]
    assert np.allclose(loss_line.get_ydata(), expected)
    assert list(ax_val.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    run_tool('plot_curves.py', tmp_path, '--out', tmp_path / 'plot.png')
    h, w = read_png(tmp_path / 'plot.png').shape[:2]
    assert w > 2 * h > 400

    messages = []
    logger = SimpleNamespace(info=messages.append, warning=messages.append)
    PlotCurvesHook().after_run(SimpleNamespace(work_dir=str(tmp_path), logger=logger))
    assert read_png(tmp_path / 'curves.png').shape[:2] == (h, w)
    assert messages == [f'training curves written to {tmp_path / "curves.png"}']

    test_only = tmp_path / 'test_only'  # a tools/test.py run: no losses, so no picture
    (test_only / 'x' / 'vis_data').mkdir(parents=True)
    (test_only / 'x' / 'vis_data' / 'scalars.json').write_text('{"coco/segm_mAP_50": 0.1}\n')
    PlotCurvesHook().after_run(SimpleNamespace(work_dir=str(test_only), logger=logger))
    assert not (test_only / 'curves.png').exists()


def test_the_inferencer_is_mmdets_and_batches_give_the_same_predictions(
        tiny_root: Path, checkpoint: Path) -> None:
    """``CellInferencer`` is a ``DetInferencer``: its ``__call__`` on files in batches of 2
    predicts what ``predict_image`` (one image a call) does, image for image."""
    from mmdet.apis import DetInferencer

    from cellseg.apis.cell_inferencer import CellInferencer
    from cellseg.apis.predict import load_model, predict_image

    model = load_model(checkpoint, TINY, 'cpu', score_thr=0.0)
    inferencer = CellInferencer(model, batch_size=2)
    assert isinstance(inferencer, DetInferencer)
    paths = input_images(tiny_root)[:3]
    batched = inferencer(paths, score_thr=0.1)['predictions']
    assert len(batched) == 3
    for path, got in zip(paths, batched):
        image, masks, labels, scores = predict_image(model, path, 0.1)
        assert np.array_equal(got['image'], image)
        assert np.array_equal(got['labels'], labels) and len(labels) > 0
        np.testing.assert_allclose(got['scores'], scores, atol=1e-5)
        assert (scores >= 0.1).all()
        assert np.array_equal(got['masks'].masks, masks.masks)
