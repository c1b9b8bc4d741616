_base_ = 'mmdet::_base_/default_runtime.py'

# cellseg's registered modules: the dataset, the TIFF loader, the metric, the checkpoint
# loader that lets torch >= 2.6 read mmengine checkpoints (see cellseg/checkpoint_loader.py), the
# atomic checkpoint writer (cellseg/atomic_checkpoints.py), the non-finite loss check, and the
# fast mask loader, the chunked RoI and mask heads and the one-pass JSON writer (docs/speed.md).
custom_imports = dict(
    imports=['cellseg.cell_dataset', 'cellseg.transforms', 'cellseg.cell_coco_metric',
             'cellseg.load_cell_annotations', 'cellseg.chunked_mask_head',
             'cellseg.chunked_roi_head', 'cellseg.fast_json',
             'cellseg.checkpoint_loader', 'cellseg.atomic_checkpoints',
             'cellseg.nonfinite_loss_hook', 'cellseg.plot_curves_hook', 'cellseg.engine',
             'cellseg.models'],
    allow_failed_imports=False)

# A NaN/inf loss stops the run naming the iteration and the loss terms, before CheckpointHook
# could save NaN weights (the hook's priority is VERY_HIGH; see cellseg/nonfinite_loss_hook.py).
# PlotCurvesHook writes work_dir/curves.png (losses, lr, validation AP50) when training ends.
# RNGStateHook saves the global random states with each checkpoint, so a resumed run samples
# the RoIs an uninterrupted one samples (cellseg/engine/hooks/rng_state_hook.py).
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='PlotCurvesHook'),
                dict(type='RNGStateHook')]

# The recipe's AmpOptimWrapper on a machine without CUDA (tools/train.py --cpu-amp overrides):
# 'auto' trains under a bfloat16 autocast where the CPU computes bfloat16 natively (avx512_bf16
# or amx_bf16) and in float32 elsewhere, 'bf16' always autocasts, 'off' never does.
cpu_amp = 'auto'

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    # Keep the latest checkpoints (for --resume) and the best epoch on the leaderboard metric.
    # Two, not one: CheckpointHook deletes the oldest before writing the newest, so with one a
    # kill in between would leave nothing to resume from.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2,
                    save_best='coco/segm_mAP_50', rule='greater'))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
