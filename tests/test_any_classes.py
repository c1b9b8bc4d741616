"""Data with 1 or 7 classes needs no config of its own: the heads, results, CSV and GeoJSON follow
the data's classes; and a data root holding only the test set gets a submission."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from tool_runner import run_tool

from cellseg.formats import hw3
from cellseg.formats.submission import SUBMISSION_JSON, validate_submission
from cellseg.structures.rle import encode_instances
from cellseg.testing.synthetic_cells import render_image

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
NAMES = {1: ('nucleus',), 7: tuple(f'type_{c}' for c in 'abcdefg')}
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


@pytest.fixture(scope='module', params=[1, 7], ids=['1 class', '7 classes'])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[int, Path, Path]:
    """(classes, data root, checkpoint) of a tiny model trained 2 iterations on that root."""
    k = request.param
    root = write_root(tmp_path_factory.mktemp(f'classes{k}') / 'data', k)
    converted = run('data_prep/hw3_to_coco.py', root, '--out-dir', root / 'annotations',
                    '--folds', '0')
    assert f"classes: {', '.join(NAMES[k])}" in converted.stdout
    work = root.parent / 'work'
    proc = run('tools/train.py', TINY, '--data-root', root, '--work-dir', work,
               '--cfg-options', *OPTIONS)
    log = next(work.glob('*/*.log')).read_text()
    assert f'classes from {root}/annotations/train_all.json: {k} ({", ".join(NAMES[k])})' \
        in log, proc.stdout[-2000:]
    return k, root, work / 'epoch_1.pth'


def test_the_heads_have_the_data_s_classes(trained: tuple[int, Path, Path]) -> None:
    k, _, checkpoint = trained
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    weights = ckpt['state_dict']
    assert weights['roi_head.bbox_head.fc_cls.weight'].shape[0] == k + 1  # + background
    assert weights['roi_head.bbox_head.fc_reg.weight'].shape[0] == 4 * k
    assert weights['roi_head.mask_head.conv_logits.weight'].shape[0] == k
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == NAMES[k]


def test_results_csv_and_geojson_use_the_data_s_classes(trained: tuple[int, Path, Path],
                                                        tmp_path: Path) -> None:
    from cellseg.apis.predict import collect_images, load_model, predict_files

    k, root, checkpoint = trained
    if k == 1:
        pytest.skip('checked on 7 classes, where a wrong class count shows')
    report = tmp_path / 'report'
    run('tools/test.py', TINY, checkpoint, '--data-root', root, '--test-gt',
        root / 'test_gt.json', '--report', report,
        '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0')
    results = json.loads((report / 'results.segm.json').read_text())
    assert results and {r['category_id'] for r in results} <= set(range(1, k + 1))

    out = tmp_path / 'predict'
    # in this process, as tools/predict.py calls it: one interpreter start less
    model = load_model(checkpoint, TINY, 'cpu', score_thr=0.0)
    assert model.roi_head.bbox_head.num_classes == k
    predict_files(model, collect_images([root / hw3.TEST_DIR]), out, 0.0, progress=False)
    with open(out / 'instances.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows, 'no instance predicted: nothing to check'
    assert {r['class_name'] for r in rows} <= set(NAMES[k])
    assert {int(r['class_id']) for r in rows} <= set(range(1, k + 1))
    features = [f for path in sorted(out.glob('*.geojson'))
                for f in json.loads(path.read_text())['features']]
    assert len(features) == len(rows)
    assert {f['properties']['classification']['name'] for f in features} <= set(NAMES[k])


def test_a_test_set_alone_gets_a_submission(trained: tuple[int, Path, Path],
                                            tmp_path: Path) -> None:
    k, root, checkpoint = trained
    if k != 1:
        pytest.skip('checked on 1 class: the HW3 submission holds categories 1..4')
    alone = tmp_path / 'test_only'
    alone.mkdir()
    shutil.copytree(root / hw3.TEST_DIR, alone / hw3.TEST_DIR)
    shutil.copy(root / hw3.TEST_ID_MAP, alone / hw3.TEST_ID_MAP)
    converted = run('data_prep/hw3_to_coco.py', alone, '--out-dir', alone / 'annotations')
    assert 'no train/' in converted.stdout and (alone / 'annotations' / 'test.json').is_file()
    (alone / 'annotations' / 'test.json').unlink()  # the id map is all the submission needs
    out = tmp_path / 'sub' / 'submission.zip'
    run('tools/test.py', TINY, checkpoint, '--data-root', alone, '--submit', out,
        '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0')
    with zipfile.ZipFile(out) as z:
        results = json.loads(z.read(SUBMISSION_JSON))
    id_map = hw3.load_id_map(alone / hw3.TEST_ID_MAP)
    assert results and {r['image_id'] for r in results} <= set(id_map)
    validate_submission(results, id_map)
