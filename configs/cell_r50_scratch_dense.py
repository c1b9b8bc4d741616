# cell_r50_scratch for dense cells: anchors sized for cells, and enough proposals and detections for
# images of hundreds of cells. Only RPN anchors and train/test proposal and detection settings
# differ from cell_r50_scratch; weights have the same shapes except the RPN's cls/reg convs (9
# anchors per position instead of 3).
_base_ = './cell_r50_scratch.py'

model = dict(
    rpn_head=dict(
        # From `python tools/anchor_stats.py` on CoNSeP's train_all.json (9106 boxes, 207
        # images; `data_prep/hw3_to_coco.py ../shared/data/consep --out-dir /tmp/consep_ann`):
        # sqrt(w*h) p1 4.6, p5 7.7, median 16.5, p95 34.0, p99 44.4, max 66 px; h/w p5 0.43,
        # p95 2.20. mmdet's anchors (scales=[8]: 32..512 px) give only 42% of these boxes an
        # anchor at IoU >= 0.3 (below it the RPN assigner gives a box no positive at all) and
        # 10% one at >= 0.7, IoUs taken against the anchors of the nearest grid point. These,
        # chosen by the tool among up to 9 anchors per position, give 98.8% and 53.4%: sizes
        # 8..256 px in half-octave steps, ratios for elongated (spindle) cells.
        anchor_generator=dict(scales=[2.0, 2.83, 4.0], ratios=[0.667, 1.0, 1.5])),
    train_cfg=dict(
        # Dense proposals in training (the sampler takes the RoI head's share of them), as the
        # recipe was tuned with; prediction budgets its own below.
        rpn_proposal=dict(nms_pre=3000, max_per_img=2000)),
    test_cfg=dict(
        # Budgets by image area (cellseg.models.detection_budget): each value is the floor, the
        # *_per_mpx beside it the budget per megapixel. A 256 px CoNSeP patch (0.066 MP, up to 184
        # cells) gets 1000 candidates per FPN level and 500 proposals, a few per cell; a 512 px
        # tile 4x that. Every proposal costs the box head's RoIAlign and 12544x1024 fc, which
        # are most of a prediction's time at a fixed 2000 (docs/speed.md).
        rpn=dict(nms_pre=1000, nms_pre_per_mpx=15000, max_per_img=500, max_per_img_per_mpx=8000),
        rcnn=dict(
            # A real 397x482 HW3 image holds 161 cells and CoNSeP patches up to 184; mmdet's
            # 100 would drop cells outright. 1000 per image, more for images over 0.2 MP.
            max_per_img=1000,
            max_per_img_per_mpx=5000,
            # COCO's AP at 100 detections counts each image's best 100 per class: no mask is
            # computed for a detection below them, unless it scores at least uncapped_score
            # (the nuclei metrics count every detection >= 0.5; predict lowers it to its own
            # threshold). AP at 1000 detections needs max_per_class=None.
            max_per_class=100,
            uncapped_score=0.5,
            # Low-scored detections only extend the precision-recall curve past the
            # higher-scored ones, so they cannot lower AP; at 0.05 (mmdet's) faint or rare
            # (class1) cells that the model does find are thrown away.
            score_thr=0.01)))
