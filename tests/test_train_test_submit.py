"""End to end on tiny generated data: train lowers the loss, --resume continues at the right
iteration, tools/test.py evaluates and writes a valid CodaBench submission."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from cellseg.formats.hw3 import load_id_map
from cellseg.formats.submission import SUBMISSION_JSON, validate_submission
from cellseg.utils.scalars import read_scalars

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
EPOCHS = 4


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / tool), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, f'{tool} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture(scope='module')
def trained(tiny_root: Path, tiny_ann: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp('tiny_train')
    run_tool('train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann, '--work-dir', work,
             '--cfg-options', f'train_cfg.max_epochs={EPOCHS}', f'param_scheduler.0.T_max={EPOCHS}',
             f'param_scheduler.0.end={EPOCHS}', 'randomness.seed=0')
    return work


def losses(work: Path) -> list[tuple[int, float]]:
    return [(r['step'], r['loss']) for r in read_scalars(work) if 'loss' in r]


def iters_per_epoch(tiny_ann: Path) -> int:
    n = len(json.loads((tiny_ann / 'train_all.json').read_text())['images'])
    return -(-n // 2)  # batch 2, last partial batch kept


def test_training_lowers_the_loss(trained: Path, tiny_ann: Path) -> None:
    steps = losses(trained)
    assert [s for s, _ in steps] == list(range(1, EPOCHS * iters_per_epoch(tiny_ann) + 1))
    values = [v for _, v in steps]
    assert np.isfinite(values).all()
    assert np.mean(values[-3:]) < 0.8 * np.mean(values[:3]), values
    log = next(trained.glob('*/*.log')).read_text()
    if not torch.cuda.is_available():
        assert 'OptimWrapper instead of the config\'s AmpOptimWrapper' in log
    assert (trained / f'epoch_{EPOCHS}.pth').is_file()
    assert list(trained.glob('best_coco_segm_mAP_50_epoch_*.pth'))


def test_resume_continues_at_the_right_iteration(trained: Path, tiny_root: Path, tiny_ann: Path,
                                                 tmp_path: Path) -> None:
    per_epoch = iters_per_epoch(tiny_ann)
    ckpt = trained / 'epoch_2.pth'
    run_tool('train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann, '--work-dir',
             tmp_path, '--resume', ckpt, '--cfg-options', f'train_cfg.max_epochs={EPOCHS}',
             f'param_scheduler.0.T_max={EPOCHS}', f'param_scheduler.0.end={EPOCHS}')
    steps = [s for s, _ in losses(tmp_path)]
    assert steps == list(range(2 * per_epoch + 1, EPOCHS * per_epoch + 1))
    final = torch.load(tmp_path / f'epoch_{EPOCHS}.pth', map_location='cpu', weights_only=False)
    assert final['meta']['epoch'] == EPOCHS and final['meta']['iter'] == EPOCHS * per_epoch
    assert 'Resumed' in next(tmp_path.glob('*/*.log')).read_text() or \
        'resumed' in next(tmp_path.glob('*/*.log')).read_text().lower()


def test_torch_load_default_refuses_mmengine_checkpoints_we_fix_it(trained: Path) -> None:
    """The torch >= 2.6 behaviour that cellseg.engine.checkpoint_loader works around."""
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        torch.load(trained / f'epoch_{EPOCHS}.pth', map_location='cpu')
    from mmengine.runner.checkpoint import CheckpointLoader

    import cellseg.engine.checkpoint_loader  # noqa: F401

    ckpt = CheckpointLoader.load_checkpoint(str(trained / f'epoch_{EPOCHS}.pth'),
                                            map_location='cpu')
    assert 'message_hub' in ckpt and 'state_dict' in ckpt


def test_evaluation_writes_named_metrics(trained: Path, tiny_root: Path, tiny_ann: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / 'metrics.json'
    run_tool('test.py', TINY, trained / f'epoch_{EPOCHS}.pth', '--data-root', tiny_root,
             '--ann-dir', tiny_ann, '--work-dir', tmp_path, '--test-gt',
             tiny_root / 'test_gt.json', '--metrics-out', out)
    metrics = json.loads(out.read_text())
    for key in ('coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_50_maxdets1000',
                'coco/bbox_mAP_50', 'coco/segm_class1_mAP_50', 'coco/segm_class4_mAP_50'):
        assert key in metrics, key
    assert 0.0 <= metrics['coco/segm_mAP_50'] <= metrics['coco/segm_mAP_50_maxdets1000'] <= 1.0


def test_submit_writes_a_valid_zip(trained: Path, tiny_root: Path, tiny_ann: Path,
                                   tmp_path: Path) -> None:
    zip_path = tmp_path / 'sub' / 'submission.zip'
    # score_thr 0: an undertrained model still yields detections to check
    proc = run_tool('test.py', TINY, trained / f'epoch_{EPOCHS}.pth', '--data-root', tiny_root,
                    '--ann-dir', tiny_ann, '--work-dir', tmp_path, '--submit', zip_path,
                    '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0')
    assert 'submission checked' in proc.stdout
    with zipfile.ZipFile(zip_path) as z:
        assert z.namelist() == [SUBMISSION_JSON]
        results = json.loads(z.read(SUBMISSION_JSON))
    assert results == json.loads((zip_path.parent / SUBMISSION_JSON).read_text())
    id_map = load_id_map(tiny_root / 'test_image_name_to_ids.json')
    validate_submission(results, id_map)
    assert results and {r['image_id'] for r in results} == set(id_map)
    for r in results:
        info = id_map[r['image_id']]
        assert isinstance(r['segmentation']['counts'], str)
        assert mask_utils.decode(r['segmentation']).shape == (info.height, info.width)
        assert 1 <= r['category_id'] <= 4 and 0 <= r['score'] <= 1
