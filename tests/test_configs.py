"""Each child config differs from its parent only where it says (checked on merged configs)."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'


def flatten(obj: object, prefix: str = '') -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(flatten(v, f'{prefix}.{k}' if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f'{prefix}[{i}]'))
        return out or {prefix: type(obj)()}
    return {prefix: obj}


def changed_keys(child: str, parent: str) -> set[str]:
    a = flatten(Config.fromfile(CONFIGS / child).to_dict())
    b = flatten(Config.fromfile(CONFIGS / parent).to_dict())
    return {k for k in a.keys() | b.keys() if a.get(k, '<absent>') != b.get(k, '<absent>')}


def test_cell_r50_is_the_recipe() -> None:
    """The study's recipe, fine-tuned from mmdet's COCO Mask R-CNN R50-FPN with mmdet's settings
    for pretrained weights."""
    import mmdet

    cfg = Config.fromfile(CONFIGS / 'cell_r50.py')
    assert cfg.model.type == 'MaskRCNN' and cfg.model.backbone.type == 'ResNet'
    assert cfg.model.backbone.depth == 50 and cfg.model.neck.type == 'FPN'
    # the classes are the data's: no head names a count until tools/train.py sizes them
    from cellseg.apis.classes import set_classes

    assert cfg.model.roi_head.bbox_head.num_classes == 80  # mmdet's COCO base, left as it is
    classes = ('tumour', 'lymphocyte', 'stroma', 'necrosis', 'other')
    set_classes(cfg, classes)
    assert cfg.model.roi_head.bbox_head.num_classes == 5
    assert cfg.model.roi_head.mask_head.num_classes == 5
    assert cfg.train_dataloader.dataset.metainfo.classes == classes
    assert len(set(cfg.train_dataloader.dataset.metainfo.palette)) == 5  # a colour each
    assert cfg.load_from.startswith('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/')
    assert cfg.load_from.endswith('/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth')
    mmdet_base = Config.fromfile(
        Path(mmdet.__file__).parent / '.mim/configs/_base_/models/mask-rcnn_r50_fpn.py')
    for key in ('frozen_stages', 'norm_cfg', 'norm_eval'):  # stem and stage 1 frozen, BN kept
        assert cfg.model.backbone[key] == mmdet_base.model.backbone[key], key
    assert cfg.model.backbone.init_cfg is None  # load_from gives every backbone weight
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    (sched,) = cfg.param_scheduler
    assert sched.type == 'CosineAnnealingLR' and sched.eta_min == 1e-6 and sched.T_max == 20
    assert cfg.train_cfg.max_epochs == 20 and cfg.train_dataloader.batch_size == 4
    assert not any(t['type'] == 'Resize' for t in cfg.train_dataloader.dataset.pipeline)
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize']
    assert resize == [dict(type='Resize', scale_factor=1.0, keep_ratio=True)]
    coco, nuclei = cfg.val_evaluator  # mmdet's COCO metric beside the nuclei metrics
    assert coco.type == 'PerClassCocoMetric' and nuclei.type == 'NucleiMetric'
    assert coco.metric == ['bbox', 'segm'] and coco.classwise
    # AP at the leaderboard's 100 detections in validation and test (1000 when asked)
    assert coco.proposal_nums == (1, 10, 100)
    assert cfg.test_evaluator[0].proposal_nums == (1, 10, 100)
    assert cfg.test_evaluator[1] == nuclei and nuclei.ann_file == coco.ann_file
    assert cfg.default_hooks.checkpoint.save_best == 'coco/segm_mAP_50'
    assert cfg.custom_imports.imports == ['cellseg.visualization', 'cellseg.datasets',
                                         'cellseg.models', 'cellseg.evaluation', 'cellseg.engine']


def test_scratch_changes_only_the_weights_and_what_they_need() -> None:
    """cell_r50_scratch: no weights, every stage and BN statistic trained; nothing else."""
    assert changed_keys('cell_r50_scratch.py', 'cell_r50.py') == {
        'load_from', 'model.backbone.frozen_stages', 'model.backbone.norm_eval'}
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch.py')
    assert cfg.load_from is None and cfg.model.backbone.init_cfg is None
    assert cfg.model.backbone.frozen_stages == -1 and cfg.model.backbone.norm_eval is False


def test_x50_changes_only_the_backbone() -> None:
    assert changed_keys('cell_x50_scratch.py', 'cell_r50_scratch.py') == {
        'model.backbone.type', 'model.backbone.groups', 'model.backbone.base_width'}
    # mmdet has no COCO Mask R-CNN X50: the fine-tuned one starts from ImageNet ResNeXt-50
    assert changed_keys('cell_x50.py', 'cell_r50.py') == {
        'load_from', 'model.backbone.type', 'model.backbone.groups', 'model.backbone.base_width',
        'model.backbone.init_cfg.type', 'model.backbone.init_cfg.checkpoint',
        'model.backbone.init_cfg'}
    cfg = Config.fromfile(CONFIGS / 'cell_x50.py')
    assert cfg.model.backbone.init_cfg.checkpoint == 'open-mmlab://resnext50_32x4d'


@pytest.mark.parametrize('k', range(5))
def test_fold_configs_change_only_their_annotation_files(k: int) -> None:
    child = Config.fromfile(CONFIGS / 'ablations' / f'cell_r50_fold{k}.py')
    assert changed_keys(f'ablations/cell_r50_fold{k}.py', 'cell_r50.py') <= {
        'fold', 'train_dataloader.dataset.ann_file', 'val_dataloader.dataset.ann_file',
        'test_dataloader.dataset.ann_file',
        *(f'{loop}_evaluator[{i}].ann_file' for loop in ('val', 'test') for i in (0, 1))}
    assert child.train_dataloader.dataset.ann_file.endswith(f'fold{k}_train.json')
    assert child.val_dataloader.dataset.ann_file.endswith(f'fold{k}_val.json')
    for ev in (*child.val_evaluator, *child.test_evaluator):  # the COCO and nuclei metrics
        assert ev.ann_file.endswith(f'fold{k}_val.json')


def test_full_data_trains_on_everything_without_validation() -> None:
    child = Config.fromfile(CONFIGS / 'ablations' / 'cell_r50_full.py')
    assert child.train_dataloader.dataset.ann_file.endswith('train_all.json')
    assert child.val_dataloader is None and child.val_cfg is None and child.val_evaluator is None
    assert child.default_hooks.checkpoint.save_best is None
    changed = changed_keys('ablations/cell_r50_full.py', 'cell_r50.py')
    assert all(k.startswith(('val_', 'train_dataloader.dataset.ann_file', 'train_cfg.val_interval',
                             'default_hooks.checkpoint.save_best')) for k in changed), changed


def test_aug_changes_only_the_training_pipeline() -> None:
    changed = changed_keys('ablations/cell_r50_aug.py', 'cell_r50.py')
    assert changed and all(k.startswith(('train_pipeline', 'train_dataloader.dataset.pipeline'))
                           for k in changed), changed
    pipeline = Config.fromfile(CONFIGS / 'ablations' / 'cell_r50_aug.py').train_pipeline
    types = [t['type'] for t in pipeline]
    assert {'RandomFlip', 'Rotate', 'PhotoMetricDistortion'} <= set(types)
    assert 'Resize' not in types


def test_imagenet_config_keeps_mmdets_backbone_norm_settings() -> None:
    """cell_r50_imagenet keeps mmdet's settings for pretrained weights: its frozen stages and BN
    settings are those of mmdet's Mask R-CNN base (BN trainable, statistics frozen by norm_eval),
    and its backbone weights the ImageNet ones mmdet's base names."""
    import mmdet

    base = Path(mmdet.__file__).parent / '.mim/configs/_base_/models/mask-rcnn_r50_fpn.py'
    mmdet_base = Config.fromfile(base).model.backbone  # the file cell_r50.py's _base_ names
    imagenet = Config.fromfile(CONFIGS / 'cell_r50_imagenet.py')
    backbone = imagenet.model.backbone
    for key in ('frozen_stages', 'norm_cfg', 'norm_eval', 'init_cfg'):
        assert backbone[key] == mmdet_base[key], key
    assert imagenet.load_from is None
    assert mmdet_base.norm_cfg.requires_grad is True  # what the config's comment relies on


def test_visualization_hook_draws_rle_masks() -> None:
    """mmdet's --show-dir (draw=True) on ChunkedMaskHead's RLE masks needs cellseg's hook:
    mmdet's DetVisualizationHook crashes on them (tests/test_cell_visualization_hook.py)."""
    cfg = Config.fromfile(CONFIGS / 'cell_r50_scratch.py')
    assert cfg.model.roi_head.mask_head.type == 'ChunkedMaskHead'
    assert cfg.default_hooks.visualization.type == 'CellVisualizationHook'
