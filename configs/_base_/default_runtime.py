_base_ = 'mmdet::_base_/default_runtime.py'

# cellseg's registered modules, one package per layer of mmdet's shape (importing a package
# registers everything in it): the visualizer, the dataset and its loaders, the model parts, the
# metric, and the training machinery (hooks, CPU mixed precision, checkpoint loading for
# torch >= 2.6, atomic checkpoints).
custom_imports = dict(
    imports=['cellseg.visualization', 'cellseg.datasets', 'cellseg.models', 'cellseg.evaluation',
             'cellseg.engine'],
    allow_failed_imports=False)

# mmdet's visualizer (its vis_backends and name kept) drawing cells as predict's overlays do:
# contours coloured by class from the dataset's palette, a legend counting each class, and masks
# given as the RLEs ChunkedMaskHead predicts (cellseg/visualization/cell_local_visualizer.py)
visualizer = dict(type='CellLocalVisualizer')

# A NaN/inf loss stops the run naming the iteration and the loss terms, before CheckpointHook
# could save NaN weights (its priority is VERY_HIGH; cellseg/engine/hooks/non_finite_loss_hook.py).
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
                    save_best='coco/segm_mAP_50', rule='greater'),
    # mmdet's DetVisualizationHook reads a 16-bit image as value / 256 (nearly black) and names
    # HW3's train/<name>/image.tif pictures alike; cellseg's reads images as training does and
    # draws with the CellLocalVisualizer above (draw=True, mmdet's --show-dir)
    visualization=dict(type='CellVisualizationHook'))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
