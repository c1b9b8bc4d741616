"""Data with 1 or 5 classes needs no config of its own: conversion, the ground-truth browser, the
heads, the metrics and the k-fold table, predictions (CSV, GeoJSON) and the submission (category
ids 1..K) follow the data's classes, which no HW3 constant caps at four; a data root holding only
the test set gets a submission; and --resume onto data of other classes stops naming both."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from tool_runner import run_tool

from cellseg.datasets.cell_dataset import palette_for
from cellseg.formats import hw3
from cellseg.formats.submission import SUBMISSION_JSON, validate_submission
from cellseg.structures.rle import encode_instances
from cellseg.testing.synthetic_cells import render_image

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
# one class more than HW3's four, named by classes.txt as a pathology set names them
NAMES = {1: ('nucleus',), 3: ('alpha', 'beta', 'gamma'),
         5: ('tumour', 'lymphocyte', 'stroma', 'necrosis', 'other')}
# short runs: no validation (nothing to choose a best epoch on), every detection kept
OPTIONS = ['train_cfg.max_epochs=1', 'param_scheduler.0.T_max=1', 'param_scheduler.0.end=1',
           'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
           'default_hooks.checkpoint.save_best=None', 'randomness.seed=0']


def write_root(root: Path, n_classes: int, n_train: int = 4, n_test: int = 2) -> Path:
    """An HW3 root of ``n_classes`` classes: synthetic cells whose classes are re-drawn over
    1..n_classes, ``classes.txt``, the test id map and a COCO ground truth of the test images."""
    rng = np.random.default_rng(n_classes)
    (root / 'train').mkdir(parents=True)
    (root / hw3.TEST_DIR).mkdir()
    (root / hw3.CLASSES_TXT).write_text('\n'.join(NAMES[n_classes]) + '\n')
    id_map, gt_images, gt_anns = [], [], []
    for i in range(n_train + n_test):
        rgba, ids, _ = render_image(rng, 96, 112, 12)
        class_of_id = np.concatenate([[0], 1 + np.arange(ids.max()) % n_classes])
        if i < n_train:
            folder = root / 'train' / f'img{i}'
            folder.mkdir()
            tifffile.imwrite(folder / hw3.IMAGE_FILE, rgba)
            for k in range(1, n_classes + 1):
                if (class_of_id[ids] == k).any():
                    tifffile.imwrite(folder / f'class{k}.tif',
                                     np.where(class_of_id[ids] == k, ids, 0).astype(np.float64))
            continue
        name = f'test{i}.tif'
        tifffile.imwrite(root / hw3.TEST_DIR / name, rgba)
        image_id = 100 + i
        id_map.append(dict(file_name=name, id=image_id, height=96, width=112))
        gt_images.append(dict(id=image_id, file_name=f'{hw3.TEST_DIR}/{name}', height=96,
                              width=112))
        for inst in encode_instances(ids):
            gt_anns.append(dict(inst, id=len(gt_anns) + 1, image_id=image_id, iscrowd=0,
                                category_id=int(class_of_id[inst['id']])))
    (root / hw3.TEST_ID_MAP).write_text(json.dumps(id_map))
    (root / 'test_gt.json').write_text(json.dumps(dict(
        images=gt_images, annotations=gt_anns, categories=hw3.categories(NAMES[n_classes]))))
    return root


def run(script: str, *args: object) -> subprocess.CompletedProcess:
    return run_tool(script, *args)


def convert(root: Path) -> subprocess.CompletedProcess:
    return run('data_prep/hw3_to_coco.py', root, '--out-dir', root / 'annotations', '--folds', '0')


def train_on(k: int, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, Path]:
    """(classes, data root, checkpoint) of a tiny model trained 2 iterations on a root of ``k``
    classes."""
    root = write_root(tmp_path_factory.mktemp(f'classes{k}') / 'data', k)
    assert any((root / 'train').glob(f'*/class{k}.tif'))  # the highest class has instances
    converted = convert(root)
    assert f"classes: {', '.join(NAMES[k])}" in converted.stdout
    work = root.parent / 'work'
    proc = run('tools/train.py', TINY, '--data-root', root, '--work-dir', work,
               '--cfg-options', *OPTIONS)
    log = next(work.glob('*/*.log')).read_text()
    assert f'classes from {root}/annotations/train_all.json: {k} ({", ".join(NAMES[k])})' \
        in log, proc.stdout[-2000:]
    return k, root, work / 'epoch_1.pth'


@pytest.fixture(scope='module')
def trained5(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, Path]:
    """Five classes: one more than HW3's four, where a count capped at four shows."""
    return train_on(5, tmp_path_factory)


@pytest.fixture(scope='module', params=[1, 5], ids=['1 class', '5 classes'])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[int, Path, Path]:
    """One class and five (the model trained once for each)."""
    if request.param == 5:
        return request.getfixturevalue('trained5')
    return train_on(request.param, tmp_path_factory)


def test_the_heads_have_the_data_s_classes(trained: tuple[int, Path, Path]) -> None:
    k, _, checkpoint = trained
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    weights = ckpt['state_dict']
    assert weights['roi_head.bbox_head.fc_cls.weight'].shape[0] == k + 1  # + background
    assert weights['roi_head.bbox_head.fc_reg.weight'].shape[0] == 4 * k
    assert weights['roi_head.mask_head.conv_logits.weight'].shape[0] == k
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == NAMES[k]


def test_the_ground_truth_browser_draws_every_class(trained: tuple[int, Path, Path],
                                                    tmp_path: Path) -> None:
    k, root, _ = trained
    run('tools/browse_dataset.py', root, '--out-dir', tmp_path)
    folders = sorted(p.name for p in (root / 'train').iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'{n}_gt.png' for n in folders]
    # the highest class is outlined in its own colour (the one set_classes gives the datasets)
    colour = palette_for({}, k)[k - 1]
    with_k = next(n for n in folders if (root / 'train' / n / f'class{k}.tif').is_file())
    drawn = cv2.cvtColor(cv2.imread(str(tmp_path / f'{with_k}_gt.png')), cv2.COLOR_BGR2RGB)
    assert (drawn == colour).all(axis=-1).any()


def test_metrics_and_the_kfold_table_name_the_data_s_classes(
        trained5: tuple[int, Path, Path], tmp_path: Path) -> None:
    k, root, checkpoint = trained5
    report = tmp_path / 'report'
    run('tools/test.py', TINY, checkpoint, '--data-root', root, '--test-gt',
        root / 'test_gt.json', '--report', report, '--metrics-out', tmp_path / 'metrics.json',
        '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0')
    results = json.loads((report / 'results.segm.json').read_text())
    assert results and {r['category_id'] for r in results} <= set(range(1, k + 1))
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert all(f'coco/segm_{name}_mAP_50' in metrics for name in NAMES[k])
    # two folds' work dirs whose validation logged these metrics, as mmengine logs them
    work_root = tmp_path / 'runs'
    for fold in range(2):
        vis = work_root / f'cell_tiny_fold{fold}' / '20260101_000000' / 'vis_data'
        vis.mkdir(parents=True)
        (vis / 'scalars.json').write_text(json.dumps(dict(metrics, epoch=1, step=1)) + '\n')
    table = run('tools/kfold.py', 'configs/cell_tiny_fold', '--folds', 2, '--report-only',
                '--work-root', work_root).stdout.splitlines()
    header = next(line for line in table if line.startswith('| fold |'))
    columns = ['fold', 'epoch', 'AP', 'AP50', *(f'{n} AP50' for n in NAMES[k])]
    assert header == '| ' + ' | '.join(columns) + ' |'  # the data's names, every class
    assert not any('n/a' in line for line in table)


def test_predictions_use_the_data_s_classes(trained5: tuple[int, Path, Path],
                                            tmp_path: Path) -> None:
    k, root, checkpoint = trained5
    out = tmp_path / 'predict'
    # the config and the classes come from the checkpoint
    run('tools/predict.py', checkpoint, root / hw3.TEST_DIR, '--out-dir', out,
        '--score-thr', 0.0, '--device', 'cpu')
    with open(out / 'instances.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows, 'no instance predicted: nothing to check'
    assert {r['class_name'] for r in rows} <= set(NAMES[k])
    assert {int(r['class_id']) for r in rows} <= set(range(1, k + 1))
    features = [f for path in sorted(out.glob('*.geojson'))
                for f in json.loads(path.read_text())['features']]
    assert len(features) == len(rows)
    assert {f['properties']['classification']['name'] for f in features} <= set(NAMES[k])


def test_a_test_set_alone_gets_a_submission_of_the_model_s_classes(
        trained: tuple[int, Path, Path], tmp_path: Path) -> None:
    k, root, checkpoint = trained
    alone = tmp_path / 'test_only'
    alone.mkdir()
    shutil.copytree(root / hw3.TEST_DIR, alone / hw3.TEST_DIR)
    shutil.copy(root / hw3.TEST_ID_MAP, alone / hw3.TEST_ID_MAP)
    converted = run('data_prep/hw3_to_coco.py', alone, '--out-dir', alone / 'annotations')
    assert 'no train/' in converted.stdout and (alone / 'annotations' / 'test.json').is_file()
    (alone / 'annotations' / 'test.json').unlink()  # the id map is all the submission needs
    out = tmp_path / 'sub' / 'submission.zip'
    # every detection of every class kept (an untrained model ranks few classes first)
    submitted = run('tools/test.py', TINY, checkpoint, '--data-root', alone, '--submit', out,
                    '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0',
                    'model.test_cfg.rcnn.max_per_img=1000')
    with zipfile.ZipFile(out) as z:
        results = json.loads(z.read(SUBMISSION_JSON))
    id_map = hw3.load_id_map(alone / hw3.TEST_ID_MAP)
    assert results and {r['image_id'] for r in results} <= set(id_map)
    categories = {r['category_id'] for r in results}
    assert categories <= set(range(1, k + 1)) and max(categories) == k
    validate_submission(results, id_map, k)
    assert f'per class: {NAMES[k][0]} ' in submitted.stdout  # counted under the model's names


@pytest.mark.parametrize('how', ['--resume', '--resume CHECKPOINT'])
def test_resume_onto_data_of_other_classes_stops_naming_both(
        trained5: tuple[int, Path, Path], tmp_path: Path, how: str) -> None:
    k, _, checkpoint = trained5
    other = write_root(tmp_path / 'data3', 3)
    convert(other)
    work = tmp_path / 'work'
    shutil.copytree(checkpoint.parent, work)
    resumed = work / checkpoint.name
    (work / 'last_checkpoint').write_text(str(resumed))  # mmengine's own auto-resume reads it
    before = sorted(p.name for p in work.iterdir())
    args = ['--resume'] + ([str(resumed)] if how == '--resume CHECKPOINT' else [])
    proc = run_tool('tools/train.py', TINY, '--data-root', other, '--work-dir', work, *args,
                    '--cfg-options', *OPTIONS, ok=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr and proc.stderr.count('\n') == 1, proc.stderr
    assert proc.stderr == (
        f'error: {resumed}: --resume: the checkpoint was trained on {k} classes '
        f'{list(NAMES[k])}, but {other}/annotations/train_all.json has 3 {list(NAMES[3])}; '
        'train into another --work-dir (--pretrained FILE to start from its weights) or resume '
        'with the data it was trained on\n')
    assert sorted(p.name for p in work.iterdir()) == before  # stopped before the Runner
