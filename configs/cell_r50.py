# Mask R-CNN R50-FPN for cell instance segmentation: the original study's recipe (HW3 has four
# classes; the heads take as many as the data has).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/datasets/hw3_cells.py',
    './_base_/schedules/adamw_cosine_20e.py',
    './_base_/default_runtime.py',
]

# No weights can be downloaded here, so the backbone starts from scratch (init_cfg=None) and
# every part of it trains: mmdet's defaults (stage 1 frozen, BatchNorm frozen in eval mode) assume
# ImageNet weights and would leave a random stem and random BN statistics fixed forever. BN stays
# BN: a batch of 4 images of many cells gives each channel plenty of pixels for its statistics.
# With a local ImageNet checkpoint use configs/cell_r50_imagenet.py instead.
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=False, init_cfg=None),
    # Same weights and losses as mmdet's heads, bounded memory when predicting (docs/speed.md):
    # ChunkedRoIHead (cellseg/models/roi_heads/chunked_roi_head.py) extracts and runs RoIs in
    # bounded chunks, and ChunkedMaskHead (cellseg/models/roi_heads/mask_heads/
    # chunked_mask_head.py) pastes and encodes masks as RLEs a chunk at
    # a time (1000 detections of a 2500 px image never exist as 1000 full-size masks).
    # proposals in float32 when the layers run under a CPU bfloat16 autocast (mmcv's CPU nms
    # takes float32 only; cellseg/models/dense_heads/float32_proposal_rpn_head.py)
    rpn_head=dict(type='Float32ProposalRPNHead'),
    # num_classes is left to the data: tools/train.py sizes the heads to the classes of the
    # annotation files, tools/test.py and tools/predict.py to those the checkpoint remembers
    # (cellseg.apis.config_helpers.resolve_classes)
    roi_head=dict(type='ChunkedRoIHead', mask_head=dict(type='ChunkedMaskHead')))

# A whole Mask R-CNN checkpoint (e.g. mmdet's COCO model) as a local path; class-specific layers
# whose shapes differ are skipped with a warning. None: train from scratch.
load_from = None
