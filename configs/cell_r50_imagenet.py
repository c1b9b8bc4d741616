# cell_r50 with a local ImageNet ResNet-50 checkpoint (torchvision's resnet50 weights saved as a
# state dict). Pretrained BN statistics and the stem are then worth keeping, so mmdet's defaults
# (mmdet::_base_/models/mask-rcnn_r50_fpn.py) return: stem and stage 1 frozen, BN in eval mode
# (norm_eval: its running statistics stay ImageNet's), its affine weights trained
# (requires_grad=True) outside the frozen stages. tests/test_configs.py checks these against mmdet.
_base_ = './cell_r50.py'

pretrained = 'checkpoints/resnet50-imagenet.pth'  # a local path: nothing is downloaded
# _delete_: cell_r50 sets init_cfg=None, and mmengine refuses to merge a dict into a None
model = dict(
    backbone=dict(frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
                  init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=pretrained)))
