# The original recipe (cell_r50) trained from scratch, for machines that cannot download weights.
# The from-scratch results of docs/results.md named "cell_r50_scratch" (the "original" recipe)
# come from this config; configs/cell_r50_scratch_tuned.py is the recipe tuned for it.
_base_ = './cell_r50.py'

# No weights: every stage trains. mmdet's fine-tuning defaults (stage 1 frozen, BatchNorm frozen
# in eval mode) assume pretrained weights and would leave a random stem and random BN statistics
# fixed forever. BN stays BN: a batch of 4 images of many cells gives each channel plenty of
# pixels for its statistics.
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=False))
load_from = None
