# HW3 cell data: images at native resolution, COCO annotations from data_prep/hw3_to_coco.py.
# tools/train.py and tools/test.py accept --data-root and --ann-dir to point these elsewhere.
dataset_type = 'CellDataset'
data_root = 'data/hw3/'
ann_dir = 'annotations/'  # relative to data_root: where hw3_to_coco.py --out-dir wrote the JSON
backend_args = None
# Images other than uint8 (16-bit, float) are normalised from these percentiles of each image to
# 0..255 (csbdeep/StarDist's normalize(img, 1, 99.8)): one outlier pixel cannot set the contrast.
# Saved with every checkpoint, so prediction reads images as training did.
image_percentiles = (1.0, 99.8)

train_pipeline = [
    dict(type='LoadCellImageFromFile', percentiles=image_percentiles,
         backend_args=backend_args),
    dict(type='LoadCellAnnotations', with_bbox=True, with_mask=True),
    # No resizing: the original study trained at native resolution, and cells are 8-40 px, so
    # downscaling would erase the small ones. Only images over 1024 px (up to 2500 px occur) are
    # cut to a random 1024x1024 window each time they are drawn, bounding memory per batch;
    # smaller images pass through whole. Boxes are recomputed from the cropped masks.
    dict(type='RandomCrop', crop_size=(1024, 1024), recompute_bbox=True,
         allow_negative_crop=True),
    # a cell whose box overlaps the crop but whose pixels do not gets a zero-size box from
    # recompute_bbox, and log(0) in the box targets makes the loss NaN: drop such cells
    # (an image left without cells stays, as a negative)
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), min_gt_mask_area=1, by_mask=True,
         keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadCellImageFromFile', percentiles=image_percentiles,
         backend_args=backend_args),
    # A no-op resize: mmdet's heads read `scale_factor` to map boxes back to the original image.
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=ann_dir + 'fold0_train.json',
        data_prefix=dict(img=''),
        # Images without cells stay in training as negatives, and no size filter: 33 px images
        # are real data. (mmdet's defaults drop both silently.)
        filter_cfg=dict(filter_empty_gt=False, min_size=0),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=ann_dir + 'fold0_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# mmdet's CocoMetric (PerClassCocoMetric adds per-class AP and AP50 from the same COCOeval run)
# beside the nuclei metrics, one list evaluator. maxDets (1, 10, 100) is pycocotools' default and
# the leaderboard's: coco/segm_mAP_50, the number the best checkpoint is chosen on, counts up to
# 100 detections per image and class, and tools/test.py has the model compute masks for no more
# (keep_what_the_metrics_count). AP at 1000 as well, from the same evaluation, when asked:
# --cfg-options "test_evaluator.0.proposal_nums=(1,10,100,1000)" (the model then keeps up to 1000
# per class, and its mask head runs on each). The nuclei metrics score the masks
# tools/predict.py would keep (>= 0.5).
val_evaluator = [
    dict(type='PerClassCocoMetric', ann_file=data_root + ann_dir + 'fold0_val.json',
         metric=['bbox', 'segm'], classwise=True, proposal_nums=(1, 10, 100),
         backend_args=backend_args),
    dict(type='NucleiMetric', ann_file=data_root + ann_dir + 'fold0_val.json', classwise=True,
         score_thr=0.5, backend_args=backend_args),
]
test_evaluator = val_evaluator
