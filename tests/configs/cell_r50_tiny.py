# A child of cell_r50_scratch small enough to train for a few iterations inside a test on a 2-core
# CPU: a narrow ResNet-18 and heads, few proposals, the tiny generated data (paths set by the tests
# with --data-root/--ann-dir). Everything else (loaders, metric, schedule types) is
# cell_r50_scratch's.
_base_ = '../../configs/cell_r50_scratch.py'

width = 32
model = dict(
    backbone=dict(depth=18, base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=300, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(ann_file='annotations/train_all.json'))
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-6, begin=0,
                        end=max_epochs, by_epoch=True, convert_to_iter_based=True)]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(max_keep_ckpts=3))
log_processor = dict(window_size=1)
