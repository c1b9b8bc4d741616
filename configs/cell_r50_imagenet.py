# cell_r50 from ImageNet ResNet-50 weights (torchvision's, as mmdet's own base config names them)
# instead of the COCO Mask R-CNN: the backbone starts pretrained, neck and heads from their
# initialisation. mmdet's fine-tuning settings of cell_r50 stay (stem and stage 1 frozen, BN in
# eval mode). tests/test_configs.py checks these against mmdet.
_base_ = './cell_r50.py'

model = dict(
    backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                checkpoint='torchvision://resnet50')))
load_from = None
