"""Which weights a training starts from (``tools/train.py --pretrained``), and fetching them
before the first iteration, so that a machine without a network stops at once with one line
saying what to do instead of failing inside the Runner."""
from __future__ import annotations

import os

import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper

from cellseg.engine.checkpoint_loader import fetch, is_url

# mmdet's COCO Mask R-CNN R50-FPN (1x), the weights configs/cell_r50.py fine-tunes
# (tests/test_configs.py checks that the two name the same file)
COCO_MASK_RCNN_R50 = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
                      'mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth')
# the ImageNet backbones mmdet's own configs name, by (backbone type, depth)
IMAGENET = {('ResNet', 18): 'torchvision://resnet18', ('ResNet', 34): 'torchvision://resnet34',
            ('ResNet', 50): 'torchvision://resnet50', ('ResNet', 101): 'torchvision://resnet101',
            ('ResNeXt', 50): 'open-mmlab://resnext50_32x4d',
            ('ResNeXt', 101): 'open-mmlab://resnext101_32x4d'}
# mmdet's backbone settings for pretrained weights (its Mask R-CNN base: stem and stage 1 frozen,
# BN statistics kept) and cell_r50_scratch's for random ones (every stage and BN statistic
# trains, since frozen random weights would stay random)
PRETRAINED_BACKBONE = dict(frozen_stages=1, norm_eval=True)
SCRATCH_BACKBONE = dict(frozen_stages=-1, norm_eval=False)
CHOICES = ('coco', 'imagenet', 'none')
OFFLINE_HINT = ('or train from scratch offline: tools/train.py '
                'configs/cell_r50_scratch_tuned.py (or --pretrained none)')


def choose_pretrained(cfg: Config, choice: str) -> str:
    """Set the weights a training starts from; return the line to log.

    ``coco``: mmdet's COCO Mask R-CNN (ResNet-50 backbones); ``imagenet``: the backbone's
    ImageNet weights; ``none``: from scratch; anything else: a whole-model checkpoint file or
    URL (``load_from``). Pretrained weights get mmdet's fine-tuning settings (stem and stage 1
    frozen, BN statistics kept), ``none`` trains every stage and BN statistic.
    """
    backbone = cfg.model.backbone
    kind = (backbone.get('type'), backbone.get('depth'))
    backbone.init_cfg, cfg.load_from = None, None
    if choice == 'none':
        backbone.update(SCRATCH_BACKBONE)
        return 'pretrained: none; every weight starts from its initialisation'
    if choice == 'coco':
        if kind != ('ResNet', 50):
            raise ValueError(f'{cfg.filename}: --pretrained coco is mmdet\'s COCO Mask R-CNN '
                             f'R50-FPN, but the backbone is {kind[0]}-{kind[1]}: use '
                             '--pretrained imagenet or a checkpoint file')
        cfg.load_from = COCO_MASK_RCNN_R50
    elif choice == 'imagenet':
        if kind not in IMAGENET:
            raise ValueError(f'{cfg.filename}: no ImageNet weights known for {kind[0]}-{kind[1]}'
                             f' (known: {", ".join(f"{t}-{d}" for t, d in IMAGENET)})')
        backbone.init_cfg = ConfigDict(type='Pretrained', checkpoint=IMAGENET[kind])
    else:
        if not is_url(choice) and not os.path.isfile(choice):
            raise FileNotFoundError(f'{choice}: no such checkpoint file (--pretrained takes '
                                    f'{", ".join(CHOICES)}, a file or a URL)')
        cfg.load_from = choice
    backbone.update(PRETRAINED_BACKBONE)
    source = cfg.load_from or backbone.init_cfg.checkpoint
    return f'pretrained: {choice} ({source}); stem and stage 1 frozen, BN statistics kept'


def weight_sources(cfg: Config) -> list[str]:
    """The URLs and model-zoo names a config's training reads weights from: ``load_from`` and
    every ``Pretrained`` init_cfg of the model."""
    found = [cfg.load_from] if cfg.get('load_from') and not cfg.get('resume') else []
    todo = [cfg.model]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            init = node.get('init_cfg')
            for item in init if isinstance(init, list) else [init]:
                if isinstance(item, dict) and item.get('type') == 'Pretrained':
                    found.append(item.get('checkpoint'))
            todo.extend(v for k, v in node.items() if k != 'init_cfg')
        elif isinstance(node, (list, tuple)):
            todo.extend(node)
    return [s for s in found if is_url(s)]


def fetch_weights(cfg: Config) -> list[str]:
    """Download every URL the training reads weights from into the torch hub cache (once);
    a failure raises ``CheckpointError`` naming the URL, the cache path where a copy can be
    placed and the from-scratch config. Returns the local paths."""
    return [os.fspath(fetch(source, OFFLINE_HINT)) for source in weight_sources(cfg)]


def reinitialised_weights(model: torch.nn.Module, checkpoint: dict) -> list[str]:
    """The weights of ``model`` that ``checkpoint`` does not give, because it lacks them or
    holds another shape (mmdet's COCO heads: the class layers), so they keep their
    initialisation when the Runner loads it (mmengine's ``load_state_dict``, strict=False)."""
    model = model.module if is_model_wrapper(model) else model
    given = checkpoint.get('state_dict', checkpoint)
    given = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in given.items()}
    return [k for k, v in model.state_dict().items()
            if k not in given or tuple(given[k].shape) != tuple(v.shape)]
