# Lever of issue 28 (screened by benchmarks/accuracy.py against cell_r50_scratch_tuned): the tuned
# recipe with mmdet's Cascade Mask R-CNN RoI head (Cai and Vasconcelos, "Cascade R-CNN", 2018),
# as BoomStarcuc/Cell-Segmentation-Benchmark trains it on LIVECell.
# Why: a cell's box is small (CoNSeP median 16.5 px), so a few pixels of box error are a large
# share of its IoU; three box stages trained at IoU 0.5, 0.6 and 0.7 refine the boxes the mask
# head is cut from, and the masks of the three stages are averaged.
# How: mmdet's configs/_base_/models/cascade-mask-rcnn_r50_fpn.py's roi_head settings (stages,
# loss weights, class-agnostic box regression with each stage's target_stds and SmoothL1 beta 1,
# IoU thresholds, no low-quality matches) on the tuned recipe's heads and sampler (128 RoIs per
# image and stage); its mask head is the tuned recipe's (ChunkedMaskHead) at every stage.
# CascadeRoIHead extracts RoIs per stage, so the extractors are Float32RoIExtractor (mmcv's CPU
# RoIAlign under the bf16 autocast of training). ChunkedRoIHead's settings go with it: no chunks
# at prediction, no per-class cap before the mask head, and the mask branch learns on every
# positive of each stage instead of 16 per image.
# Detections: at most 400 per image (CoNSeP's 4 classes x the 100 that AP at 100 detections
# counts), since without the per-class cap each of up to 1000 detections goes through three mask
# heads (a test of the 112 CoNSeP images would take about two hours on one thread); an image
# whose best 100 of one class fall outside its best 400 loses a few low-scored detections. (A
# tiled large image keeps the recipe's cap by area for the merged tiles.)
# Cost: three box heads and three mask heads in training and at prediction, where every
# detection's mask is predicted three times; the training minutes of the screen say how much.
_base_ = '../cell_r50_scratch_tuned.py'

_head = _base_.model.roi_head
_rcnn = _base_.model.train_cfg.rcnn
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067]]
stage_iou_thrs = [0.5, 0.6, 0.7]
model = dict(
    roi_head=dict(
        _delete_=True,
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(_head.bbox_roi_extractor, type='Float32RoIExtractor'),
        bbox_head=[
            dict(_head.bbox_head, reg_class_agnostic=True,
                 bbox_coder=dict(_head.bbox_head.bbox_coder, target_stds=stds),
                 loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
            for stds in stage_target_stds],
        mask_roi_extractor=dict(_head.mask_roi_extractor, type='Float32RoIExtractor'),
        mask_head=_head.mask_head),
    train_cfg=dict(rcnn=[
        dict(_rcnn, assigner=dict(_rcnn.assigner, pos_iou_thr=thr, neg_iou_thr=thr,
                                  min_pos_iou=thr, match_low_quality=False))
        for thr in stage_iou_thrs]),
    test_cfg=dict(rcnn=dict(max_per_img=400)))
