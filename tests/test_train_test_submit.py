"""End to end on tiny generated data: train lowers the loss, --resume continues at the right
iteration, tools/test.py evaluates and writes a valid CodaBench submission."""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tool_runner
import torch
from mmengine.config import Config

from cellseg.engine.hooks.cell_visualization_hook import picture_name
from cellseg.engine.optimizers.cpu_amp_optim_wrapper import cpu_has_bf16
from cellseg.engine.quiet_logs import MMENGINE_NOTICES
from cellseg.formats.hw3 import load_id_map
from cellseg.formats.submission import SUBMISSION_JSON, validate_submission
from cellseg.utils.scalars import read_scalars

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
EPOCHS = 4


def run_tool(tool: str, *args: object) -> subprocess.CompletedProcess:
    return tool_runner.run_tool(f'tools/{tool}', *args)


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
    # mmengine's notices about its own internals, which a user cannot act on (quiet_logs.py)
    assert 'CheckpointHook' in log and not any(n in log for n in MMENGINE_NOTICES)
    if not torch.cuda.is_available():  # cpu_amp='auto': bf16 where this CPU computes it
        assert ('(CpuAmpOptimWrapper) in place of the config' if cpu_has_bf16() else
                'OptimWrapper instead of the config\'s AmpOptimWrapper') in log
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
    # mmengine's Runner.resume logs where it continues from (mmengine 0.10's wording)
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert f'resumed epoch: 2, iter: {2 * per_epoch}\n' in log


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
             tiny_root / 'test_gt.json', '--metrics-out', out, '--report', tmp_path / 'report',
             '--cfg-options', 'test_evaluator.1.score_thr=0.3',
             'test_evaluator.0.proposal_nums=(1,10,100,1000)')  # AP at 1000 as well, asked
    # the report's nuclei metrics take the metric's threshold (they took 0.5 whatever it was)
    assert 'scoring at least 0.3' in (tmp_path / 'report' / 'per_class.md').read_text()
    metrics = json.loads(out.read_text())
    for key in ('coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_50_maxdets1000',
                'coco/bbox_mAP_50', 'coco/segm_class1_mAP_50', 'coco/segm_class4_mAP_50'):
        assert key in metrics, key
    assert 0.0 <= metrics['coco/segm_mAP_50'] <= 1.0
    # The tiny model keeps mmdet's 100 detections per image, so AP at 100 and at 1000 detections
    # is computed on the same detections and must be equal. (Where they differ, more detections
    # can lower AP as well as raise it: tests/test_cell_coco_metric.py checks that case.)
    assert Config.fromfile(TINY).model.test_cfg.rcnn.max_per_img == 100
    assert metrics['coco/segm_mAP_50_maxdets1000'] == metrics['coco/segm_mAP_50']
    assert metrics['coco/bbox_mAP_50_maxdets1000'] == metrics['coco/bbox_mAP_50']


def test_show_dir_draws_the_chunked_heads_rle_masks(trained: Path, tiny_root: Path,
                                                    tiny_ann: Path, tmp_path: Path) -> None:
    """What mmdet's ``tools/test.py --show-dir DIR`` sets: draw=True and test_out_dir on the
    config's visualization hook. ChunkedMaskHead's masks are RLE lists, on which mmdet's
    DetVisualizationHook crashes; cellseg's CellVisualizationHook draws them."""
    run_tool('test.py', TINY, trained / f'epoch_{EPOCHS}.pth', '--data-root', tiny_root,
             '--ann-dir', tiny_ann, '--work-dir', tmp_path, '--cfg-options',
             'default_hooks.visualization.draw=True',
             'default_hooks.visualization.test_out_dir=show',
             'default_hooks.visualization.score_thr=0.0', 'model.test_cfg.rcnn.score_thr=0.0')
    images = {picture_name(i['file_name']): i
              for i in json.loads((tiny_ann / 'fold0_val.json').read_text())['images']}
    pictures = {p.name: p for p in tmp_path.glob('*/show/*')}
    assert len(images) > 1 and pictures.keys() == images.keys()  # HW3's image.tif, not one file
    for name, info in images.items():
        drawn = cv2.imread(str(pictures[name]), cv2.IMREAD_COLOR)
        # the ground truth (none at test time: the image alone) left of the predictions
        assert drawn.shape[:2] == (info['height'], 2 * info['width']), name
        assert (drawn[:, :info['width']] != drawn[:, info['width']:]).any(), f'{name}: no drawing'


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
    validate_submission(results, id_map, 4)  # the tiny data's four classes
    assert results and {r['image_id'] for r in results} == set(id_map)
    for r in results:
        info = id_map[r['image_id']]
        assert isinstance(r['segmentation']['counts'], str)
        assert mask_utils.decode(r['segmentation']).shape == (info.height, info.width)
        assert 1 <= r['category_id'] <= 4 and 0 <= r['score'] <= 1
