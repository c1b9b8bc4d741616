# Full data: train on every train image for the recipe's fixed 20 epochs, with no validation loop
# and so no best-epoch choice (the last epoch is the model). Only the competition test set can
# judge it: `tools/test.py ... --submit`; evaluating it on fold files would score training images.
_base_ = '../cell_r50.py'

train_dataloader = dict(dataset=dict(ann_file=f'{_base_.ann_dir}train_all.json'))
val_dataloader = None
val_evaluator = None
val_cfg = None
train_cfg = dict(val_interval=_base_.max_epochs + 1)
default_hooks = dict(checkpoint=dict(save_best=None))
