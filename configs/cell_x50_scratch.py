# The backbone ablation: ResNeXt-50 32x4d instead of ResNet-50, everything else as cell_r50_scratch.
# (as mmdet's mask-rcnn_x101-32x4d_fpn does for depth 101)
_base_ = './cell_r50_scratch.py'

model = dict(backbone=dict(type='ResNeXt', depth=50, groups=32, base_width=4))
