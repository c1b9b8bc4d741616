# cell_r50 with a local ImageNet ResNet-50 checkpoint (torchvision's resnet50 weights saved as a
# state dict). Pretrained BN statistics and the stem are then worth keeping, so mmdet's defaults
# return: stage 1 frozen, BN frozen in eval mode.
_base_ = './cell_r50.py'

pretrained = 'checkpoints/resnet50-imagenet.pth'  # a local path: nothing is downloaded
model = dict(
    backbone=dict(frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
