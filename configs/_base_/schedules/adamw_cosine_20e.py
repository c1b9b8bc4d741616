# The original study's schedule: AdamW lr 1e-4, weight decay 1e-4, cosine to 1e-6 over 20 epochs,
# mixed precision. Without a GPU (mmengine's AMP needs CUDA) tools/train.py makes AmpOptimWrapper a
# bfloat16 autocast on the CPU (CpuAmpOptimWrapper) where the CPU computes bfloat16 natively, and
# OptimWrapper (float32) elsewhere, and logs which (cpu_amp in default_runtime.py chooses).
max_epochs = 20
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-6, begin=0, end=max_epochs,
         by_epoch=True, convert_to_iter_based=True),
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))

# The recipe's lr is for a total batch of 4 (4 per GPU on one GPU); `--auto-scale-lr` scales it.
auto_scale_lr = dict(enable=False, base_batch_size=4)
