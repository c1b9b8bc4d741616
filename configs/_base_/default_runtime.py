_base_ = 'mmdet::_base_/default_runtime.py'

# cellseg's registered modules: the dataset, the TIFF loader, the metric, and the checkpoint
# loader that lets torch >= 2.6 read mmengine checkpoints (see cellseg/checkpoint_loader.py).
custom_imports = dict(
    imports=['cellseg.cell_dataset', 'cellseg.transforms', 'cellseg.cell_coco_metric',
             'cellseg.checkpoint_loader'],
    allow_failed_imports=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    # Keep the latest checkpoint (for --resume) and the best epoch on the leaderboard metric.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1,
                    save_best='coco/segm_mAP_50', rule='greater'))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
