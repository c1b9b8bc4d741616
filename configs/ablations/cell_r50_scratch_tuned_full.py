# The tuned recipe on every train image for its fixed 20 epochs, unvalidated (as cell_r50_full.py
# is for the original recipe): the last epoch is the model, judged on the test set only.
_base_ = '../cell_r50_scratch_tuned.py'

train_dataloader = dict(dataset=dict(ann_file=f'{_base_.ann_dir}train_all.json'))
val_dataloader = None
val_evaluator = None
val_cfg = None
train_cfg = dict(val_interval=_base_.max_epochs + 1)
default_hooks = dict(checkpoint=dict(save_best=None))
