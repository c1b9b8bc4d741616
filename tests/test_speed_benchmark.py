"""benchmarks/speed.py starts, and its train item times the runs it names: the recipes' configs
with the settings and precisions it claims, bfloat16 skipped only where it says why; the eval
item's nuclei metrics run on its kind of input. No step is timed here (the benchmark is not a
test: it runs for minutes)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a package beside cellseg/, not installed
    sys.path.insert(0, str(REPO))

from benchmarks.references import (  # noqa: E402  (needs the repository on the path)
    PREVIOUS_TUNED_SETTINGS,
    mmdet_roi_head,
)
from benchmarks.speed_items import ITEMS, train  # noqa: E402


def test_help_lists_every_item_and_option() -> None:
    out = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'speed.py'), '--help'],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'}).stdout
    for option in ('--only', '--work-dir', '--markdown', '--rounds', '--train-iters',
                   '--train-steps', '--train-bf16', '--train-data-root', '--predict-config',
                   '--memory-heads'):
        assert option in out
    assert '{' + ','.join(ITEMS) + '}' in out


@pytest.mark.parametrize('cuda_visible', [False, True])
def test_train_item_configs(monkeypatch: pytest.MonkeyPatch, cuda_visible: bool) -> None:
    """Each timed variant: the committed config, or cell_r50_scratch_tuned with its previous RoI
    settings; float32 through OptimWrapper, bfloat16 through CpuAmpOptimWrapper, also where CUDA is
    visible (adapt_to_cpu then changes nothing, and the item still runs on the CPU)."""
    import torch
    from mmengine.optim import build_optim_wrapper

    from cellseg.engine.optimizers.cpu_amp_optim_wrapper import CpuAmpOptimWrapper

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda_visible)
    assert [(r.config, r.previous) for r in train.RECIPES] == [
        ('configs/cell_r50_scratch.py', False), ('configs/cell_r50_scratch_tuned.py', False),
        ('configs/cell_r50_scratch_tuned.py', True)]
    committed = train.load_config(REPO / 'configs' / 'cell_r50_scratch_tuned.py').model
    for recipe in train.RECIPES:
        for precision in ('fp32', 'bf16'):
            cfg = train.step_config(recipe, precision)
            rcnn, roi_head = cfg.model.train_cfg.rcnn, cfg.model.roi_head
            if recipe.previous:
                assert rcnn.sampler.num == 512 and roi_head.mask_pos_per_img is None
            elif recipe.name == 'cell_r50_scratch_tuned':  # today's settings, as committed
                assert rcnn.sampler.num == committed.train_cfg.rcnn.sampler.num
                assert roi_head.mask_pos_per_img == committed.roi_head.mask_pos_per_img
                assert (rcnn.sampler.num, roi_head.mask_pos_per_img) != (512, None)
            wrapper = cfg.optim_wrapper
            want = 'CpuAmpOptimWrapper' if precision == 'bf16' else 'OptimWrapper'
            assert wrapper.type == want
            assert 'loss_scale' not in wrapper
            if recipe.name.startswith('cell_r50_scratch_tuned'):
                assert wrapper.clip_grad.max_norm == 35  # the recipe's, kept
            built = build_optim_wrapper(torch.nn.Linear(2, 2), wrapper)
            assert isinstance(built, CpuAmpOptimWrapper) == (precision == 'bf16')
    with pytest.raises(ValueError, match='precision'):
        train.step_config(train.RECIPES[0], 'fp16')


def test_previous_settings_are_the_ones_named() -> None:
    cfg = train.step_config(train.RECIPES[2], 'fp32')
    assert cfg.model.train_cfg.rcnn.sampler.num == PREVIOUS_TUNED_SETTINGS[
        'model.train_cfg.rcnn.sampler.num']
    assert 'sampler.num=512' in train.PREVIOUS and 'mask_pos_per_img=None' in train.PREVIOUS
    # mmdet's RoI head takes none of cellseg's settings
    head = mmdet_roi_head(cfg.model.roi_head)
    assert head.type == 'StandardRoIHead' and head.mask_head.type == 'FCNMaskHead'
    assert not {'bbox_chunk', 'mask_chunk', 'mask_pos_per_img'} & set(head)
    assert cfg.model.roi_head.type == 'ChunkedRoIHead'  # a copy: the config is unchanged


def test_bf16_runs_where_native_or_asked_and_says_why_not() -> None:
    assert train.precision_plan(False, native=True) == (['fp32', 'bf16'], '')
    assert train.precision_plan(True, native=False) == (['fp32', 'bf16'], '')
    precisions, why = train.precision_plan(False, native=False)
    assert precisions == ['fp32']
    assert 'no native bfloat16' in why and '--train-bf16' in why


def test_nuclei_metrics_cost_of_perfect_detections() -> None:
    """The eval item's nuclei part on COCO ground truth and results: detections equal to the
    ground truth score PQ 1, and the first call and the cached one are timed."""
    from benchmarks.speed_items.eval import nuclei_metrics_cost
    from cellseg.structures.rle import encode_instances
    from cellseg.testing.demo_data import render_image

    images, anns, preds = [], [], []
    for image_id in (1, 2):
        _, ids, class_of_id = render_image(np.random.default_rng(image_id), 60, 80, 12)
        images.append(dict(id=image_id, height=60, width=80, file_name=f'{image_id}.tif'))
        for inst in encode_instances(ids):
            k = int(class_of_id[inst['id']])
            anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=k,
                             segmentation=inst['segmentation']))
            preds.append(dict(image_id=image_id, category_id=k, score=0.9,
                              segmentation=inst['segmentation']))
    categories = [dict(id=k, name=f'class{k}') for k in (1, 2, 3, 4)]
    out = nuclei_metrics_cost(dict(images=images, annotations=anns, categories=categories),
                              preds)
    assert out['summary']['pq'] == pytest.approx(1.0)
    assert out['summary']['n_images'] == 2
    assert len(out['seconds']) == 2 and all(t > 0 for t in out['seconds'])


def test_benchmark_models_have_the_data_s_four_classes() -> None:
    """The configs leave the classes to the data; the benchmarks' models (and a 4-class
    checkpoint loaded into them) need the heads sized to 4, not mmdet's 80."""
    from benchmarks.speed_items.common import load_config

    cfg = load_config(REPO / 'configs' / 'cell_r50_scratch_tuned.py')
    assert cfg.model.roi_head.bbox_head.num_classes == 4
    assert cfg.model.roi_head.mask_head.num_classes == 4
