# Issue 28's full schedule for the colour lever: cell_r50_scratch_tuned_colour.py on every train
# image for the recipe's fixed 20 epochs, unvalidated, the last epoch being the model (the same
# settings cell_r50_scratch_tuned_full.py gives the tuned recipe; mmengine refuses two bases that
# both set train_dataloader, so they are repeated here).
_base_ = './cell_r50_scratch_tuned_colour.py'

train_dataloader = dict(dataset=dict(ann_file=f'{_base_.ann_dir}train_all.json'))
val_dataloader = None
val_evaluator = None
val_cfg = None
train_cfg = dict(val_interval=_base_.max_epochs + 1)
default_hooks = dict(checkpoint=dict(save_best=None))
