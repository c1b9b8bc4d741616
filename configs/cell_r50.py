# Mask R-CNN R50-FPN for cell instance segmentation: the original study's recipe, fine-tuned from
# mmdet's COCO Mask R-CNN R50-FPN as the study fine-tuned a COCO-pretrained model (HW3 has four
# classes; the heads take as many as the data has). Without a network use the from-scratch
# recipes: configs/cell_r50_scratch_tuned.py (recommended offline) or configs/cell_r50_scratch.py.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/datasets/hw3_cells.py',
    './_base_/schedules/adamw_cosine_20e.py',
    './_base_/default_runtime.py',
]

# mmdet's fine-tuning settings for pretrained weights stay: stem and stage 1 frozen, BatchNorm
# statistics kept (norm_eval). The backbone's own ImageNet init_cfg is dropped: load_from
# overwrites every backbone weight, so fetching ImageNet weights too would be wasted.
model = dict(
    backbone=dict(init_cfg=None),
    # proposals in float32 when the layers run under a CPU bfloat16 autocast (mmcv's CPU nms
    # takes float32 only; cellseg/models/dense_heads/float32_proposal_rpn_head.py)
    rpn_head=dict(type='Float32ProposalRPNHead'),
    # Same weights and losses as mmdet's heads, bounded memory when predicting (docs/speed.md):
    # ChunkedRoIHead (cellseg/models/roi_heads/chunked_roi_head.py) extracts and runs RoIs in
    # bounded chunks, and ChunkedMaskHead (cellseg/models/roi_heads/mask_heads/
    # chunked_mask_head.py) pastes and encodes masks as RLEs a chunk at a time (1000 detections
    # of a 2500 px image never exist as 1000 full-size masks).
    # num_classes is left to the data: tools/train.py sizes the heads to the classes of the
    # annotation files, tools/test.py and tools/predict.py to those the checkpoint remembers
    # (cellseg.apis.classes.resolve_classes)
    roi_head=dict(type='ChunkedRoIHead', mask_head=dict(type='ChunkedMaskHead')))

# mmdet's COCO Mask R-CNN R50-FPN (1x schedule, mask AP 34.7), downloaded once into the torch hub
# cache. Every weight whose shape matches is loaded; the class-specific layers (the box head's
# fc_cls and fc_reg, the mask head's conv_logits) and any layer whose shape differs keep their
# initialisation, and mmengine lists them once in the log. `tools/train.py --pretrained`
# chooses other weights (coco, imagenet, a file or URL, none).
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
             'mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth')
