# 5-fold cross-validation, fold 1: train on the other four folds; validate on this one, where
# the best epoch is chosen. The folds come from data_prep/hw3_to_coco.py --folds 5.
_base_ = '../cell_r50.py'

fold = 1
train_dataloader = dict(dataset=dict(ann_file=f'{_base_.ann_dir}fold{fold}_train.json'))
val_dataloader = dict(dataset=dict(ann_file=f'{_base_.ann_dir}fold{fold}_val.json'))
test_dataloader = val_dataloader
val_evaluator = [dict(e, ann_file=f'{_base_.data_root}{_base_.ann_dir}fold{fold}_val.json')
                 for e in _base_.val_evaluator]
test_evaluator = [dict(e, ann_file=f'{_base_.data_root}{_base_.ann_dir}fold{fold}_val.json')
                  for e in _base_.test_evaluator]
