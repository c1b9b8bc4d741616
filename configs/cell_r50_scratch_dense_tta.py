# cell_r50_scratch_dense_tiled with test-time augmentation: the four flips (none, horizontal,
# vertical, both) merged with their masks by cellseg/models/test_time_augs/mask_tta_model.py; all
# eight symmetries of the square (flips and quarter turns): cell_r50_scratch_dense_tta8.py. Same
# weights as cell_r50_scratch_dense. Only `tools/test.py ... --tta` uses tta_model and tta_pipeline;
# without it this config is cell_r50_scratch_dense_tiled.
_base_ = './cell_r50_scratch_dense_tiled.py'

tta_model = dict(
    type='MaskTTAModel',
    tta_cfg=dict(
        # the same cell seen in two views overlaps itself far more than a neighbour does
        match_iou=0.5,
        # a pixel is in the merged cell when at least half of the views that found it hold it
        vote_thr=0.5,
        # a cell found in fewer views ranks lower: the mean counts a missing view as 0
        score='mean',
        # merged views keep as many cells as one prediction does
        max_per_img=_base_.model.test_cfg.rcnn.max_per_img))

# cells have no up or down, so every flip is as valid a view as the original
tta_pipeline = [
    dict(type='LoadCellImageFromFile', percentiles=_base_.image_percentiles,
         backend_args=None),
    dict(type='TestTimeAug',
         transforms=[
             [dict(type='Resize', scale_factor=1.0, keep_ratio=True)],
             [dict(type='RandomFlip', prob=0.),
              dict(type='RandomFlip', prob=1., direction='horizontal'),
              dict(type='RandomFlip', prob=1., direction='vertical'),
              dict(type='RandomFlip', prob=1., direction='diagonal')],
             # rot90: the quarter turns of a Rot90 view (cell_r50_scratch_dense_tta8.py), absent
             # here
             [dict(type='PackDetInputs',
                   meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                              'flip', 'flip_direction', 'rot90'))]])]
