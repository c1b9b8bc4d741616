# The demo: a small child of cell_r50 that learns the generated demo cells in a few minutes on a
# 2-core CPU. What differs from the recipe, and why:
# - a half-width ResNet-18 with 64-channel neck and heads (see below);
# - 256x256 random crops of each training image (no resizing, as in the recipe): small batches
#   of cell-sized work keep an iteration under a second;
# - lr 1e-3 (with a short warm-up): the recipe's 1e-4 learns too slowly for a few-minute run.
_base_ = '../cell_r50.py'

data_root = 'work_dirs/demo/data/'
ann_dir = 'annotations/'
max_epochs = 20

width = 64
model = dict(
    # ResNet-18 at half width with 64-channel FPN and heads: the heads, not the backbone, dominate
    # a Mask R-CNN step on a CPU, and 64 channels are plenty for four kinds of synthetic cells
    backbone=dict(depth=18, base_channels=32),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width)),
    # a 256 px crop holds at most ~60 demo cells: 500 proposals and 256 sampled RoIs per image
    # are plenty and halve the RoI heads' cost
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=500),
                   rcnn=dict(sampler=dict(num=256))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=500)))

train_pipeline = [
    dict(type='LoadCellImageFromFile'),
    dict(type='LoadCellAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomCrop', crop_size=(256, 256), recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), min_gt_mask_area=1, by_mask=True,
         keep_empty=False),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, ann_file=ann_dir + 'train_all.json',
                 pipeline=train_pipeline))
# validation on the demo's held-out test images, whose ground truth the generator writes
val_dataloader = dict(
    num_workers=1,
    dataset=dict(data_root=data_root, ann_file='test_gt.json', data_prefix=dict(img='')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'test_gt.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, begin=0, end=max_epochs,
         by_epoch=True, convert_to_iter_based=True),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=5))
randomness = dict(seed=0)  # the demo gives the same numbers on every run of the same machine
