# Ablation of the tuned recipe: everything of cell_r50_scratch_tuned but the training flips, so that
# benchmarks/accuracy.py can tell what the flips give apart from the learning-rate changes
# (cell_r50_scratch_dense, the dense settings alone, gives the third share).
_base_ = '../cell_r50_scratch_tuned.py'

train_pipeline = [t for t in _base_.train_pipeline if t['type'] != 'RandomFlip']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
