# The backbone ablation of the study: ResNeXt-50 32x4d instead of ResNet-50 (as mmdet's
# mask-rcnn_x101-32x4d_fpn does for depth 101). mmdet has no COCO Mask R-CNN with this backbone,
# so it starts from the ImageNet ResNeXt-50 32x4d weights mmdet's configs name (downloaded once
# into the torch hub cache); neck and heads start from their initialisation.
_base_ = './cell_r50.py'

model = dict(
    backbone=dict(type='ResNeXt', depth=50, groups=32, base_width=4,
                  # _delete_: cell_r50 sets init_cfg=None, and mmengine cannot merge into None
                  init_cfg=dict(_delete_=True, type='Pretrained',
                                checkpoint='open-mmlab://resnext50_32x4d')))
load_from = None
