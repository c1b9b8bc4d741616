# Lever of issue 28 (screened by benchmarks/accuracy.py against cell_r50_scratch_tuned): the tuned
# recipe with GroupNorm in backbone, neck and heads, as mmdet's
# configs/scratch/mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py trains Mask R-CNN from scratch
# ("Rethinking ImageNet Pre-training", He et al. 2019).
# Why these values (each mmdet's scratch config's):
# - GN with 32 groups: its statistics are per image, so they do not depend on the batch (4 here,
#   1 per forward pass of a large image at test time); the paper trains every normalised layer
#   from scratch with it.
# - the same GN in the FPN, and a box head of four 256-channel convolutions and one FC
#   (Shared4Conv1FCBBoxHead) with GN, and GN in the mask head's convolutions: mmdet's "gn-all".
# - zero_init_residual off, nothing frozen, no init checkpoint: random weights throughout.
# - no weight decay on the GN scales and shifts (norm_decay_mult 0).
# The rest of the tuned recipe (learning rate, warm-up, clip, flips, RoI counts) is unchanged, so
# the screen shows what the normalisation does at the tuned recipe's settings. The extra box-head
# convolutions run on every sampled RoI, so a step costs more (the training minutes say how much).
_base_ = '../cell_r50_scratch_tuned.py'

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(frozen_stages=-1, zero_init_residual=False, norm_cfg=norm_cfg,
                  init_cfg=None),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                       norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.))
